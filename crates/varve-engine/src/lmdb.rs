//! `events.mdb`: the LMDB environment the checkpointer writes and readers read.

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvFlags, EnvOpenOptions, RoTxn, WithoutTls};

use crate::error::{Error, Result};

pub(crate) type Db = Database<'static, Bytes, Bytes>;

/// File name of the environment inside the store directory.
pub(crate) const EVENTS_FILE: &str = "events.mdb";
/// The format version this build writes. Version 2 added consumer cursors and stream
/// deletion (the `consumers` and `stream_meta` databases and their WAL record kinds); a
/// version 1 store is upgraded on open (it holds none of them), and a build that reads only
/// version 1 then refuses it cleanly.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build opens (and upgrades).
const OLDEST_FORMAT_VERSION: u32 = 1;

const FORMAT_KEY: &[u8] = b"format";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The named databases.
pub(crate) struct Dbs {
    /// `format` (u32 LE) and `checkpoint` ([`Checkpoint`]).
    pub(crate) meta: Db,
    /// position (u64 BE) -> event value.
    pub(crate) events: Db,
    /// stream name -> (stream id, next version).
    pub(crate) streams: Db,
    /// (stream id, version) (u64 BE each) -> position (u64 BE).
    pub(crate) stream_index: Db,
    /// blob SHA-256 -> number of checkpointed events that reference it (u64 LE).
    pub(crate) blob_refs: Db,
    /// consumer name -> its committed position (u64 LE).
    pub(crate) consumers: Db,
    /// stream id (u64 BE) -> its deletion state (`codec::StreamMeta`); only streams that
    /// were deleted or truncated have one.
    pub(crate) stream_meta: Db,
}

/// What the last checkpoint applied, written in its own transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// LSN of the last WAL record applied (0: none).
    pub(crate) lsn: u64,
    /// One past the last position applied.
    pub(crate) next_position: u64,
    /// One past the highest stream id applied.
    pub(crate) next_stream_id: u64,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&self.lsn.to_le_bytes());
        v[8..16].copy_from_slice(&self.next_position.to_le_bytes());
        v[16..].copy_from_slice(&self.next_stream_id.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        let a: &[u8; 24] = b.try_into().ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&a[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Some(Checkpoint {
            lsn: word(0),
            next_position: word(8),
            next_stream_id: word(16),
        })
    }

    pub(crate) fn put(&self, dbs: &Dbs, txn: &mut heed::RwTxn<'_>) -> heed::Result<()> {
        dbs.meta.put(txn, CHECKPOINT_KEY, &self.encode())
    }
}

pub(crate) fn location(dir: &Path) -> String {
    dir.join(EVENTS_FILE).display().to_string()
}

/// LMDB reader slots of `events.mdb` (read transactions open at once).
pub(crate) const MAX_READERS: u32 = 1024;

/// Opens (creating) `dir/events.mdb`, its databases, and checks the format version.
pub(crate) fn open(dir: &Path, map_size: u64) -> Result<(heed::Env<WithoutTls>, Dbs, Checkpoint)> {
    let path = dir.join(EVENTS_FILE);
    let page = rustix::param::page_size() as u64;
    let map_size = usize::try_from(map_size.next_multiple_of(page)).unwrap_or(usize::MAX / 2);
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    // Reader slots: every open read transaction takes one, and point reads keep one per
    // thread slot between calls (see `txns`: up to 64), so the default of 126 could run
    // out under many reading threads. One slot is 64 bytes of the lock file.
    opts.map_size(map_size).max_dbs(8).max_readers(MAX_READERS);
    // SAFETY: NO_SUB_DIR only names the data file `events.mdb` (lock file beside it); it is
    // not one of the flags heed marks unsafe for durability (NO_SYNC, NO_META_SYNC, NO_LOCK,
    // WRITE_MAP), so every commit stays durable and locked.
    unsafe { opts.flags(EnvFlags::NO_SUB_DIR) };
    // SAFETY: heed requires that the mapped file is not modified except through LMDB while
    // mapped. The engine writes it only through LMDB transactions; other programs must not
    // write it (documented on `Varve::open`), and the store's directory lock keeps a second
    // engine out.
    let env = unsafe { opts.open(&path) }?;
    let wtxn = env.write_txn()?;
    let opened = env.create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
        let dbs = (
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("events"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("streams"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("stream_index"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("blob_refs"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("consumers"))?,
            dbo.create_database::<Bytes, Bytes>(wtxn, Some("stream_meta"))?,
        );
        Ok(CommitOrAbort::<_, ()>::Commit(dbs))
    })?;
    let Some((meta, events, streams, stream_index, blob_refs, consumers, stream_meta)) =
        opened.commit()
    else {
        return Err(Error::corrupted(
            location(dir),
            "could not create the named databases",
        ));
    };
    let dbs = Dbs {
        meta,
        events,
        streams,
        stream_index,
        blob_refs,
        consumers,
        stream_meta,
    };
    let mut wtxn = env.write_txn()?;
    match dbs.meta.get(&wtxn, FORMAT_KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v)
                .map(u32::from_le_bytes)
                .map_err(|_| Error::corrupted(location(dir), "format record is not 4 bytes"))?;
            if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
                return Err(Error::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found < FORMAT_VERSION {
                dbs.meta
                    .put(&mut wtxn, FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?;
            }
        }
        None => {
            if !dbs.events.is_empty(&wtxn)? || !dbs.streams.is_empty(&wtxn)? {
                return Err(Error::corrupted(
                    location(dir),
                    "format record missing in a store that holds events",
                ));
            }
            dbs.meta
                .put(&mut wtxn, FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())?;
        }
    }
    let checkpoint = match dbs.meta.get(&wtxn, CHECKPOINT_KEY)? {
        Some(v) => Checkpoint::decode(v)
            .ok_or_else(|| Error::corrupted(location(dir), "checkpoint record is not 24 bytes"))?,
        None => Checkpoint::default(),
    };
    wtxn.commit()?;
    Ok((env, dbs, checkpoint))
}

/// The blob reference count stored for `hash` (0 if none).
pub(crate) fn blob_refs(dbs: &Dbs, txn: &RoTxn<'_>, hash: &[u8; 32]) -> Result<u64> {
    match dbs.blob_refs.get(txn, hash)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::corrupted("events.mdb blob_refs", "count is not 8 bytes")),
    }
}
