//! Slotted-store benchmarks (placeholder while the crate is being built).
fn main() {}
