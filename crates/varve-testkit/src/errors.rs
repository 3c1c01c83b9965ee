//! Checks on error types.

use std::error::Error;

/// Asserts that `e` says `message` and keeps its cause as its source, whose message is
/// `source`: a report that walks the chain then prints the cause once (a wrapper that
/// also prints `{0}` in its own message would print it twice).
///
/// # Panics
/// If either message differs.
pub fn assert_wraps(e: &dyn Error, message: &str, source: &str) {
    assert_eq!(e.to_string(), message);
    assert_eq!(
        e.source().map(ToString::to_string).as_deref(),
        Some(source),
        "the cause is the source"
    );
    assert!(
        !message.contains(source),
        "the cause is repeated in the message"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error, bool);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if self.1 {
                write!(f, "wrapped: {}", self.0)
            } else {
                write!(f, "wrapped")
            }
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_printed_once_passes_and_a_repeated_one_fails() {
        assert_wraps(&Wrapper(std::io::Error::other("x"), false), "wrapped", "x");
        let repeated = std::panic::catch_unwind(|| {
            assert_wraps(
                &Wrapper(std::io::Error::other("x"), true),
                "wrapped: x",
                "x",
            );
        });
        assert!(repeated.is_err());
    }
}
