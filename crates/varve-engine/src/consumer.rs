//! Durable consumers: named cursors saved in the store, for at-least-once processing.

use std::sync::Arc;

use crate::engine::Varve;
use crate::error::{Error, Result};
use crate::subscribe::{Filter, SubscribeFrom, Subscription};

/// A named cursor over the global log, saved in the store: a projection or an integration
/// records how far it got, and after a restart (or a kill -9) resumes there.
///
/// The position is that of the next event to process, as [`Subscription::position`] gives
/// it. [`commit`](Self::commit) writes it through the write-ahead log (the consumer's own
/// record kind) and returns once it is durable; the checkpointer later stores it in
/// `events.mdb`. Delivery is at least once: after a crash, events from the last
/// acknowledged commit on come again, and none before it.
///
/// ```
/// use varve_engine::{EventData, ExpectedVersion, Filter, Options, Varve};
/// # fn main() -> varve_engine::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let db = Varve::open(dir.path(), Options::default())?;
/// db.append("order-1", ExpectedVersion::Any, &[EventData::new("created", b"{}")])?;
/// let projector = db.consumer("order-projection")?;
/// let mut sub = projector.subscribe(Filter::all());
/// let event = sub.try_next()?.expect("one event");
/// // ... apply `event` to the read model, then record the progress:
/// projector.commit(sub.position())?;
/// assert_eq!(projector.position(), event.position + 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    db: Varve,
    name: Arc<str>,
}

impl Varve {
    /// The consumer called `name` (created by its first commit; until then its position is
    /// 0). Names follow the rules of stream names.
    ///
    /// # Errors
    /// [`Error::InvalidConsumerName`] for an empty name, one longer than
    /// `Options::max_stream_name` or one with a NUL byte.
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        let why = if name.is_empty() {
            Some("empty")
        } else if name.len() > self.core().max_stream_name() {
            Some("longer than max_stream_name")
        } else if name.as_bytes().contains(&0) {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::InvalidConsumerName { why });
        }
        Ok(Consumer {
            db: self.clone(),
            name: Arc::from(name),
        })
    }

    /// Every consumer that committed a position, with that position, sorted by name.
    #[must_use]
    pub fn consumers(&self) -> Vec<(Arc<str>, u64)> {
        self.core().consumer_positions()
    }
}

impl Consumer {
    /// The consumer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position of the next event to process: the last committed (or reset) position,
    /// 0 if there was none.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.db.core().consumer_position(&self.name)
    }

    /// A subscription to the global log from [`position`](Self::position), through
    /// `filter`. Commit its [`Subscription::position`] as events are processed.
    #[must_use]
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let from = match self.position() {
            0 => SubscribeFrom::Start,
            p => SubscribeFrom::After(p - 1),
        };
        self.db.subscribe_all(from, filter)
    }

    /// Records that every event below `position` is processed; durable when it returns.
    ///
    /// # Errors
    /// [`Error::InvalidPosition`] if `position` is past the last visible event or behind
    /// the committed position (use [`reset`](Self::reset) to move back); nothing is
    /// written. [`Error::Degraded`] or [`Error::Closed`] as appends.
    pub fn commit(&self, position: u64) -> Result<()> {
        self.db.core().move_consumer(&self.name, position, true)
    }

    /// Moves the consumer to `position`, also backwards (to process events again);
    /// durable when it returns.
    ///
    /// # Errors
    /// [`Error::InvalidPosition`] if `position` is past the last visible event.
    /// [`Error::Degraded`] or [`Error::Closed`] as appends.
    pub fn reset(&self, position: u64) -> Result<()> {
        self.db.core().move_consumer(&self.name, position, false)
    }
}
