//! Every on-disk structure of the store, as explicit little-endian `repr(C)` Pod structs.
//!
//! Nothing here depends on Rust's own layout of enums or `Option`: every field is a
//! fixed-width little-endian integer or a byte array, and every struct is checked by
//! `bytemuck` to have no padding. See `docs/format.md` for the byte diagrams.

use bytemuck::{Pod, Zeroable};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Format version written into every file of the store.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Magic at offset 0 of a page file.
pub(crate) const PAGE_MAGIC: [u8; 8] = *b"VARVPAGE";
/// Magic at offset 0 of the tracker file.
pub(crate) const TRACKER_MAGIC: [u8; 8] = *b"VARVTRAK";
/// Magic at offset 0 of a dictionary file.
pub(crate) const DICT_MAGIC: [u8; 8] = *b"VARVDICT";

/// Size of a page header; the slot directory starts right after it.
pub(crate) const PAGE_HEADER_LEN: u32 = 64;
/// Size of one slot directory entry.
pub(crate) const SLOT_LEN: u32 = 40;
/// Smallest container a value occupies, whatever its size.
pub const MIN_CONTAINER: u32 = 128;
/// Containers start at and are sized in multiples of this.
pub(crate) const CONTAINER_ALIGN: u32 = 8;
/// Size of the tracker header; entries follow it.
pub(crate) const TRACKER_HEADER_LEN: u64 = 64;
/// Size of one tracker entry: the pointer and its checksum.
pub(crate) const TRACKER_ENTRY_LEN: u64 = 16;
/// Version of the tracker file format (2: 16-byte entries with a checksum each; version 1
/// had bare 8-byte pointers and is refused with a clear error).
pub(crate) const TRACKER_VERSION: u32 = 2;
/// Size of a dictionary file header.
pub(crate) const DICT_HEADER_LEN: usize = 32;

/// Codec of a stored value: bytes stored as given.
pub(crate) const CODEC_RAW: u8 = 1;
/// Codec of a stored value: lz4 block format.
pub(crate) const CODEC_LZ4: u8 = 2;
/// Codec of a stored value: lz4 block format with an external dictionary (`dict_id`).
pub(crate) const CODEC_LZ4_DICT: u8 = 3;

/// Slot flag: the slot was freed (tombstone); its container is free space.
pub(crate) const FLAG_TOMBSTONE: u8 = 1;

/// Rounds a stored length up to its container size (aligned, at least [`MIN_CONTAINER`]).
pub(crate) fn container_len(stored_len: u32) -> u32 {
    let aligned = stored_len.div_ceil(CONTAINER_ALIGN) * CONTAINER_ALIGN;
    aligned.max(MIN_CONTAINER)
}

/// Byte offset of slot `slot`'s directory entry inside its page.
pub(crate) fn slot_offset(slot: u32) -> u64 {
    u64::from(PAGE_HEADER_LEN) + u64::from(slot) * u64::from(SLOT_LEN)
}

/// The first 64 bytes of a page file.
///
/// Bytes 0..32 (identity) never change after the page is created; bytes 32..64 hold a
/// summary that is derived from the slots, rewritten at flush and checked (and rebuilt
/// when wrong) on open. Each half carries its own checksum.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct PageHeader {
    /// [`PAGE_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`], little-endian.
    pub version: [u8; 4],
    /// The page's number (also in its file name).
    pub page_id: [u8; 4],
    /// Length of the page file in bytes.
    pub page_size: [u8; 8],
    /// xxh3-64 of bytes 0..24.
    pub ident_sum: [u8; 8],
    /// Summary: number of directory entries in use (highest live slot + 1).
    pub slot_count: [u8; 4],
    /// Summary: live values in the page.
    pub live_slots: [u8; 4],
    /// Summary: stored bytes of the live values.
    pub live_bytes: [u8; 8],
    /// Reserved, zero.
    pub reserved: [u8; 8],
    /// xxh3-64 of bytes 32..56.
    pub summary_sum: [u8; 8],
}

/// The derived summary kept in a page header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageSummary {
    /// Number of directory entries in use.
    pub slot_count: u32,
    /// Live values.
    pub live_slots: u32,
    /// Stored bytes of the live values.
    pub live_bytes: u64,
}

impl PageHeader {
    /// A fresh header for page `page_id` of `page_size` bytes with an empty summary.
    pub(crate) fn new(page_id: u32, page_size: u64) -> PageHeader {
        let mut h = PageHeader {
            magic: PAGE_MAGIC,
            version: FORMAT_VERSION.to_le_bytes(),
            page_id: page_id.to_le_bytes(),
            page_size: page_size.to_le_bytes(),
            ident_sum: [0; 8],
            slot_count: [0; 4],
            live_slots: [0; 4],
            live_bytes: [0; 8],
            reserved: [0; 8],
            summary_sum: [0; 8],
        };
        h.ident_sum = h.compute_ident_sum().to_le_bytes();
        h.set_summary(PageSummary::default());
        h
    }

    fn compute_ident_sum(&self) -> u64 {
        xxh3_64(&bytemuck::bytes_of(self)[0..24])
    }

    fn compute_summary_sum(&self) -> u64 {
        xxh3_64(&bytemuck::bytes_of(self)[32..56])
    }

    /// True when the identity half is intact (magic, version and checksum).
    pub(crate) fn ident_ok(&self) -> bool {
        self.magic == PAGE_MAGIC
            && u32::from_le_bytes(self.version) == FORMAT_VERSION
            && u64::from_le_bytes(self.ident_sum) == self.compute_ident_sum()
    }

    /// The page number recorded in the header.
    pub(crate) fn page_id(&self) -> u32 {
        u32::from_le_bytes(self.page_id)
    }

    /// The page size recorded in the header.
    pub(crate) fn page_size(&self) -> u64 {
        u64::from_le_bytes(self.page_size)
    }

    /// The stored summary, or `None` when its checksum does not match.
    pub(crate) fn summary(&self) -> Option<PageSummary> {
        (u64::from_le_bytes(self.summary_sum) == self.compute_summary_sum()).then(|| PageSummary {
            slot_count: u32::from_le_bytes(self.slot_count),
            live_slots: u32::from_le_bytes(self.live_slots),
            live_bytes: u64::from_le_bytes(self.live_bytes),
        })
    }

    /// Replaces the summary and its checksum.
    pub(crate) fn set_summary(&mut self, s: PageSummary) {
        self.slot_count = s.slot_count.to_le_bytes();
        self.live_slots = s.live_slots.to_le_bytes();
        self.live_bytes = s.live_bytes.to_le_bytes();
        self.reserved = [0; 8];
        self.summary_sum = self.compute_summary_sum().to_le_bytes();
    }
}

/// One slot directory entry (40 bytes): where a value lives in its page and how to decode it.
///
/// `entry_sum` covers bytes 0..32 and is seeded with the slot's location, so an entry
/// copied to the wrong place, or a tracker pointing at the wrong slot, does not verify.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct SlotEntry {
    /// The id whose value this is.
    pub id: [u8; 8],
    /// Offset of the container inside the page.
    pub offset: [u8; 4],
    /// Size of the container (>= stored_len, >= [`MIN_CONTAINER`]).
    pub capacity: [u8; 4],
    /// Bytes of the stored (possibly compressed) value.
    pub stored_len: [u8; 4],
    /// Bytes of the value as the user gave it.
    pub raw_len: [u8; 4],
    /// [`CODEC_RAW`], [`CODEC_LZ4`] or [`CODEC_LZ4_DICT`].
    pub codec: u8,
    /// [`FLAG_TOMBSTONE`] or 0.
    pub flags: u8,
    /// Dictionary id for [`CODEC_LZ4_DICT`], else 0.
    pub dict_id: [u8; 2],
    /// Low 32 bits of xxh3-64 of the stored bytes.
    pub value_sum: [u8; 4],
    /// xxh3-64 of bytes 0..32, seeded with `(page << 32) | slot`.
    pub entry_sum: [u8; 8],
}

/// A decoded, verified slot entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Owner id.
    pub id: u64,
    /// Container offset.
    pub offset: u32,
    /// Container size.
    pub capacity: u32,
    /// Stored bytes.
    pub stored_len: u32,
    /// Raw bytes.
    pub raw_len: u32,
    /// Codec.
    pub codec: u8,
    /// Flags.
    pub flags: u8,
    /// Dictionary id.
    pub dict_id: u16,
    /// Checksum of the stored bytes.
    pub value_sum: u32,
}

/// Checksum of a stored value as kept in [`SlotEntry::value_sum`].
pub(crate) fn value_sum(stored: &[u8]) -> u32 {
    xxh3_64(stored) as u32
}

/// `page` in the high half, `slot` in the low half (built from bytes: no arithmetic to get
/// wrong).
fn join(high: u32, low: u32) -> u64 {
    let (h, l) = (high.to_le_bytes(), low.to_le_bytes());
    u64::from_le_bytes([l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]])
}

fn entry_seed(page: u32, slot: u32) -> u64 {
    join(page, slot)
}

impl SlotEntry {
    /// Encodes `s` as the entry of `(page, slot)`.
    pub(crate) fn encode(s: &Slot, page: u32, slot: u32) -> SlotEntry {
        let mut e = SlotEntry {
            id: s.id.to_le_bytes(),
            offset: s.offset.to_le_bytes(),
            capacity: s.capacity.to_le_bytes(),
            stored_len: s.stored_len.to_le_bytes(),
            raw_len: s.raw_len.to_le_bytes(),
            codec: s.codec,
            flags: s.flags,
            dict_id: s.dict_id.to_le_bytes(),
            value_sum: s.value_sum.to_le_bytes(),
            entry_sum: [0; 8],
        };
        e.entry_sum = e.compute_sum(page, slot).to_le_bytes();
        e
    }

    fn compute_sum(&self, page: u32, slot: u32) -> u64 {
        xxh3_64_with_seed(&bytemuck::bytes_of(self)[0..32], entry_seed(page, slot))
    }

    /// Decodes and verifies the entry of `(page, slot)`; `None` when its checksum fails.
    pub(crate) fn decode(&self, page: u32, slot: u32) -> Option<Slot> {
        if u64::from_le_bytes(self.entry_sum) != self.compute_sum(page, slot) {
            return None;
        }
        Some(Slot {
            id: u64::from_le_bytes(self.id),
            offset: u32::from_le_bytes(self.offset),
            capacity: u32::from_le_bytes(self.capacity),
            stored_len: u32::from_le_bytes(self.stored_len),
            raw_len: u32::from_le_bytes(self.raw_len),
            codec: self.codec,
            flags: self.flags,
            dict_id: u16::from_le_bytes(self.dict_id),
            value_sum: u32::from_le_bytes(self.value_sum),
        })
    }
}

/// The first 64 bytes of the tracker file (never rewritten after creation).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct TrackerHeader {
    /// [`TRACKER_MAGIC`].
    pub magic: [u8; 8],
    /// [`TRACKER_VERSION`].
    pub version: [u8; 4],
    /// [`TRACKER_ENTRY_LEN`].
    pub entry_len: [u8; 4],
    /// Reserved, zero.
    pub reserved: [u8; 32],
    /// Reserved, zero.
    pub reserved2: [u8; 8],
    /// xxh3-64 of bytes 0..56.
    pub sum: [u8; 8],
}

impl TrackerHeader {
    /// The header every tracker file starts with.
    pub(crate) fn new() -> TrackerHeader {
        TrackerHeader::of_version(TRACKER_VERSION, TRACKER_ENTRY_LEN as u32)
    }

    fn of_version(version: u32, entry_len: u32) -> TrackerHeader {
        let mut h = TrackerHeader {
            magic: TRACKER_MAGIC,
            version: version.to_le_bytes(),
            entry_len: entry_len.to_le_bytes(),
            reserved: [0; 32],
            reserved2: [0; 8],
            sum: [0; 8],
        };
        h.sum = xxh3_64(&bytemuck::bytes_of(&h)[0..56]).to_le_bytes();
        h
    }

    /// True when magic, version, entry size and checksum are right.
    pub(crate) fn ok(&self) -> bool {
        *self == TrackerHeader::new()
    }

    /// True when this is the intact header of a version 1 tracker (8-byte entries).
    pub(crate) fn is_version_1(&self) -> bool {
        *self == TrackerHeader::of_version(1, 8)
    }
}

/// A tracker entry as stored: the pointer (see [`encode_ptr`]) and xxh3-64 of its 8 bytes
/// seeded with the id, both little-endian; all zeros for "no value".
pub(crate) fn encode_entry(id: u64, ptr: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    if ptr != 0 {
        out[..8].copy_from_slice(&ptr.to_le_bytes());
        out[8..].copy_from_slice(&xxh3_64_with_seed(&ptr.to_le_bytes(), id).to_le_bytes());
    }
    out
}

/// The pointer a stored tracker entry of `id` holds (0: no value), or `None` when the
/// entry is corrupt: its checksum does not match, or the pointer names no page and slot.
pub(crate) fn decode_entry(id: u64, entry: [u8; 16]) -> Option<u64> {
    let (p, sum) = entry.split_at(8);
    let ptr = u64::from_le_bytes(p.try_into().ok()?);
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    if ptr == 0 {
        return (sum == 0).then_some(0);
    }
    (sum == xxh3_64_with_seed(p, id) && decode_ptr(ptr).is_some()).then_some(ptr)
}

/// A tracker entry: 0 for "no value", else `(page + 1) << 32 | slot`, little-endian.
pub(crate) fn encode_ptr(page: u32, slot: u32) -> u64 {
    join(page + 1, slot)
}

/// Splits a non-zero tracker entry into `(page, slot)`.
pub(crate) fn decode_ptr(ptr: u64) -> Option<(u32, u32)> {
    let hi = (ptr >> 32) as u32;
    (hi != 0).then(|| (hi - 1, ptr as u32))
}

/// Header of a dictionary file; the dictionary bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct DictHeader {
    /// [`DICT_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: [u8; 4],
    /// Dictionary id (also in the file name).
    pub dict_id: [u8; 4],
    /// Length of the dictionary bytes.
    pub len: [u8; 4],
    /// Low 32 bits of xxh3-64 of the dictionary bytes.
    pub data_sum: [u8; 4],
    /// xxh3-64 of bytes 0..24.
    pub sum: [u8; 8],
}

impl DictHeader {
    /// The header of dictionary `dict_id` holding `data`.
    pub(crate) fn new(dict_id: u16, data: &[u8]) -> DictHeader {
        let mut h = DictHeader {
            magic: DICT_MAGIC,
            version: FORMAT_VERSION.to_le_bytes(),
            dict_id: u32::from(dict_id).to_le_bytes(),
            len: (data.len() as u32).to_le_bytes(),
            data_sum: value_sum(data).to_le_bytes(),
            sum: [0; 8],
        };
        h.sum = xxh3_64(&bytemuck::bytes_of(&h)[0..24]).to_le_bytes();
        h
    }

    /// Verifies a whole dictionary file and returns its id and bytes.
    pub(crate) fn parse(file: &[u8]) -> Option<(u16, &[u8])> {
        let head = file.get(..DICT_HEADER_LEN)?;
        let h: DictHeader = bytemuck::pod_read_unaligned(head);
        let data = file.get(DICT_HEADER_LEN..)?;
        let id = u16::try_from(u32::from_le_bytes(h.dict_id)).ok()?;
        (h == DictHeader::new(id, data)).then_some((id, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_documented_layout() {
        assert_eq!(size_of::<PageHeader>(), PAGE_HEADER_LEN as usize);
        assert_eq!(size_of::<SlotEntry>(), SLOT_LEN as usize);
        assert_eq!(size_of::<TrackerHeader>(), TRACKER_HEADER_LEN as usize);
        assert_eq!(size_of::<DictHeader>(), DICT_HEADER_LEN);
    }

    #[test]
    fn container_len_rounds_up_to_alignment_and_minimum() {
        assert_eq!(container_len(0), 128);
        assert_eq!(container_len(128), 128);
        assert_eq!(container_len(129), 136);
        assert_eq!(container_len(136), 136);
        assert_eq!(container_len(137), 144);
        assert_eq!(container_len(1000), 1000);
        assert_eq!(container_len(1001), 1008);
    }

    #[test]
    fn slot_offsets_follow_the_header() {
        assert_eq!(slot_offset(0), 64);
        assert_eq!(slot_offset(1), 104);
        assert_eq!(slot_offset(10), 464);
    }

    #[test]
    fn page_header_checks_each_half() {
        let mut h = PageHeader::new(7, 65536);
        assert!(h.ident_ok());
        assert_eq!((h.page_id(), h.page_size()), (7, 65536));
        assert_eq!(h.summary(), Some(PageSummary::default()));
        let s = PageSummary {
            slot_count: 3,
            live_slots: 2,
            live_bytes: 999,
        };
        h.set_summary(s);
        assert_eq!(h.summary(), Some(s));
        let bytes = bytemuck::bytes_of_mut(&mut h);
        bytes[40] ^= 1;
        assert_eq!(h.summary(), None);
        assert!(h.ident_ok());
        let bytes = bytemuck::bytes_of_mut(&mut h);
        bytes[13] ^= 1;
        assert!(!h.ident_ok());
        let mut h = PageHeader::new(1, 4096);
        h.magic[0] = b'X';
        assert!(!h.ident_ok());
        let mut h = PageHeader::new(1, 4096);
        h.version = 2u32.to_le_bytes();
        assert!(!h.ident_ok());
    }

    #[test]
    fn slot_entry_round_trips_and_is_bound_to_its_location() {
        let s = Slot {
            id: 42,
            offset: 1000,
            capacity: 256,
            stored_len: 200,
            raw_len: 300,
            codec: CODEC_LZ4,
            flags: 0,
            dict_id: 5,
            value_sum: 0xdead_beef,
        };
        let e = SlotEntry::encode(&s, 3, 9);
        assert_eq!(e.decode(3, 9), Some(s));
        assert_eq!(e.decode(3, 8), None);
        assert_eq!(e.decode(2, 9), None);
        for i in 0..32 {
            let mut bad = e;
            bytemuck::bytes_of_mut(&mut bad)[i] ^= 0x10;
            assert_eq!(bad.decode(3, 9), None, "flip at {i}");
        }
    }

    #[test]
    fn pointers_round_trip_and_zero_means_none() {
        assert_eq!(decode_ptr(0), None);
        assert_eq!(decode_ptr(encode_ptr(0, 0)), Some((0, 0)));
        assert_eq!(decode_ptr(encode_ptr(5, 77)), Some((5, 77)));
        assert_eq!(encode_ptr(0, 3), (1 << 32) + 3);
        assert_eq!(join(0x0102_0304, 0x0506_0708), 0x0102_0304_0506_0708);
    }

    #[test]
    fn tracker_entries_verify_against_their_id() {
        assert_eq!(encode_entry(9, 0), [0; 16]);
        assert_eq!(decode_entry(9, [0; 16]), Some(0));
        let p = encode_ptr(3, 4);
        let e = encode_entry(9, p);
        assert_eq!(&e[..8], &p.to_le_bytes());
        assert_eq!(decode_entry(9, e), Some(p));
        assert_eq!(decode_entry(10, e), None, "bound to its id");
        for i in 0..16 {
            let mut bad = e;
            bad[i] ^= 0x10;
            assert_eq!(decode_entry(9, bad), None, "byte {i} flipped");
        }
        let mut zero_ptr = [0u8; 16];
        zero_ptr[12] = 1;
        assert_eq!(decode_entry(9, zero_ptr), None, "no pointer but a checksum");
        // A checksummed pointer that names no page (high half 0) is corrupt as well.
        assert_eq!(decode_entry(9, encode_entry(9, 5)), None);
    }

    #[test]
    fn tracker_header_verifies() {
        let h = TrackerHeader::new();
        assert!(h.ok());
        assert!(!h.is_version_1());
        let v1 = TrackerHeader::of_version(1, 8);
        assert!(v1.is_version_1() && !v1.ok());
        let mut bad = h;
        bad.reserved[3] = 1;
        assert!(!bad.ok());
    }

    #[test]
    fn dict_file_verifies() {
        let data = b"{\"name\":\"value\"}".to_vec();
        let mut file = bytemuck::bytes_of(&DictHeader::new(9, &data)).to_vec();
        file.extend_from_slice(&data);
        assert_eq!(DictHeader::parse(&file), Some((9, &data[..])));
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(DictHeader::parse(&bad), None);
        assert_eq!(DictHeader::parse(&file[..10]), None);
    }
}
