//! The read path: a blob's overflow run read from the file in page-aligned chunks, with
//! cache advice around each chunk (see the crate docs for the policy and its measurements).

use std::fs::{File, OpenOptions};
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use rustix::fs::{Advice, fadvise};

use crate::digest::Incremental;
use crate::error::{Error, Result};
use crate::format::{
    BLOB_HEADER_LEN, BLOB_HEADER_V1_LEN, BlobHeader, LMDB_PAGE_HEADER, check_overflow_header,
    table_digest,
};
use crate::options::CachePolicy;
use crate::payload::BlobHash;

/// A blob record located in the file: the overflow run's first page (LMDB's page header;
/// the record follows it) and the record's length (blob header plus content).
pub(crate) struct Located {
    pub(crate) run_start: u64,
    pub(crate) record_len: u64,
}

/// Largest page-cache folio on x86-64 / arm64 with 4 KiB pages (PMD size).
pub(crate) const FOLIO_SPAN: u64 = 2 << 20;

/// The read-ahead window: how many bytes of a run beyond the piece being read
/// `POSIX_FADV_WILLNEED` keeps requested (refilled in steps of at least half of it, so the
/// device gets large requests).
pub(crate) const READ_AHEAD: u64 = 2 << 20;

/// Offset of a version-1 blob's content from the start of its overflow run.
const CONTENT_AT_V1: u64 = (LMDB_PAGE_HEADER + BLOB_HEADER_V1_LEN) as u64;

/// A heap buffer whose usable part starts at an `align` boundary (for `O_DIRECT`).
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> AlignedBuf {
        // `vec![0; n]` is calloc: large buffers come as untouched zero pages.
        let raw = vec![0u8; len + align];
        let off = raw.as_ptr().align_offset(align);
        AlignedBuf { raw, off, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }

    fn as_ref(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
}

/// Length of the buffer that reads a version-2 record: chunk 0 is read together with the
/// headers and the digest table (`first_span` bytes from the run's start, page aligned);
/// every later chunk spans at most `chunk` bytes (the digest chunk, or the whole content if
/// shorter: a header may declare chunks larger than its content) plus the two pages its
/// ends share with its neighbours.
pub(crate) fn read_buffer_len(first_span: u64, chunk: u64, page: u64) -> u64 {
    first_span.max(chunk + 2 * page)
}

/// The file range a read buffer holds (its first byte is the buffer's first byte).
struct Window {
    lo: u64,
    hi: u64,
}

/// One read of an overflow run: its bounds, how far ahead `POSIX_FADV_WILLNEED` has asked
/// for it, and whether the pages read stay in the page cache (a hot blob) or are dropped
/// behind the read.
pub(crate) struct RunRead {
    start: u64,
    end: u64,
    requested: u64,
    keep: bool,
}

impl RunRead {
    /// A read of the run `start..end`, nothing requested yet.
    fn new(start: u64, end: u64, keep: bool) -> RunRead {
        RunRead {
            start,
            end,
            requested: start,
            keep,
        }
    }
}

/// The range of `POSIX_FADV_WILLNEED` that keeps the read-ahead window of `run` filled
/// once the file up to `pos` has been read (or is being read): `None` while more than
/// half of the window is still requested ahead of `pos` (so requests stay large), else
/// from what was requested so far to `pos + READ_AHEAD` (at most the run's end).
fn read_ahead_range(run: &RunRead, pos: u64) -> Option<(u64, u64)> {
    let from = run.requested.max(pos);
    let to = pos.saturating_add(READ_AHEAD).min(run.end);
    (to > from && (to - from >= READ_AHEAD / 2 || to == run.end)).then_some((from, to))
}

/// Hashes the content of one digest chunk (file range `from..to`) as it arrives in a read
/// buffer (the chunk's bytes stay in place while it arrives), so the chunk is checked as
/// soon as its last piece lands.
struct ChunkHasher {
    hasher: Incremental,
    from: u64,
    /// File offset up to which the chunk has been seen.
    done: u64,
    to: u64,
}

impl ChunkHasher {
    fn new() -> ChunkHasher {
        ChunkHasher {
            hasher: Incremental::new(),
            from: 0,
            done: 0,
            to: 0,
        }
    }

    /// Starts the chunk `from..to`.
    fn start(&mut self, from: u64, to: u64) {
        self.hasher = Incremental::new();
        self.from = from;
        self.done = from;
        self.to = to;
    }

    /// The part of the chunk that the buffer holding `window` has.
    fn held<'b>(&self, buf: &'b [u8], window: &Window) -> Option<&'b [u8]> {
        let upto = self.to.min(window.hi);
        let lo = usize::try_from(self.from.checked_sub(window.lo)?).ok()?;
        let hi = usize::try_from(upto.checked_sub(window.lo)?).ok()?;
        buf.get(lo..hi.max(lo))
    }

    /// Hashes what the buffer holding `window` has of the chunk beyond what was hashed.
    fn catch_up(&mut self, buf: &[u8], window: &Window) -> Option<()> {
        // What is held only grows while a chunk arrives; hashing a prefix seen before
        // adds nothing.
        let held = self.held(buf, window)?;
        self.hasher.advance(held);
        self.done = self.done.max(self.to.min(window.hi));
        Some(())
    }

    /// The chunk's xxh3-128, once all of it is in the buffer holding `window`.
    fn digest(&mut self, buf: &[u8], window: &Window) -> Option<u128> {
        if self.done != self.to {
            return None;
        }
        let whole = self.held(buf, window)?;
        Some(self.hasher.finish(whole))
    }
}

/// A whole blob read into a private buffer (the one-pass verified read).
pub(crate) struct WholeBlob {
    buf: AlignedBuf,
    at: usize,
    len: usize,
}

impl WholeBlob {
    /// The blob's content.
    pub(crate) fn content(&self) -> &[u8] {
        &self.buf.as_ref()[self.at..self.at + self.len]
    }
}

/// A helper thread that reads file ranges into buffers it is handed (the `O_DIRECT`
/// path's read-ahead): one request in flight while the caller works on the last answer.
struct Pipe {
    requests: mpsc::SyncSender<Request>,
    answers: mpsc::Receiver<Result<AlignedBuf>>,
}

/// Read `lo..hi` of the file into `buf` at `lo - from` (the buffer's first byte stands for
/// file offset `from`).
struct Request {
    from: u64,
    lo: u64,
    hi: u64,
    buf: AlignedBuf,
}

impl Pipe {
    /// Starts the helper in `scope`; it stops when the `Pipe` is dropped.
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        reader: &'scope FileReader,
        hash: &'scope BlobHash,
    ) -> Pipe {
        let (requests, todo) = mpsc::sync_channel::<Request>(1);
        let (done, answers) = mpsc::sync_channel(1);
        scope.spawn(move || {
            for mut r in todo {
                let at = usize::try_from(r.lo - r.from).unwrap_or(usize::MAX);
                let len = usize::try_from(r.hi - r.lo).unwrap_or(usize::MAX);
                let out = match r.buf.as_mut().get_mut(at..).and_then(|b| b.get_mut(..len)) {
                    Some(dst) => reader.read_chunk(hash, dst, r.lo).map(|()| r.buf),
                    None => Err(Error::Corrupted {
                        hash: *hash,
                        what: "blob chunk does not fit the read buffer",
                    }),
                };
                if done.send(out).is_err() {
                    break; // the reader gave up
                }
            }
        });
        Pipe { requests, answers }
    }

    /// Asks for the range `(from, lo, hi)` (see [`Request`]) into `buf`.
    fn request(&mut self, (from, lo, hi): (u64, u64, u64), buf: AlignedBuf) -> Result<()> {
        self.requests
            .send(Request { from, lo, hi, buf })
            .map_err(|_| helper_gone())
    }

    /// The buffer of the last request, filled.
    fn receive(&mut self) -> Result<AlignedBuf> {
        self.answers.recv().map_err(|_| helper_gone())?
    }
}

fn helper_gone() -> Error {
    Error::Io(std::io::Error::other(
        "the read-ahead thread of an O_DIRECT read stopped",
    ))
}

/// Read-only descriptors on `blobs.mdb` for the read path.
pub(crate) struct FileReader {
    /// Buffered descriptor with `POSIX_FADV_RANDOM`: the kernel reads exactly the ranges
    /// asked for (no read-ahead beyond them), in large requests.
    buffered: File,
    /// `O_DIRECT` descriptor, when the policy asks for it and the filesystem allows it.
    direct: Option<File>,
    page_size: usize,
    /// Bytes read from the file so far (for tests: a single pass reads each byte once).
    pub(crate) bytes_read: AtomicU64,
}

impl FileReader {
    /// Opens the descriptors on the data file at `path`.
    pub(crate) fn open(path: &Path, policy: CachePolicy, page_size: usize) -> Result<FileReader> {
        let buffered = File::open(path)?;
        fadvise(&buffered, 0, None, Advice::Random).map_err(std::io::Error::from)?;
        let direct = if policy == CachePolicy::Direct {
            open_direct(path, page_size)
        } else {
            None
        };
        Ok(FileReader {
            buffered,
            direct,
            page_size,
            bytes_read: AtomicU64::new(0),
        })
    }

    /// True when reads bypass the page cache (`O_DIRECT` is in use).
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// File range of the overflow run that holds the record at `loc`: from the run's first
    /// page to the end of the page holding the record's last byte.
    fn run_bounds(&self, hash: &BlobHash, loc: &Located) -> Result<(u64, u64)> {
        let start = loc.run_start;
        let end = (LMDB_PAGE_HEADER as u64 + loc.record_len)
            .checked_next_multiple_of(self.page_size as u64)
            .and_then(|e| start.checked_add(e))
            .ok_or(Error::Corrupted {
                hash: *hash,
                what: "blob record extends past any file",
            })?;
        Ok((start, end))
    }

    /// The run of a version-1 record at `loc`, where its content starts and its length.
    fn bounds_v1(&self, hash: &BlobHash, loc: &Located) -> Result<(u64, u64, u64, u64)> {
        let len = loc
            .record_len
            .checked_sub(BLOB_HEADER_V1_LEN as u64)
            .ok_or(Error::Corrupted {
                hash: *hash,
                what: "blob record shorter than its header",
            })?;
        let (start, end) = self.run_bounds(hash, loc)?;
        Ok((start, end, start + CONTENT_AT_V1, len))
    }

    /// Starts the read of the run at `loc` and reads its first page: read-ahead of the first
    /// piece of `io` bytes on its own (a small request that completes first, so the read
    /// starts while the rest of the window is still on its way), then of the read-ahead
    /// window; checks LMDB's overflow page header and the blob's fixed header. Returns the
    /// header, the page (which [`FileReader::stream_v2`] reuses) and the read's state.
    /// With `keep`, nothing the read brings into the page cache is dropped.
    pub(crate) fn open_record(
        &self,
        hash: &BlobHash,
        loc: &Located,
        io: usize,
        keep: bool,
    ) -> Result<(BlobHeader, AlignedBuf, RunRead)> {
        let (start, end) = self.run_bounds(hash, loc)?;
        let mut run = RunRead::new(start, end, keep);
        if !self.is_direct() {
            let first = start.saturating_add(io as u64).min(end);
            self.advise(start, first - start, Advice::WillNeed)?;
            run.requested = first;
            self.read_ahead(&mut run, first)?;
        }
        let mut first = AlignedBuf::new(self.page_size, self.page_size);
        self.read_chunk(hash, first.as_mut(), start)?;
        let ps = self.page_size as u64;
        let head = check_overflow_header(first.as_ref(), start / ps, ps, loc.record_len)
            .and_then(|()| {
                BlobHeader::decode_parts(
                    hash,
                    first.as_ref().get(LMDB_PAGE_HEADER..).unwrap_or_default(),
                    loc.record_len,
                )
            })
            .map_err(|what| Error::Corrupted { hash: *hash, what })?;
        Ok((head, first, run))
    }

    /// Streams the content of the version-2 record at `loc` (whose header `head`, first
    /// page `first` and read state `run` came from [`FileReader::open_record`]) to `f`, one
    /// digest chunk at a time, in a single pass over the file. Each chunk is read into a
    /// private buffer of about one chunk, in pieces of at most `io` bytes (with read-ahead
    /// and drop-behind as in [`FileReader::stream_v1`]); with `verify` each piece is hashed
    /// as it lands and the chunk is checked against its digest before any byte of it goes
    /// to `f`. The header's check over the digest table is verified before the first chunk,
    /// with or without `verify`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stream_v2(
        &self,
        hash: &BlobHash,
        head: &BlobHeader,
        first: &AlignedBuf,
        mut run: RunRead,
        io: usize,
        verify: bool,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let bad = |what| Error::Corrupted { hash: *hash, what };
        let (start, end) = (run.start, run.end);
        let ps = self.page_size as u64;
        // The header was checked against the record's length: all of this lies in the run.
        let content = start + LMDB_PAGE_HEADER as u64 + head.content_at;
        let content_end = content + head.len;
        let ceil = |x: u64| x.next_multiple_of(ps).min(end);
        let first_hi = ceil(content + head.chunk.min(head.len));
        let cap = read_buffer_len(first_hi - start, head.chunk.min(head.len), ps)
            .max(first.as_ref().len() as u64);
        let cap =
            usize::try_from(cap).map_err(|_| bad("blob record larger than the address space"))?;
        let mut buf = AlignedBuf::new(cap, self.page_size);
        let held = first.as_ref().len().min(cap);
        buf.as_mut()[..held].copy_from_slice(&first.as_ref()[..held]);
        let mut window = Window {
            lo: start,
            hi: start + held as u64,
        };
        let mut hasher = ChunkHasher::new();
        let track = |hasher: &mut ChunkHasher, b: &[u8], w: &Window| -> Result<()> {
            if verify {
                hasher
                    .catch_up(b, w)
                    .ok_or(bad("blob chunk outside the read buffer"))?;
            }
            Ok(())
        };
        // With O_DIRECT nothing is read ahead by the kernel: a helper thread reads the
        // next chunk while this one is checked and handed out. Each read starts at the
        // page after the last one read (the page two chunks share is copied over; a chunk
        // inside that page reads nothing).
        let piped = self.is_direct() && head.chunks() >= 2;
        std::thread::scope(|scope| -> Result<()> {
            let mut pipe = piped.then(|| Pipe::start(scope, self, hash));
            let spare = piped.then(|| AlignedBuf::new(cap, self.page_size));
            // The file range chunk `i` (> 0) needs: from the page holding its first byte;
            // read from `lo` (the page after what the chunk before it needed) to `hi`.
            let span = |i: u64| {
                let a = content + i * head.chunk;
                let b = (a + head.chunk).min(content_end);
                (a / ps * ps, ceil(a), ceil(b))
            };
            if let (Some(p), Some(b)) = (&mut pipe, spare) {
                p.request(span(1), b)?;
            }
            hasher.start(content, (content + head.chunk).min(content_end));
            self.fill(
                hash,
                &mut buf,
                &mut window,
                start,
                first_hi,
                &mut run,
                io as u64,
                &mut |b, w| track(&mut hasher, b, w),
            )?;
            let at = |x: u64| (x - start) as usize;
            let table = {
                let b = buf.as_ref();
                let fixed = b
                    .get(LMDB_PAGE_HEADER..)
                    .ok_or(bad("blob header truncated"))?;
                let table = b
                    .get(at(start + (LMDB_PAGE_HEADER + BLOB_HEADER_LEN) as u64)..at(content))
                    .ok_or(bad("blob digest table truncated"))?;
                head.check_table(hash, fixed, table).map_err(bad)?;
                table.to_vec()
            };
            for i in 0..head.chunks() {
                let a = content + i * head.chunk;
                let b = (a + head.chunk).min(content_end);
                if i > 0 {
                    hasher.start(a, b);
                    match &mut pipe {
                        None => self.fill(
                            hash,
                            &mut buf,
                            &mut window,
                            a / ps * ps,
                            ceil(b),
                            &mut run,
                            io as u64,
                            &mut |bb, w| track(&mut hasher, bb, w),
                        )?,
                        Some(p) => {
                            let (from, lo, hi) = span(i);
                            let mut next = p.receive()?;
                            // The page this chunk shares with the one before it.
                            let shared = buf
                                .as_ref()
                                .get(
                                    usize::try_from(from.saturating_sub(window.lo))
                                        .unwrap_or(usize::MAX)
                                        ..usize::try_from(lo.saturating_sub(window.lo))
                                            .unwrap_or(usize::MAX),
                                )
                                .ok_or(bad("blob chunk outside the read buffer"))?;
                            next.as_mut()
                                .get_mut(..shared.len())
                                .ok_or(bad("blob chunk outside the read buffer"))?
                                .copy_from_slice(shared);
                            let done = std::mem::replace(&mut buf, next);
                            window = Window { lo: from, hi };
                            if i + 1 < head.chunks() {
                                p.request(span(i + 1), done)?;
                            }
                        }
                    }
                }
                // What the fill did not see (a chunk already held whole, or read by the
                // helper).
                track(&mut hasher, buf.as_ref(), &window)?;
                if verify
                    && hasher
                        .digest(buf.as_ref(), &window)
                        .and_then(|d| table_digest(&table, i).map(|t| t == d))
                        != Some(true)
                {
                    return Err(Error::CorruptedChunk {
                        hash: *hash,
                        offset: i * head.chunk,
                        len: b - a,
                    });
                }
                let bytes = buf
                    .as_ref()
                    .get((a - window.lo) as usize..(b - window.lo) as usize)
                    .ok_or(bad("blob chunk outside the read buffer"))?;
                f(bytes)?;
            }
            Ok(())
        })?;
        self.drop_run(&run)
    }

    /// Drops the run from the page cache at the end of a read, with the large folios that
    /// stick out of it (shared with its neighbours); nothing for a kept read.
    fn drop_run(&self, run: &RunRead) -> Result<()> {
        if run.keep {
            return Ok(());
        }
        self.drop_range_widened(run.start, run.end - run.start)
    }

    /// Makes `buf` hold the file range `lo..hi` (page aligned, `lo >= window.lo`), given
    /// that it holds `window`: bytes already held move to the front, the rest is read in
    /// pieces of at most `io` bytes, each after topping up the read-ahead window of `run`
    /// and dropped from the page cache once it is in the buffer (unless `run` keeps its
    /// pages). `progress` sees the buffer and what it holds after the move and after each
    /// piece.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        hash: &BlobHash,
        buf: &mut AlignedBuf,
        window: &mut Window,
        lo: u64,
        hi: u64,
        run: &mut RunRead,
        io: u64,
        progress: &mut dyn FnMut(&[u8], &Window) -> Result<()>,
    ) -> Result<()> {
        if hi <= window.hi {
            return Ok(()); // already held (lo >= window.lo)
        }
        let b = buf.as_mut();
        if lo < window.lo || hi - lo > b.len() as u64 {
            return Err(Error::Corrupted {
                hash: *hash,
                what: "blob chunk does not fit the read buffer",
            });
        }
        let from = if lo < window.hi {
            b.copy_within(
                (lo - window.lo) as usize..(window.hi - window.lo) as usize,
                0,
            );
            window.hi
        } else {
            lo
        };
        *window = Window { lo, hi: from };
        progress(b, window)?;
        let step = usize::try_from(io).unwrap_or(usize::MAX).max(1);
        for pos in (from..hi).step_by(step) {
            let n = io.min(hi - pos);
            self.read_ahead(run, pos + n)?;
            let dst = b
                .get_mut((pos - lo) as usize..)
                .and_then(|d| d.get_mut(..n as usize))
                .ok_or(Error::Corrupted {
                    hash: *hash,
                    what: "blob chunk does not fit the read buffer",
                })?;
            self.read_chunk(hash, dst, pos)?;
            window.hi = pos + n;
            self.drop_behind(run, pos, n)?;
            progress(b, window)?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `pos` (page aligned).
    fn read_chunk(&self, hash: &BlobHash, buf: &mut [u8], pos: u64) -> Result<()> {
        let file = self.direct.as_ref().unwrap_or(&self.buffered);
        self.bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        file.read_exact_at(buf, pos).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Corrupted {
                    hash: *hash,
                    what: "blob record extends past the end of the file",
                }
            } else {
                Error::Io(e)
            }
        })
    }

    /// After the piece `pos..pos + n` of `run` is in our buffer: drops it from the page
    /// cache, together with the [`FOLIO_SPAN`] of the run before it, so that a large folio
    /// straddling a piece boundary (left by an earlier buffered read or write) goes too.
    /// Nothing for a kept read.
    fn drop_behind(&self, run: &RunRead, pos: u64, n: u64) -> Result<()> {
        if run.keep {
            return Ok(());
        }
        let from = pos.saturating_sub(FOLIO_SPAN).max(run.start);
        self.advise(from, pos + n - from, Advice::DontNeed)
    }

    /// Drops `len` bytes of the file at `pos` from the page cache, widened to whole
    /// [`FOLIO_SPAN`] units. `POSIX_FADV_DONTNEED` skips a large folio that sticks out of
    /// the range, and buffered writes (LMDB's) create folios of up to 2 MiB that straddle
    /// the boundaries of overflow runs. Widening also drops unmapped neighbours (other
    /// blobs, cold B-tree pages); pages that this process has mapped, such as the B-tree
    /// pages LMDB reads through its map, are never dropped by `POSIX_FADV_DONTNEED`.
    pub(crate) fn drop_range_widened(&self, pos: u64, len: u64) -> Result<()> {
        let start = pos / FOLIO_SPAN * FOLIO_SPAN;
        let end = pos.saturating_add(len).next_multiple_of(FOLIO_SPAN);
        self.advise(start, end - start, Advice::DontNeed)
    }

    /// Drops exactly `len` bytes at `pos` (whole pages) from the page cache: a hot blob
    /// leaving the hot set, whose neighbours may be hot themselves.
    pub(crate) fn drop_range(&self, pos: u64, len: u64) -> Result<()> {
        self.advise(pos, len, Advice::DontNeed)
    }

    /// Keeps the read-ahead window of `run` filled for a read that has reached `pos` (see
    /// [`read_ahead_range`]); nothing with `O_DIRECT`.
    fn read_ahead(&self, run: &mut RunRead, pos: u64) -> Result<()> {
        if self.is_direct() {
            return Ok(());
        }
        if let Some((from, to)) = read_ahead_range(run, pos) {
            self.advise(from, to - from, Advice::WillNeed)?;
            run.requested = to;
        }
        Ok(())
    }

    fn advise(&self, pos: u64, len: u64, advice: Advice) -> Result<()> {
        if let Some(len) = NonZeroU64::new(len) {
            fadvise(&self.buffered, pos, Some(len), advice).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// Streams the content of the version-1 blob at `loc` to `f` in pieces of at most
    /// `chunk` bytes (a page multiple), keeping the read-ahead window filled and dropping
    /// each piece from the page cache as soon as it is in the buffer (unless `keep`). The
    /// caller has checked the headers with [`FileReader::open_record`] (in the same read
    /// transaction).
    pub(crate) fn stream_v1(
        &self,
        hash: &BlobHash,
        loc: &Located,
        chunk: usize,
        keep: bool,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (start, end, content, len) = self.bounds_v1(hash, loc)?;
        let mut run = RunRead::new(start, end, keep);
        let chunk = chunk as u64;
        let cap = chunk.min(end - start) as usize;
        let mut buf = AlignedBuf::new(cap, self.page_size);
        let mut pos = start;
        while pos < end {
            let n = chunk.min(end - pos);
            self.read_ahead(&mut run, pos + n)?;
            let b = &mut buf.as_mut()[..n as usize];
            self.read_chunk(hash, b, pos)?;
            self.drop_behind(&run, pos, n)?;
            // Every piece overlaps the content (it starts in the first page and ends in
            // the last one).
            let lo = (content.max(pos) - pos) as usize;
            let hi = ((content + len).min(pos + n) - pos) as usize;
            f(b.get(lo..hi).unwrap_or_default())?;
            pos += n;
        }
        // Large folios that stick out of the run (shared with its neighbours).
        self.drop_run(&run)
    }

    /// Reads the whole blob at `loc` into one private buffer, piece by piece with the same
    /// advice as [`FileReader::stream_v1`], showing each piece's content to `on_content` as
    /// it lands (to hash it). The caller has checked the headers with
    /// [`FileReader::open_record`].
    pub(crate) fn read_whole_v1(
        &self,
        hash: &BlobHash,
        loc: &Located,
        chunk: usize,
        keep: bool,
        mut on_content: impl FnMut(&[u8]),
    ) -> Result<WholeBlob> {
        let (start, end, content, len) = self.bounds_v1(hash, loc)?;
        let mut run = RunRead::new(start, end, keep);
        let total = usize::try_from(end - start).map_err(|_| Error::Corrupted {
            hash: *hash,
            what: "blob record larger than the address space",
        })?;
        let mut buf = AlignedBuf::new(total, self.page_size);
        for at in (0..total).step_by(chunk.max(1)) {
            let n = chunk.min(total - at);
            let pos = start + at as u64;
            self.read_ahead(&mut run, pos + n as u64)?;
            self.read_chunk(hash, &mut buf.as_mut()[at..at + n], pos)?;
            self.drop_behind(&run, pos, n as u64)?;
            // Hand the content part of the piece on while it is hot in the CPU cache.
            let lo = (content.max(pos) - pos) as usize;
            let hi = ((content + len).min(pos + n as u64) - pos) as usize;
            on_content(buf.as_ref().get(at + lo..at + hi).unwrap_or_default());
        }
        self.drop_run(&run)?;
        Ok(WholeBlob {
            buf,
            at: (content - start) as usize,
            len: len as usize,
        })
    }
}

/// Opens `path` with `O_DIRECT` and checks that an aligned read works; `None` if not.
fn open_direct(path: &Path, page_size: usize) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
        .ok()?;
    let mut probe = AlignedBuf::new(page_size, page_size);
    file.read_exact_at(probe.as_mut(), 0).ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_the_end_of_the_file_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 8192]).unwrap();
        let hash = BlobHash([1; 32]);
        for policy in [CachePolicy::DropBehind, CachePolicy::Direct] {
            let r = FileReader::open(&path, policy, 4096).unwrap();
            let mut buf = AlignedBuf::new(4096, 4096);
            r.read_chunk(&hash, buf.as_mut(), 4096).unwrap();
            assert_eq!(buf.as_ref(), &[1u8; 4096][..]);
            match r.read_chunk(&hash, buf.as_mut(), 8192) {
                Err(Error::Corrupted { hash: h, .. }) => assert_eq!(h, hash),
                other => panic!("{policy:?}: {other:?}"),
            }
        }
        // Other failures stay I/O errors: reading from a directory.
        let r = FileReader {
            buffered: File::open(dir.path()).unwrap(),
            direct: None,
            page_size: 4096,
            bytes_read: AtomicU64::new(0),
        };
        let mut buf = AlignedBuf::new(4096, 4096);
        assert!(matches!(
            r.read_chunk(&hash, buf.as_mut(), 0),
            Err(Error::Io(_))
        ));
    }

    #[test]
    fn read_buffer_fits_every_chunk() {
        // 1 MiB chunks, 4 KiB pages: chunk 0 with a one-page prefix, later chunks one page
        // on each side.
        assert_eq!(
            read_buffer_len((1 << 20) + 4096, 1 << 20, 4096),
            (1 << 20) + 8192
        );
        // A digest table longer than the slack: chunk 0's span decides.
        assert_eq!(read_buffer_len(5 << 20, 1 << 20, 4096), 5 << 20);
        // Pages larger than chunks (64 KiB pages, 4 KiB chunks).
        assert_eq!(read_buffer_len(65_536, 4096, 65_536), 4096 + 131_072);
    }

    /// `fill` refuses a range that does not fit the buffer or starts before what it holds
    /// (an error, never a panic), and accepts one that fits exactly.
    #[test]
    fn fill_checks_the_range_against_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let hash = BlobHash([2; 32]);
        let r = FileReader::open(&path, CachePolicy::DropBehind, 4096).unwrap();
        let mut buf = AlignedBuf::new(2 * 4096, 4096);
        let mut w = Window { lo: 4096, hi: 4096 };
        let mut run = RunRead::new(0, 5 * 4096, false);
        let mut fill = |buf: &mut AlignedBuf, w: &mut Window, lo, hi| {
            r.fill(&hash, buf, w, lo, hi, &mut run, 4096, &mut |_, _| Ok(()))
        };
        assert!(matches!(
            fill(&mut buf, &mut w, 4096, 4 * 4096),
            Err(Error::Corrupted { .. })
        ));
        assert!(matches!(
            fill(&mut buf, &mut w, 0, 4096 * 2),
            Err(Error::Corrupted { .. })
        ));
        fill(&mut buf, &mut w, 4096, 3 * 4096).unwrap();
        assert_eq!(buf.as_ref(), &data[4096..3 * 4096]);
        // The next range shares a page with this one: it is carried, not read again.
        let before = r.bytes_read.load(Ordering::Relaxed);
        fill(&mut buf, &mut w, 2 * 4096, 4 * 4096).unwrap();
        assert_eq!(buf.as_ref(), &data[2 * 4096..4 * 4096]);
        assert_eq!(r.bytes_read.load(Ordering::Relaxed) - before, 4096);
        assert_eq!((w.lo, w.hi), (2 * 4096, 4 * 4096));
    }

    /// The window is topped up only when at least half of it is missing (large requests),
    /// or to finish the run; never past the run, never behind what was requested.
    #[test]
    fn read_ahead_keeps_the_window_in_large_steps() {
        const MIB: u64 = 1 << 20;
        let mut run = RunRead::new(0, 10 * MIB, false);
        // Nothing requested yet: the whole window.
        assert_eq!(read_ahead_range(&run, 0), Some((0, 2 * MIB)));
        run.requested = 2 * MIB;
        // Half a piece read: less than half the window is missing.
        assert_eq!(read_ahead_range(&run, MIB / 4), None);
        // Exactly half of it missing: topped up to pos + window.
        assert_eq!(read_ahead_range(&run, MIB), Some((2 * MIB, 3 * MIB)));
        // A position past what was requested starts there.
        assert_eq!(read_ahead_range(&run, 5 * MIB), Some((5 * MIB, 7 * MIB)));
        // Near the end: a short remainder is still asked for, up to the end only.
        run.requested = 9 * MIB + MIB / 2;
        assert_eq!(
            read_ahead_range(&run, 9 * MIB),
            Some((9 * MIB + MIB / 2, 10 * MIB))
        );
        run.requested = 10 * MIB;
        assert_eq!(read_ahead_range(&run, 9 * MIB), None);
        assert_eq!(read_ahead_range(&run, 10 * MIB), None);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [1, 4096, 10_000] {
            let mut b = AlignedBuf::new(len, 4096);
            assert_eq!(b.as_mut().as_ptr() as usize % 4096, 0);
            assert_eq!(b.as_ref().len(), len);
        }
    }
}
