//! What can go wrong, as the user sees it: a kind (which picks the exit code), a message
//! and what to do next. Engine errors are classified by their typed variants, never by
//! their text.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use heed::MdbError;
use varve_engine::Error;

/// The kinds of failure the tool tells apart; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The directory does not exist, or holds no store.
    NoStore,
    /// Another process (or open handle) holds the store.
    Locked,
    /// A file was written by a format version this build does not read.
    Version,
    /// Bytes on disk failed a checksum or a structural check.
    Corrupted,
    /// The store refused the request (wrong expected version, a limit, bad input).
    Refused,
    /// Anything else (I/O errors, a degraded store, ...).
    Other,
}

impl Kind {
    /// The process exit code for this kind. 1 is `check`'s "problems found", 2 is a usage
    /// error (clap's own code).
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::NoStore => 3,
            Kind::Locked => 4,
            Kind::Version => 5,
            Kind::Corrupted => 6,
            Kind::Refused => 7,
            Kind::Other => 8,
        }
    }
}

/// An error to print and exit with.
#[derive(Debug)]
pub struct CliError {
    /// Which kind (the exit code).
    pub kind: Kind,
    /// What happened, with where.
    pub message: String,
    /// What to do next, if there is something to say.
    pub hint: Option<String>,
}

impl CliError {
    /// An error of `kind` with a message and no hint.
    pub fn new(kind: Kind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what to do next.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// The exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }

    /// An engine error met while working on the store in `dir`, with the hint that fits
    /// its kind.
    pub fn engine(e: &Error, dir: &Path) -> CliError {
        let d = describe(e, dir);
        let err = CliError::new(d.kind, chain(e));
        let shown = dir.display();
        match d.kind {
            Kind::Locked => err.hint(format!(
                "another process has {shown} open (an application, or another varve command). \
                 The engine lets one process open a store at a time and varve opens it through \
                 the engine: stop the other process, or pass --wait-lock SECS to wait for it"
            )),
            Kind::Version => err.hint(
                "the store was written by a newer Varve; use a varve tool built from that version",
            ),
            Kind::Corrupted => err.hint(format!(
                "damaged: {} ({}). Run `varve check {shown}` to list every problem it can find; \
                 copy the directory before trying anything else",
                d.location, d.what
            )),
            _ => err,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// An engine error and its sources as one line: "blob sidecar: blob ... is corrupted: ...".
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Some wrappers already print their source; do not repeat it.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// An engine error taken apart: its kind, where (a file and an offset, position, LSN or
/// blob) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The kind.
    pub kind: Kind,
    /// Where, as precisely as the error says.
    pub location: String,
    /// What is wrong.
    pub what: String,
}

/// Takes an engine error apart by its typed variants (those of the layers it wraps too).
pub fn describe(e: &Error, dir: &Path) -> Described {
    let store = || dir.display().to_string();
    let events_mdb = || dir.join("events.mdb").display().to_string();
    let blobs_mdb = || dir.join("blobs").join("blobs.mdb").display().to_string();
    let d = |kind, location: String, what: String| Described {
        kind,
        location,
        what,
    };
    match e {
        Error::Locked(p) => d(Kind::Locked, p.display().to_string(), "locked".into()),
        Error::UnsupportedVersion { found, supported } => d(
            Kind::Version,
            events_mdb(),
            format!("format version {found}, this build reads {supported}"),
        ),
        Error::Corrupted { location, what } => {
            d(Kind::Corrupted, location.clone(), (*what).to_owned())
        }
        Error::Wal(w) => match w {
            varve_wal::Error::Locked(p) => {
                d(Kind::Locked, p.display().to_string(), "locked".into())
            }
            varve_wal::Error::Corrupted {
                segment,
                offset,
                what,
            } => d(
                Kind::Corrupted,
                format!("{} at offset {offset}", segment.display()),
                (*what).to_owned(),
            ),
            varve_wal::Error::BadMagic { segment } => d(
                Kind::Corrupted,
                segment.display().to_string(),
                "not a Varve WAL segment (unknown magic)".into(),
            ),
            varve_wal::Error::UnsupportedVersion {
                segment,
                version,
                supported,
            } => d(
                Kind::Version,
                segment.display().to_string(),
                format!("format version {version}, this build reads up to {supported}"),
            ),
            other => d(
                Kind::Other,
                dir.join("wal").display().to_string(),
                chain(other),
            ),
        },
        Error::Sidecar(s) => match s {
            varve_sidecar::Error::Corrupted { hash, what } => d(
                Kind::Corrupted,
                format!("{} blob {hash}", blobs_mdb()),
                (*what).to_owned(),
            ),
            varve_sidecar::Error::CorruptedChunk { hash, offset, len } => d(
                Kind::Corrupted,
                format!(
                    "{} blob {hash} content bytes {offset}..{}",
                    blobs_mdb(),
                    offset + len
                ),
                "content does not match its digest".into(),
            ),
            varve_sidecar::Error::CorruptedMeta { what } => {
                d(Kind::Corrupted, blobs_mdb(), (*what).to_owned())
            }
            varve_sidecar::Error::MissingBlob(hash) => d(
                Kind::Corrupted,
                format!("{} blob {hash}", blobs_mdb()),
                "referenced blob is missing".into(),
            ),
            varve_sidecar::Error::UnsupportedVersion { found, supported } => d(
                Kind::Version,
                blobs_mdb(),
                format!("format version {found}, this build reads {supported}"),
            ),
            varve_sidecar::Error::Lmdb(h) => lmdb(h, blobs_mdb()),
            other => d(Kind::Other, blobs_mdb(), chain(other)),
        },
        Error::Lmdb(h) => lmdb(h, events_mdb()),
        Error::Arena(varve_arena::Error::Corrupted { file, offset, what }) => d(
            // Reads of the not-yet-checkpointed tail come from the WAL through the arena;
            // its file ids are the WAL segments' first LSNs.
            Kind::Corrupted,
            format!(
                "{} segment {file} at offset {offset}",
                dir.join("wal").display()
            ),
            (*what).to_owned(),
        ),
        Error::WrongExpectedVersion { stream, .. } | Error::DuplicateStream { stream } => {
            d(Kind::Refused, stream.clone(), chain(e))
        }
        Error::StreamNotFound { stream } => d(Kind::Refused, stream.clone(), chain(e)),
        Error::InvalidStreamName { .. }
        | Error::InvalidEventType { .. }
        | Error::MetadataTooLarge { .. }
        | Error::PayloadTooLarge { .. }
        | Error::CallTooLarge { .. }
        | Error::EmptyAppend
        | Error::InvalidOptions { .. } => d(Kind::Refused, store(), chain(e)),
        _ => d(Kind::Other, store(), chain(e)),
    }
}

fn lmdb(h: &heed::Error, file: String) -> Described {
    let (kind, what) = match h {
        heed::Error::Mdb(MdbError::Corrupted | MdbError::PageNotFound) => {
            (Kind::Corrupted, h.to_string())
        }
        heed::Error::Mdb(MdbError::Invalid) => {
            (Kind::Corrupted, "not an LMDB file (bad header)".to_owned())
        }
        heed::Error::Mdb(MdbError::VersionMismatch) => (
            Kind::Version,
            "written by an LMDB version this build does not read".to_owned(),
        ),
        other => (Kind::Other, other.to_string()),
    };
    Described {
        kind,
        location: file,
        what,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error with an optional source; `repeats` prints the source in its own message,
    /// as some wrappers do.
    #[derive(Debug)]
    struct E {
        msg: &'static str,
        source: Option<Box<E>>,
        repeats: bool,
    }

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match (&self.source, self.repeats) {
                (Some(s), true) => write!(f, "{}: {s}", self.msg),
                _ => f.write_str(self.msg),
            }
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as _)
        }
    }

    fn e(msg: &'static str, source: Option<E>, repeats: bool) -> E {
        E {
            msg,
            source: source.map(Box::new),
            repeats,
        }
    }

    #[test]
    fn chain_joins_every_source_once() {
        let inner = || e("disk gone", None, false);
        assert_eq!(
            chain(&e("blob sidecar", Some(inner()), false)),
            "blob sidecar: disk gone"
        );
        // A wrapper that already prints its source: not repeated.
        assert_eq!(
            chain(&e("blob sidecar", Some(inner()), true)),
            "blob sidecar: disk gone"
        );
        let three = e("open", Some(e("wal", Some(inner()), false)), false);
        assert_eq!(chain(&three), "open: wal: disk gone");
    }

    #[test]
    fn a_corrupted_events_mdb_names_the_file_and_is_corrupted() {
        let dir = Path::new("/stores/s1");
        let d = describe(&Error::Lmdb(heed::Error::Mdb(MdbError::Corrupted)), dir);
        assert_eq!(d.kind, Kind::Corrupted);
        assert_eq!(d.location, "/stores/s1/events.mdb");
        let d = describe(&Error::Lmdb(heed::Error::Mdb(MdbError::Invalid)), dir);
        assert_eq!(d.kind, Kind::Corrupted);
        assert_eq!(d.location, "/stores/s1/events.mdb");
        assert!(d.what.contains("not an LMDB file"), "{d:?}");
    }

    #[test]
    fn a_corrupted_tail_read_names_the_wal_segment_and_offset() {
        let d = describe(
            &Error::Arena(varve_arena::Error::Corrupted {
                file: 4096,
                offset: 77,
                what: "checksum mismatch",
            }),
            Path::new("/stores/s1"),
        );
        assert_eq!(d.kind, Kind::Corrupted);
        assert_eq!(d.location, "/stores/s1/wal segment 4096 at offset 77");
        assert_eq!(d.what, "checksum mismatch");
    }
}
