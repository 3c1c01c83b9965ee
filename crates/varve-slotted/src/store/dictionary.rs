//! Training, storing and adopting an lz4 dictionary: [`Store::train_dictionary`].

use std::sync::Arc;

use super::{Store, sync_dir};
use crate::dict;
use crate::error::{Error, Result};
use crate::format::decode_ptr;

impl Store {
    /// Trains an lz4 dictionary of at most `max_len` bytes (capped at 64 KiB) from the first
    /// `samples` live values in id order, stores it durably with a new id, and
    /// compresses every later write with it. Returns the new dictionary's id, or `None` when
    /// the samples share too little to build one (nothing changes then).
    pub fn train_dictionary(&self, samples: usize, max_len: usize) -> Result<Option<u16>> {
        let ids: Vec<u64> = {
            let sh = self.read_shared()?;
            sh.ptrs
                .iter()
                .filter(|&(_, p)| decode_ptr(p).is_some())
                .map(|(id, _)| id)
                .take(samples)
                .collect()
        };
        let mut values = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = self.get(id)? {
                values.push(v);
            }
        }
        let trained = dict::train(&values, max_len);
        if trained.is_empty() {
            return Ok(None);
        }
        let mut w = self.lock_writer()?;
        let id = {
            let sh = self.read_shared()?;
            match sh.dicts.keys().next_back() {
                Some(&last) => last.checked_add(1).ok_or(Error::TooManyDictionaries)?,
                None => 1,
            }
        };
        dict::write(&self.dir, id, &trained)?;
        sync_dir(&self.dir)?;
        w.dict_bytes += (trained.len() + crate::format::DICT_HEADER_LEN) as u64;
        let d: Arc<[u8]> = Arc::from(trained);
        self.write_shared()?.dicts.insert(id, Arc::clone(&d));
        w.active_dict = Some((id, d));
        Ok(Some(id))
    }
}
