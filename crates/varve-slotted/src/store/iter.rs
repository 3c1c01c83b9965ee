//! Iteration over every value in id order: [`Store::iter`] and [`Iter`].

use super::Store;
use super::read::{decode, locate};
use crate::error::{Error, Result};
use crate::format::decode_ptr;

impl Store {
    /// Iterates over `(id, value)` in id order. Each step reads under the read lock on its
    /// own, so writes made during the iteration may or may not be seen (each value read is
    /// whole). An id whose value or tracker entry is corrupt yields its error
    /// ([`Error::Corrupted`], [`Error::CorruptedEntry`]) and the iteration goes on.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            store: self,
            next: 0,
        }
    }
}

/// Iterator over `(id, value)` pairs, from [`Store::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    store: &'a Store,
    next: u64,
}

impl Iterator for Iter<'_> {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let sh = match self.store.read_shared() {
            Ok(sh) => sh,
            Err(e) => return Some(Err(e)),
        };
        let (id, p) = sh.ptrs.next_from(self.next)?;
        // Ids stay below 2^39, so this never ends an iteration early; it cannot wrap to 0.
        self.next = id.checked_add(1)?;
        let Some((page, slot)) = decode_ptr(p) else {
            return Some(Err(Error::CorruptedEntry { id }));
        };
        Some(
            locate(&sh, id, page, slot)
                .and_then(|(s, stored)| decode(&sh, page, slot, &s, stored))
                .map(|v| (id, v)),
        )
    }
}
