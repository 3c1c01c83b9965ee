//! Progress bars on standard error (drawn only when it is a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting to `total` with a message.
pub fn bar(total: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({eta} left)",
    ) {
        b.set_style(style);
    }
    b.set_message(msg);
    b
}

/// A bar counting bytes to `total`.
pub fn byte_bar(total: u64, msg: &'static str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        b.set_style(style);
    }
    b.set_message(msg);
    b
}

/// A spinner for work whose length is counted in time.
pub fn spinner(msg: String) -> ProgressBar {
    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
        b.set_style(style);
    }
    b.set_message(msg);
    b.enable_steady_tick(std::time::Duration::from_millis(100));
    b
}
