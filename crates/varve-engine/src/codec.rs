//! Byte layouts of the engine: the WAL record of an append and the LMDB values and keys.
//! `docs/format.md` ("varve-engine") draws them. Every decoder takes untrusted bytes and
//! returns an error, never panics.

use std::ops::Range;

use varve_sidecar::BlobHash;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::types::{EventData, PayloadRef};

/// WAL record kind of an append (one record per `append`/`append_multi` call).
pub(crate) const KIND_APPEND: u8 = 1;
/// WAL record kind of a consumer's cursor (`Consumer::commit` / `Consumer::reset`).
pub(crate) const KIND_CONSUMER: u8 = 2;
/// Format byte at the start of a consumer record.
const CONSUMER_FORMAT: u8 = 1;
/// WAL record kind of a stream deletion or truncation (`delete_stream`, `truncate_before`).
pub(crate) const KIND_STREAM_META: u8 = 3;
/// Format byte at the start of a stream meta record.
const STREAM_META_FORMAT: u8 = 1;
/// Flag of a stream meta record and value: the stream is tombstoned.
const META_TOMBSTONE: u8 = 1;
/// Format byte at the start of an append record.
const APPEND_FORMAT: u8 = 1;
/// Format byte at the start of an event value in `events.mdb`.
const VALUE_FORMAT: u8 = 1;

const FLAG_ID: u8 = 1;
const FLAG_BLOB: u8 = 2;

/// Fixed part of an append record: format, first position, timestamp, event count,
/// stream count.
pub(crate) const APPEND_HEADER_LEN: usize = 1 + 8 + 8 + 4 + 2;
/// Fixed part of a stream group: stream id, first version, count, name length.
const GROUP_HEADER_LEN: usize = 8 + 8 + 4 + 2;
/// Fixed part of an event value: format, stream id, version, timestamp (checksum after).
const VALUE_HEADER_LEN: usize = 1 + 8 + 8 + 8;
const CHECKSUM_LEN: usize = 8;

/// Where an event's payload lives, as encoded in its body.
#[derive(Clone, Copy)]
pub(crate) enum BodyPayload<'a> {
    Inline(&'a [u8]),
    Blob { hash: BlobHash, len: u64 },
}

/// Encoded length of an event body.
pub(crate) fn body_len(ev: &EventData<'_>, payload: &BodyPayload<'_>) -> usize {
    1 + if ev.id.is_some() { 16 } else { 0 }
        + 2
        + ev.event_type.len()
        + 4
        + ev.metadata.len()
        + match payload {
            BodyPayload::Inline(b) => 4 + b.len(),
            BodyPayload::Blob { .. } => 8 + 32,
        }
}

/// Appends an event body up to its inline payload's bytes, and returns those bytes (which
/// belong right after what was written), if the payload is inline. Lengths were validated
/// by the caller (type <= u16, metadata and inline payload <= u32).
fn encode_body_head<'p>(
    out: &mut Vec<u8>,
    ev: &EventData<'_>,
    payload: &BodyPayload<'p>,
) -> Option<&'p [u8]> {
    let mut flags = 0;
    if ev.id.is_some() {
        flags |= FLAG_ID;
    }
    if matches!(payload, BodyPayload::Blob { .. }) {
        flags |= FLAG_BLOB;
    }
    out.push(flags);
    if let Some(id) = ev.id {
        out.extend_from_slice(&id);
    }
    out.extend_from_slice(&(ev.event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(ev.event_type.as_bytes());
    out.extend_from_slice(&(ev.metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(ev.metadata);
    match payload {
        BodyPayload::Inline(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            Some(b)
        }
        BodyPayload::Blob { hash, len } => {
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&hash.0);
            None
        }
    }
}

/// An event body read back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Body<'a> {
    pub(crate) id: Option<[u8; 16]>,
    pub(crate) event_type: &'a str,
    pub(crate) metadata: &'a [u8],
    pub(crate) payload: PayloadRef<'a>,
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

fn read_body<'a>(c: &mut Cursor<'a>) -> Result<Body<'a>, &'static str> {
    let flags = c.u8()?;
    if flags & !(FLAG_ID | FLAG_BLOB) != 0 {
        return Err("unknown event flags");
    }
    let id = if flags & FLAG_ID != 0 {
        Some(c.array::<16>()?)
    } else {
        None
    };
    let tlen = c.u16()? as usize;
    let event_type = std::str::from_utf8(c.take(tlen)?).map_err(|_| "event type is not UTF-8")?;
    let mlen = c.u32()? as usize;
    let metadata = c.take(mlen)?;
    let payload = if flags & FLAG_BLOB != 0 {
        let len = c.u64()?;
        let hash = BlobHash(c.array::<32>()?);
        PayloadRef::Blob { hash, len }
    } else {
        let plen = c.u32()? as usize;
        PayloadRef::Inline(c.take(plen)?)
    };
    Ok(Body {
        id,
        event_type,
        metadata,
        payload,
    })
}

/// One stream's run of events inside an append record.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) stream_id: u64,
    pub(crate) first_version: u64,
    pub(crate) count: u32,
    /// Byte range of the stream's name in the record.
    pub(crate) name: Range<usize>,
    /// Index (within the record) of the group's first event.
    pub(crate) first_event: u32,
}

/// Builds an append record: encoded outside the sequencer's lock with placeholders for
/// what only the sequencer knows (first position, stream ids and versions), which it then
/// patches in place.
///
/// The record's own bytes (headers, names, types, metadata) are assembled in `bytes`;
/// inline payloads stay borrowed from the caller and are spliced in only when the WAL
/// copies the record into its buffer ([`AppendRecord::parts`]): a payload is copied once
/// on its way to the log.
pub(crate) struct AppendRecord<'p> {
    bytes: Vec<u8>,
    /// Inline payloads and the offset in `bytes` they follow, in order.
    splices: Vec<(usize, &'p [u8])>,
    /// Length of the record with the payloads spliced in.
    len: usize,
    pub(crate) groups: Vec<Group>,
    events: u32,
}

impl<'p> AppendRecord<'p> {
    /// Starts a record for `events` events in `streams` stream groups, `capacity` bytes
    /// of its own (payloads not counted).
    pub(crate) fn new(timestamp_us: u64, events: u32, streams: u16, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.push(APPEND_FORMAT);
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&timestamp_us.to_le_bytes());
        bytes.extend_from_slice(&events.to_le_bytes());
        bytes.extend_from_slice(&streams.to_le_bytes());
        AppendRecord {
            len: bytes.len(),
            bytes,
            splices: Vec::new(),
            groups: Vec::with_capacity(streams as usize),
            events: 0,
        }
    }

    /// Encoded size of a group header with its name.
    pub(crate) fn group_len(name: &str) -> usize {
        GROUP_HEADER_LEN + name.len()
    }

    /// Length of the whole record, payloads included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Starts the group of `stream` with `count` events (their bodies follow).
    pub(crate) fn begin_group(&mut self, stream: &str, count: u32) {
        let before = self.bytes.len();
        self.bytes.extend_from_slice(&[0u8; 16]);
        self.bytes.extend_from_slice(&count.to_le_bytes());
        self.bytes
            .extend_from_slice(&(stream.len() as u16).to_le_bytes());
        let start = self.bytes.len();
        self.bytes.extend_from_slice(stream.as_bytes());
        self.len += self.bytes.len() - before;
        self.groups.push(Group {
            stream_id: 0,
            first_version: 0,
            count,
            name: start..self.bytes.len(),
            first_event: self.events,
        });
    }

    /// Adds one event body to the current group.
    pub(crate) fn push_event(&mut self, ev: &EventData<'_>, payload: &BodyPayload<'p>) {
        let before = self.bytes.len();
        let inline = encode_body_head(&mut self.bytes, ev, payload);
        self.len += self.bytes.len() - before;
        if let Some(p) = inline.filter(|p| !p.is_empty()) {
            self.splices.push((self.bytes.len(), p));
            self.len += p.len();
        }
        self.events += 1;
    }

    /// Patches what the sequencer assigned.
    pub(crate) fn set_first_position(&mut self, position: u64) {
        self.bytes[1..9].copy_from_slice(&position.to_le_bytes());
    }

    /// Patches the stream id and first version of group `g`.
    pub(crate) fn set_group(&mut self, g: usize, stream_id: u64, first_version: u64) {
        let at = self.groups[g].name.start - GROUP_HEADER_LEN;
        self.bytes[at..at + 8].copy_from_slice(&stream_id.to_le_bytes());
        self.bytes[at + 8..at + 16].copy_from_slice(&first_version.to_le_bytes());
        self.groups[g].stream_id = stream_id;
        self.groups[g].first_version = first_version;
    }

    /// The record as slices to lay end to end: its own bytes with the payloads in between.
    pub(crate) fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 * self.splices.len() + 1);
        let mut from = 0;
        for &(at, p) in &self.splices {
            parts.push(&self.bytes[from..at]);
            parts.push(p);
            from = at;
        }
        parts.push(&self.bytes[from..]);
        parts
    }

    /// The whole record in one buffer (tests; the engine hands [`parts`](Self::parts) to
    /// the WAL).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// An append record read back (from the WAL): its header and where each event lies.
#[derive(Debug, Clone)]
pub(crate) struct ParsedAppend {
    pub(crate) first_position: u64,
    pub(crate) timestamp_us: u64,
    pub(crate) groups: Vec<Group>,
    pub(crate) events: Vec<(u32, u32)>,
}

/// Parses and checks an append record: structure, counts, and that every body decodes.
pub(crate) fn parse_append(bytes: &[u8]) -> Result<ParsedAppend, &'static str> {
    let mut c = Cursor::new(bytes);
    if c.u8()? != APPEND_FORMAT {
        return Err("unknown append record format");
    }
    let first_position = c.u64()?;
    let timestamp_us = c.u64()?;
    let total = c.u32()?;
    let streams = c.u16()?;
    if streams == 0 || total == 0 {
        return Err("append record without events");
    }
    // Each event body takes at least 11 bytes: a count beyond that is damage, and the
    // capacity below stays bounded by the record's size.
    if total as usize > bytes.len() / 11 {
        return Err("event count larger than the record");
    }
    let mut groups = Vec::with_capacity(streams as usize);
    let mut events = Vec::with_capacity(total as usize);
    for _ in 0..streams {
        let stream_id = c.u64()?;
        let first_version = c.u64()?;
        let count = c.u32()?;
        let nlen = c.u16()? as usize;
        let start = c.at;
        let name = c.take(nlen)?;
        if std::str::from_utf8(name).is_err() || name.is_empty() {
            return Err("stream name is empty or not UTF-8");
        }
        if count == 0 {
            return Err("stream group without events");
        }
        first_version
            .checked_add(u64::from(count))
            .ok_or("stream version overflows")?;
        groups.push(Group {
            stream_id,
            first_version,
            count,
            name: start..start + nlen,
            first_event: events.len() as u32,
        });
        for _ in 0..count {
            let s = c.at;
            read_body(&mut c)?;
            events.push((s as u32, (c.at - s) as u32));
            if events.len() > total as usize {
                return Err("more events than the record's count");
            }
        }
    }
    if events.len() != total as usize {
        return Err("fewer events than the record's count");
    }
    if c.at != bytes.len() {
        return Err("trailing bytes after the last event");
    }
    first_position
        .checked_add(u64::from(total))
        .ok_or("position overflows")?;
    Ok(ParsedAppend {
        first_position,
        timestamp_us,
        groups,
        events,
    })
}

/// Decodes a body that was checked before (by `parse_append` or a value checksum).
pub(crate) fn body_at(bytes: &[u8]) -> Result<Body<'_>, &'static str> {
    read_body(&mut Cursor::new(bytes))
}

/// The `events.mdb` value of the event at `position`: header, the body as the WAL record
/// holds it, and a checksum over both seeded with the position (a value moved to another
/// key fails it too).
pub(crate) fn encode_value(
    out: &mut Vec<u8>,
    position: u64,
    stream_id: u64,
    version: u64,
    timestamp_us: u64,
    body: &[u8],
) {
    out.clear();
    out.reserve(VALUE_HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&stream_id.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&timestamp_us.to_le_bytes());
    out.extend_from_slice(body);
    let sum = xxh3_64_with_seed(out, position);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// An event value read back from `events.mdb`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value<'a> {
    pub(crate) stream_id: u64,
    pub(crate) version: u64,
    pub(crate) timestamp_us: u64,
    pub(crate) body: Body<'a>,
}

/// Checks a value's checksum and decodes it.
pub(crate) fn decode_value(position: u64, bytes: &[u8]) -> Result<Value<'_>, &'static str> {
    let split = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or("value shorter than its checksum")?;
    let (data, sum) = bytes.split_at(split);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if xxh3_64_with_seed(data, position) != u64::from_le_bytes(s) {
        return Err("event value checksum mismatch");
    }
    let mut c = Cursor::new(data);
    if c.u8()? != VALUE_FORMAT {
        return Err("unknown event value format");
    }
    let stream_id = c.u64()?;
    let version = c.u64()?;
    let timestamp_us = c.u64()?;
    let body = read_body(&mut c)?;
    if c.at != data.len() {
        return Err("trailing bytes in event value");
    }
    Ok(Value {
        stream_id,
        version,
        timestamp_us,
        body,
    })
}

/// Big-endian key of a position (keys sort by position).
pub(crate) fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Key of a stream index entry: stream id then version, both big-endian.
pub(crate) fn stream_key(stream_id: u64, version: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&stream_id.to_be_bytes());
    k[8..].copy_from_slice(&version.to_be_bytes());
    k
}

/// Reads a big-endian u64 key or a little-endian u64 value of exactly 8 bytes.
pub(crate) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Value of the `streams` database: stream id, then the number of events (the next version).
pub(crate) fn encode_stream(stream_id: u64, next_version: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&stream_id.to_le_bytes());
    v[8..].copy_from_slice(&next_version.to_le_bytes());
    v
}

/// Decodes a `streams` value.
pub(crate) fn decode_stream(bytes: &[u8]) -> Option<(u64, u64)> {
    let a: [u8; 16] = bytes.try_into().ok()?;
    let mut id = [0u8; 8];
    let mut next = [0u8; 8];
    id.copy_from_slice(&a[..8]);
    next.copy_from_slice(&a[8..]);
    Some((u64::from_le_bytes(id), u64::from_le_bytes(next)))
}

/// The WAL record of a consumer's cursor: format byte, position (u64 LE), name (UTF-8).
pub(crate) fn encode_consumer(name: &str, position: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + name.len());
    v.push(CONSUMER_FORMAT);
    v.extend_from_slice(&position.to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    v
}

/// Decodes [`encode_consumer`]'s bytes: the consumer's name and position.
pub(crate) fn parse_consumer(b: &[u8]) -> Result<(&str, u64), &'static str> {
    let (&format, rest) = b.split_first().ok_or("empty consumer record")?;
    if format != CONSUMER_FORMAT {
        return Err("unknown consumer record format");
    }
    let position = le_u64(rest).ok_or("consumer record too short")?;
    let name = std::str::from_utf8(&rest[8..]).map_err(|_| "consumer name is not UTF-8")?;
    if name.is_empty() {
        return Err("consumer record without a name");
    }
    Ok((name, position))
}

/// What a stream's deletion state says: versions below `hidden_before` are gone; a
/// tombstoned stream is gone whole and takes no more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamMeta {
    pub(crate) hidden_before: u64,
    pub(crate) tombstone: bool,
}

impl StreamMeta {
    /// Whether version `v` of the stream is hidden.
    pub(crate) fn hides(&self, v: u64) -> bool {
        self.tombstone || v < self.hidden_before
    }

    /// The `stream_meta` value: hidden_before (u64 LE), flags.
    pub(crate) fn encode(&self) -> [u8; 9] {
        let mut v = [0u8; 9];
        v[..8].copy_from_slice(&self.hidden_before.to_le_bytes());
        v[8] = if self.tombstone { META_TOMBSTONE } else { 0 };
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Option<StreamMeta> {
        let a: &[u8; 9] = b.try_into().ok()?;
        if a[8] & !META_TOMBSTONE != 0 {
            return None;
        }
        Some(StreamMeta {
            hidden_before: le_u64(&a[..8])?,
            tombstone: a[8] == META_TOMBSTONE,
        })
    }
}

/// The WAL record of a stream deletion: format, stream id (u64 LE), then the
/// [`StreamMeta`] value.
pub(crate) fn encode_stream_meta(stream_id: u64, meta: StreamMeta) -> [u8; 18] {
    let mut v = [0u8; 18];
    v[0] = STREAM_META_FORMAT;
    v[1..9].copy_from_slice(&stream_id.to_le_bytes());
    v[9..].copy_from_slice(&meta.encode());
    v
}

/// Decodes [`encode_stream_meta`]'s bytes.
pub(crate) fn parse_stream_meta(b: &[u8]) -> Result<(u64, StreamMeta), &'static str> {
    if b.len() != 18 {
        return Err("stream meta record is not 18 bytes");
    }
    if b[0] != STREAM_META_FORMAT {
        return Err("unknown stream meta record format");
    }
    let id = le_u64(&b[1..9]).ok_or("stream meta record too short")?;
    let meta = StreamMeta::decode(&b[9..]).ok_or("bad stream meta flags")?;
    Ok((id, meta))
}

/// A consumer's position as stored in `events.mdb` (`consumers`: name -> u64 LE).
pub(crate) fn decode_consumer_position(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes)
}

fn le_u64(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AppendRecord<'static> {
        let evs = [
            EventData::new("a", b"one").with_metadata(b"m"),
            EventData::new("bb", b"").with_id([7; 16]),
        ];
        let mut r = AppendRecord::new(42, 3, 2, 0);
        r.begin_group("s1", 2);
        r.push_event(&evs[0], &BodyPayload::Inline(evs[0].payload));
        r.push_event(&evs[1], &BodyPayload::Inline(evs[1].payload));
        r.begin_group("s2", 1);
        r.push_event(
            &evs[0],
            &BodyPayload::Blob {
                hash: BlobHash([9; 32]),
                len: 5000,
            },
        );
        r.set_first_position(100);
        r.set_group(0, 3, 10);
        r.set_group(1, 4, 0);
        r
    }

    #[test]
    fn append_record_round_trips() {
        let r = sample();
        let bytes = r.to_vec();
        assert_eq!(bytes.len(), r.len());
        let p = parse_append(&bytes).expect("parses");
        assert_eq!(p.first_position, 100);
        assert_eq!(p.timestamp_us, 42);
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.groups.len(), 2);
        assert_eq!((p.groups[0].stream_id, p.groups[0].first_version), (3, 10));
        assert_eq!((p.groups[1].stream_id, p.groups[1].first_version), (4, 0));
        assert_eq!(&bytes[p.groups[1].name.clone()], b"s2");
        assert_eq!(p.groups[1].first_event, 2);
        assert_eq!(r.groups[1].first_event, 2);
        let (s, l) = p.events[0];
        let b = body_at(&bytes[s as usize..(s + l) as usize]).expect("body");
        assert_eq!(b.event_type, "a");
        assert_eq!(b.payload, PayloadRef::Inline(b"one"));
        let (s, l) = p.events[1];
        let b = body_at(&bytes[s as usize..(s + l) as usize]).expect("body");
        assert_eq!(b.event_type, "bb");
        assert_eq!(b.id, Some([7; 16]));
        assert_eq!(b.payload, PayloadRef::Inline(b""));
        let (s, l) = p.events[2];
        let b = body_at(&bytes[s as usize..(s + l) as usize]).expect("body");
        assert_eq!(b.metadata, b"m");
        assert_eq!(
            b.payload,
            PayloadRef::Blob {
                hash: BlobHash([9; 32]),
                len: 5000
            }
        );
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_record_is_an_error_or_parses_to_the_same_shape() {
        let bytes = sample().to_vec();
        for cut in 0..bytes.len() {
            assert!(parse_append(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse_append(&longer).is_err());
        // Flips must never panic (the WAL's checksum catches them first in practice).
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = parse_append(&b);
        }
    }

    #[test]
    fn a_value_checks_its_checksum_and_position() {
        let bytes = sample().to_vec();
        let (s, l) = parse_append(&bytes).expect("parses").events[0];
        let body = &bytes[s as usize..(s + l) as usize];
        let mut v = Vec::new();
        encode_value(&mut v, 7, 3, 10, 42, body);
        let d = decode_value(7, &v).expect("decodes");
        assert_eq!((d.stream_id, d.version, d.timestamp_us), (3, 10, 42));
        assert_eq!(d.body.event_type, "a");
        assert_eq!(d.body.payload, PayloadRef::Inline(b"one"));
        assert!(decode_value(8, &v).is_err(), "another position");
        for i in 0..v.len() {
            let mut b = v.clone();
            b[i] ^= 1;
            assert!(decode_value(7, &b).is_err(), "flip at {i}");
        }
        assert!(decode_value(7, &v[..5]).is_err());
    }

    #[test]
    fn keys_sort_by_number() {
        assert!(position_key(255) < position_key(256));
        assert!(stream_key(1, 300) < stream_key(2, 0));
        assert!(stream_key(1, 255) < stream_key(1, 256));
        assert_eq!(be_u64(&position_key(99)), Some(99));
        assert_eq!(be_u64(&[1, 2]), None);
        assert_eq!(decode_stream(&encode_stream(5, 9)), Some((5, 9)));
        assert_eq!(decode_stream(&[0; 15]), None);
    }

    #[test]
    fn consumer_records_round_trip_and_bad_ones_are_refused() {
        let b = encode_consumer("projector", 0x0102_0304_0506_0708);
        assert_eq!(parse_consumer(&b), Ok(("projector", 0x0102_0304_0506_0708)));
        assert_eq!(b.len(), 1 + 8 + 9);
        assert!(parse_consumer(&[]).is_err());
        assert!(parse_consumer(&b[..8]).is_err(), "short position");
        assert!(parse_consumer(&b[..9]).is_err(), "no name");
        let mut other = b.clone();
        other[0] = 9;
        assert!(parse_consumer(&other).is_err(), "unknown format");
        let mut bad = b.clone();
        bad.push(0xff);
        assert!(parse_consumer(&bad).is_err(), "name not UTF-8");
        assert_eq!(decode_consumer_position(&7u64.to_le_bytes()), Some(7));
        assert_eq!(decode_consumer_position(&[1, 2, 3]), None);
    }

    #[test]
    fn stream_meta_records_round_trip_and_bad_ones_are_refused() {
        for meta in [
            StreamMeta {
                hidden_before: 0x0102_0304_0506_0708,
                tombstone: false,
            },
            StreamMeta {
                hidden_before: 9,
                tombstone: true,
            },
        ] {
            let b = encode_stream_meta(77, meta);
            assert_eq!(parse_stream_meta(&b), Ok((77, meta)));
            assert_eq!(StreamMeta::decode(&meta.encode()), Some(meta));
        }
        let b = encode_stream_meta(1, StreamMeta::default());
        assert!(parse_stream_meta(&b[..17]).is_err());
        let mut other = b;
        other[0] = 2;
        assert!(parse_stream_meta(&other).is_err());
        let mut flags = b;
        flags[17] = 2;
        assert!(parse_stream_meta(&flags).is_err());
        assert_eq!(StreamMeta::decode(&[0; 8]), None);
        let m = StreamMeta {
            hidden_before: 3,
            tombstone: false,
        };
        assert!(m.hides(2) && !m.hides(3));
        let t = StreamMeta {
            hidden_before: 3,
            tombstone: true,
        };
        assert!(t.hides(3) && t.hides(100));
    }

    /// The bytes of an append record and of an event value are the ones
    /// `docs/format.md` documents, field by field (the layout is the on-disk contract:
    /// a change here is a format change).
    #[test]
    fn records_and_values_have_the_documented_layout() {
        let evs = [
            EventData::new("ty", b"pay")
                .with_metadata(b"md")
                .with_id([5; 16]),
            EventData::new("t", b""),
        ];
        let mut r = AppendRecord::new(0x0102_0304_0506_0708, 2, 2, 0);
        r.begin_group("ab", 1);
        r.push_event(&evs[0], &BodyPayload::Inline(evs[0].payload));
        r.begin_group("c", 1);
        r.push_event(
            &evs[1],
            &BodyPayload::Blob {
                hash: BlobHash([9; 32]),
                len: 4096,
            },
        );
        r.set_first_position(77);
        r.set_group(0, 3, 10);
        r.set_group(1, 4, 0);

        let mut want = vec![1u8]; // format
        want.extend_from_slice(&77u64.to_le_bytes()); // first position
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes()); // timestamp
        want.extend_from_slice(&2u32.to_le_bytes()); // events
        want.extend_from_slice(&2u16.to_le_bytes()); // stream groups
        assert_eq!(want.len(), APPEND_HEADER_LEN);
        // Group 1: stream 3 from version 10, one event, name "ab".
        let group1 = want.len();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&10u64.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&2u16.to_le_bytes());
        want.extend_from_slice(b"ab");
        assert_eq!(want.len() - group1, AppendRecord::group_len("ab"));
        let body1 = want.len();
        want.push(FLAG_ID); // has an id, inline payload
        want.extend_from_slice(&[5; 16]);
        want.extend_from_slice(&2u16.to_le_bytes());
        want.extend_from_slice(b"ty");
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(b"md");
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(b"pay");
        assert_eq!(
            want.len() - body1,
            body_len(&evs[0], &BodyPayload::Inline(b"pay"))
        );
        // Group 2: stream 4 from version 0, one event, name "c", payload in the sidecar.
        want.extend_from_slice(&4u64.to_le_bytes());
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(b"c");
        let body2 = want.len();
        want.push(FLAG_BLOB);
        want.extend_from_slice(&1u16.to_le_bytes());
        want.extend_from_slice(b"t");
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&4096u64.to_le_bytes());
        want.extend_from_slice(&[9; 32]);
        assert_eq!(r.to_vec(), want);
        assert_eq!(r.len(), want.len());

        // The event value of the first event at position 77, as events.mdb stores it:
        // format, stream id, version, timestamp (u64 LE each), the body, then the xxh3 of
        // all that seeded with the position.
        let body = &want[body1..body2 - AppendRecord::group_len("c")];
        assert!(body_at(body).is_ok(), "exactly the first event's body");
        let mut value = Vec::new();
        encode_value(&mut value, 77, 3, 10, 0x0102_0304_0506_0708, body);
        let mut expect = vec![1u8];
        expect.extend_from_slice(&3u64.to_le_bytes());
        expect.extend_from_slice(&10u64.to_le_bytes());
        expect.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(expect.len(), VALUE_HEADER_LEN);
        expect.extend_from_slice(body);
        let sum = xxh3_64_with_seed(&expect, 77);
        expect.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(value, expect);
        assert_eq!(position_key(77), 77u64.to_be_bytes());
        assert_eq!(&stream_key(3, 10)[..8], 3u64.to_be_bytes());
        assert_eq!(&stream_key(3, 10)[8..], 10u64.to_be_bytes());
    }
}
