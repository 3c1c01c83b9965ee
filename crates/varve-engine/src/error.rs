//! The engine's error type, which wraps each layer's error rather than flattening it.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an engine operation can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The write-ahead log failed.
    #[error("WAL: {0}")]
    Wal(#[from] varve_wal::Error),
    /// The slotted payload store failed.
    #[error("slotted store: {0}")]
    Slotted(#[from] varve_slotted::Error),
    /// The large-payload sidecar failed.
    #[error("sidecar: {0}")]
    Sidecar(#[from] varve_sidecar::Error),
    /// The read-side arena or cache manager failed.
    #[error("arena: {0}")]
    Arena(#[from] varve_arena::Error),
}
