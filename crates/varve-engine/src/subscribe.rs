//! Subscriptions: follow the global log or one stream, first catching up on what is
//! stored, then live, in one pull loop.
//!
//! A subscription holds no queue inside the store. It pulls the events in `[next, visible
//! end)` in batches through the same read paths as [`Varve::scan_all`] (LMDB read
//! transactions for checkpointed events, the WAL tail through the arena cache for the
//! rest), and when it has seen everything it sleeps until the store publishes more. A
//! subscriber that stops pulling only falls behind: the store keeps nothing for it, and the
//! subscription itself holds at most one batch of events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Varve, Waited, owned};
use crate::error::{Error, Result};
use crate::types::{Direction, EventView, RecordedEvent};

/// The default number of events a subscription reads per pull.
pub const DEFAULT_SUBSCRIPTION_BATCH: usize = 256;

/// Where [`Varve::subscribe_all`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// From position 0: every event stored, then every new one.
    Start,
    /// After the last event visible when the subscription is made: only new events.
    End,
    /// After this position (for example the last one a consumer processed).
    After(u64),
}

type Predicate = Arc<dyn Fn(&EventView<'_>) -> bool + Send + Sync>;

/// Which events a [`Varve::subscribe_all`] subscription delivers. Every condition set must
/// hold; [`Filter::all`] (the default) passes everything. Filtered-out events are skipped
/// inside the store (no copy), and the subscription's [`position`](Subscription::position)
/// still moves past them.
///
/// ```
/// use varve_engine::Filter;
/// let orders = Filter::all().stream_prefix("order-").event_type_prefix("order.");
/// let big = Filter::all().predicate(|e| e.payload.len() > 1024);
/// # let _ = (orders, big);
/// ```
#[derive(Clone, Default)]
pub struct Filter {
    event_type_prefix: Option<String>,
    stream_prefix: Option<String>,
    predicate: Option<Predicate>,
}

impl Filter {
    /// Passes every event.
    #[must_use]
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Passes only events whose type starts with `prefix`.
    #[must_use]
    pub fn event_type_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.event_type_prefix = Some(prefix.into());
        self
    }

    /// Passes only events of streams whose name starts with `prefix`.
    #[must_use]
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.stream_prefix = Some(prefix.into());
        self
    }

    /// Passes only events for which `f` returns true. `f` runs inside the store's read
    /// path on a borrowed view: keep it short and do not call back into the store.
    #[must_use]
    pub fn predicate(mut self, f: impl Fn(&EventView<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(f));
        self
    }

    /// Whether `event` passes.
    #[must_use]
    pub fn matches(&self, event: &EventView<'_>) -> bool {
        self.event_type_prefix
            .as_deref()
            .is_none_or(|p| event.event_type.starts_with(p))
            && self
                .stream_prefix
                .as_deref()
                .is_none_or(|p| event.stream.starts_with(p))
            && self.predicate.as_ref().is_none_or(|f| f(event))
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("event_type_prefix", &self.event_type_prefix)
            .field("stream_prefix", &self.stream_prefix)
            .field("predicate", &self.predicate.as_ref().map(|_| ".."))
            .finish()
    }
}

#[derive(Debug)]
enum Source {
    All(Filter),
    Stream(Arc<str>),
}

/// A live, ordered feed of events: what is stored first, then new events as they are
/// acknowledged. Made by [`Varve::subscribe_all`] or [`Varve::subscribe_stream`].
///
/// Events come in increasing position (version) order with no gap and no duplicate, and
/// never before their append was acknowledged durable. A subscription keeps its store
/// open (it holds a clone of the handle) and is `Send`: move it to the thread that
/// consumes it.
///
/// Iterate it (blocking) or call [`next_timeout`](Self::next_timeout),
/// [`try_next`](Self::try_next) or [`next_batch`](Self::next_batch).
/// When the store is closed ([`Varve::close`] on any clone) or degraded, a subscription
/// first delivers every event that was visible, then ends: iteration returns `None`
/// (closed) or an [`Error::Degraded`], the other calls [`Error::Closed`] or
/// [`Error::Degraded`].
#[derive(Debug)]
pub struct Subscription {
    db: Varve,
    source: Source,
    /// The next position (global subscription) or version (stream subscription) to read.
    cursor: u64,
    buf: VecDeque<RecordedEvent>,
    batch: usize,
}

impl Varve {
    /// Subscribes to the global log from `from`, delivering the events `filter` passes.
    #[must_use]
    pub fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription {
        let cursor = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::End => self.core().visible_end(),
            SubscribeFrom::After(p) => p.saturating_add(1),
        };
        Subscription::new(self.clone(), Source::All(filter), cursor)
    }

    /// Subscribes to `stream` from version `from_version` (inclusive). The stream need not
    /// exist yet: the subscription waits for it.
    #[must_use]
    pub fn subscribe_stream(&self, stream: &str, from_version: u64) -> Subscription {
        Subscription::new(
            self.clone(),
            Source::Stream(Arc::from(stream)),
            from_version,
        )
    }
}

/// Blocking iteration: `next()` waits for the next event. It returns `None` once the store
/// was closed and every visible event was delivered, and `Some(Err(_))` for a read error or
/// a degraded store.
impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        match self.pull(None) {
            Ok(Some(e)) => Some(Ok(e)),
            Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
            Ok(None) => unreachable!("a pull without a deadline returns an event or an error"),
        }
    }
}

impl Subscription {
    fn new(db: Varve, source: Source, cursor: u64) -> Subscription {
        Subscription {
            db,
            source,
            cursor,
            buf: VecDeque::new(),
            batch: DEFAULT_SUBSCRIPTION_BATCH,
        }
    }

    /// Sets how many events one pull reads (default [`DEFAULT_SUBSCRIPTION_BATCH`]); the
    /// subscription holds at most that many events at a time. Values below 1 count as 1.
    #[must_use]
    pub fn with_batch(mut self, events: usize) -> Subscription {
        self.batch = events.max(1);
        self
    }

    /// Where the subscription stands: for [`Varve::subscribe_all`], the position of the
    /// next event it may deliver (every event below it was delivered or filtered out, so a
    /// consumer that saved it resumes with `SubscribeFrom::After(position - 1)`); for
    /// [`Varve::subscribe_stream`], the next version.
    #[must_use]
    pub fn position(&self) -> u64 {
        match (&self.source, self.buf.front()) {
            (Source::All(_), Some(e)) => e.position,
            (Source::Stream(_), Some(e)) => e.version,
            (_, None) => self.cursor,
        }
    }

    /// The next event, or `Ok(None)` if none came within `timeout`.
    ///
    /// # Errors
    /// [`Error::Closed`] or [`Error::Degraded`] once the store was closed or degraded and
    /// every visible event was delivered; read errors ([`Error::Corrupted`], LMDB).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        self.pull(Some(Instant::now() + timeout))
    }

    /// The next event if one is visible now, without waiting.
    ///
    /// # Errors
    /// As [`next_timeout`](Self::next_timeout).
    pub fn try_next(&mut self) -> Result<Option<RecordedEvent>> {
        self.pull(Some(Instant::now()))
    }

    /// Blocks until at least one event is there, then returns up to `max` of those visible
    /// now (at least one; `max` below 1 counts as 1).
    ///
    /// # Errors
    /// As [`next_timeout`](Self::next_timeout).
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        let Some(first) = self.pull(None)? else {
            unreachable!("a pull without a deadline returns an event or an error");
        };
        let mut out = Vec::with_capacity(max.clamp(1, self.batch));
        out.push(first);
        while out.len() < max {
            if self.buf.is_empty() && !self.fill()? {
                break;
            }
            match self.buf.pop_front() {
                Some(e) => out.push(e),
                None => continue, // a pull that only skipped filtered-out events
            }
        }
        Ok(out)
    }

    /// Like [`next_batch`](Self::next_batch) without copying: blocks until at least one
    /// event is there, then calls `f` with a borrowed view of each of up to `max` events
    /// visible now (at least one; `max` below 1 counts as 1), in order, and returns how many
    /// it visited. The views borrow the store's read buffers (an LMDB read transaction or
    /// the WAL tail's cache) for the duration of the call, as [`Varve::scan_all`] does: no
    /// allocation per event. Events an earlier call to the owned readers buffered come
    /// first. Payloads over the inline limit are references
    /// ([`PayloadRef::Blob`](crate::PayloadRef::Blob)); read them with
    /// [`Varve::read_payload`].
    ///
    /// # Errors
    /// As [`next_timeout`](Self::next_timeout).
    pub fn next_batch_with(
        &mut self,
        max: usize,
        mut f: impl FnMut(&EventView<'_>),
    ) -> Result<usize> {
        let max = max.max(1);
        let mut n = 0;
        while n < max {
            let Some(e) = self.buf.pop_front() else {
                break;
            };
            f(&e.as_view());
            n += 1;
        }
        loop {
            if n >= max {
                return Ok(n);
            }
            let seen = self.db.core().visible_end();
            let moved = self.visit(max - n, |v, _| {
                f(v);
                n += 1;
            })?;
            if n > 0 {
                return Ok(n);
            }
            if moved {
                continue; // only filtered-out events: read on
            }
            match self.db.core().wait_visible(seen, None) {
                Waited::Moved | Waited::TimedOut => {}
                Waited::Ended => {
                    let moved = self.visit(max, |v, _| {
                        f(v);
                        n += 1;
                    })?;
                    if n > 0 || moved {
                        continue;
                    }
                    return Err(self.db.core().degraded_error());
                }
            }
        }
    }

    /// The pull loop: buffered events first, then a read of what is visible, then a wait
    /// for the store to publish more (until `deadline`; `None`: forever).
    fn pull(&mut self, deadline: Option<Instant>) -> Result<Option<RecordedEvent>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            // Read the watermark before the scan: whatever is published after this point
            // makes `wait_visible` return at once.
            let seen = self.db.core().visible_end();
            if self.fill()? {
                continue;
            }
            match self.db.core().wait_visible(seen, deadline) {
                Waited::Moved => {}
                Waited::TimedOut => return Ok(None),
                Waited::Ended => {
                    if self.fill()? {
                        continue;
                    }
                    return Err(self.db.core().degraded_error());
                }
            }
        }
    }

    /// Reads the next batch into the buffer. Returns whether the cursor moved (events were
    /// delivered or skipped).
    fn fill(&mut self) -> Result<bool> {
        let mut buf = std::mem::take(&mut self.buf);
        let moved = self.visit(self.batch, |v, name| buf.push_back(owned(v, name)));
        self.buf = buf;
        moved
    }

    /// Reads up to `limit` events from the cursor, hands each one the subscription
    /// delivers (its filter passes it; every event of its stream) to `sink`, and moves the
    /// cursor past what it read. Returns whether the cursor moved (events were delivered
    /// or skipped).
    fn visit(
        &mut self,
        limit: usize,
        mut sink: impl FnMut(&EventView<'_>, &Arc<str>),
    ) -> Result<bool> {
        let core = self.db.core();
        let next = match &self.source {
            Source::All(filter) => {
                if self.cursor >= core.visible_end() {
                    return Ok(false);
                }
                let (_, next) =
                    core.scan_all(self.cursor, Direction::Forward, limit, |v, name| {
                        if filter.matches(v) {
                            sink(v, name);
                        }
                    })?;
                next
            }
            Source::Stream(name) => {
                let mut last = None;
                let scanned =
                    core.scan_stream(name, Direction::Forward, self.cursor, limit, |v, n| {
                        last = Some(v.version);
                        sink(v, n);
                    });
                match scanned {
                    // Nothing read (the stream has no event at or after the cursor yet; a
                    // truncation may have moved its first version past the cursor): stay.
                    Ok(_) => last.map_or(self.cursor, |v| v + 1),
                    Err(Error::StreamNotFound { .. }) => self.cursor,
                    Err(e) => return Err(e),
                }
            }
        };
        let moved = next > self.cursor;
        self.cursor = next;
        Ok(moved)
    }
}

/// A [`Subscription`] as an async [`Stream`](futures_core::Stream) (cargo feature `async`):
/// `poll_next` never blocks; when nothing is visible it registers the task's waker with the
/// store, which wakes it when the next events are published. No runtime is needed or
/// assumed. Made by [`Subscription::into_stream`].
#[cfg(feature = "async")]
#[derive(Debug)]
pub struct SubscriptionStream {
    sub: Subscription,
}

#[cfg(feature = "async")]
impl Subscription {
    /// This subscription as an async stream (cargo feature `async`).
    #[must_use]
    pub fn into_stream(self) -> SubscriptionStream {
        SubscriptionStream { sub: self }
    }
}

#[cfg(feature = "async")]
impl SubscriptionStream {
    /// Where the subscription stands (see [`Subscription::position`]).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.sub.position()
    }
}

/// Items as the blocking iterator gives them: the stream ends (`None`) once the store was
/// closed and every visible event was delivered.
#[cfg(feature = "async")]
impl futures_core::Stream for SubscriptionStream {
    type Item = Result<RecordedEvent>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let sub = &mut self.get_mut().sub;
        loop {
            if let Some(e) = sub.buf.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            let seen = sub.db.core().visible_end();
            match sub.fill() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match sub.db.core().register_waker(seen, cx.waker()) {
                Waited::Moved => {}
                Waited::TimedOut => return Poll::Pending,
                Waited::Ended => match sub.fill() {
                    Ok(true) => {}
                    Ok(false) => {
                        return match sub.db.core().degraded_error() {
                            Error::Closed => Poll::Ready(None),
                            e => Poll::Ready(Some(Err(e))),
                        };
                    }
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::engine::Waited;
    use crate::{EventData, ExpectedVersion, Options, Varve};

    fn store() -> (tempfile::TempDir, Varve) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Varve::open(dir.path(), Options::default()).expect("open");
        db.append("s", ExpectedVersion::Any, &[EventData::new("t", b"x")])
            .expect("append");
        (dir, db)
    }

    #[test]
    fn a_wait_returns_at_once_when_the_end_has_moved_and_times_out_when_not() {
        let (_dir, db) = store();
        let core = db.core();
        assert_eq!(core.visible_end(), 1);
        assert_eq!(core.wait_visible(0, None), Waited::Moved);
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(30));
        assert_eq!(core.wait_visible(1, deadline), Waited::TimedOut);
        assert!(
            t0.elapsed() >= Duration::from_millis(30),
            "waited to the deadline"
        );
        db.clone().close().expect("close");
        assert_eq!(core.wait_visible(1, None), Waited::Ended);
    }

    #[cfg(feature = "async")]
    #[test]
    fn registering_a_waker_reports_a_moved_end_an_ended_store_or_a_wait() {
        let (_dir, db) = store();
        let core = db.core();
        let waker = std::task::Waker::noop();
        assert_eq!(core.register_waker(0, waker), Waited::Moved);
        assert_eq!(core.register_waker(1, waker), Waited::TimedOut);
        db.clone().close().expect("close");
        assert_eq!(core.register_waker(1, waker), Waited::Ended);
    }
}
