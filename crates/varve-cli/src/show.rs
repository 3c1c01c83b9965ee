//! Rendering: byte sizes, timestamps, payloads (UTF-8 or hex), events as text or JSON.

use serde_json::{Value, json};
use varve_engine::{EventPayload, RecordedEvent};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// `n` bytes in the largest binary unit that keeps it at least 1 ("1.5 MiB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Microseconds since the Unix epoch as an RFC 3339 UTC time with microseconds.
pub fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's
/// algorithm, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Bytes as text: a quoted, escaped string when they are UTF-8, `hex:...` otherwise.
pub fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("hex:{}", hex(b)),
    }
}

/// Bytes as JSON: `{"utf8": "..."}` when they are UTF-8, `{"hex": "..."}` otherwise.
pub fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => json!({ "utf8": s }),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

/// A name as text: as it is when it is plain, quoted when it has spaces, quotes or
/// control characters (so that every line splits unambiguously on spaces).
pub fn name(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

/// A payload as one event line shows it: its bytes (`body`, when they were read or are
/// inline), or a reference to a sidecar blob.
pub fn payload_text(p: &EventPayload, body: Option<&[u8]>) -> String {
    match (p, body) {
        (_, Some(b)) => bytes_text(b),
        (EventPayload::Inline(b), None) => bytes_text(b),
        (EventPayload::Blob { hash, len }, None) => format!("blob:sha256:{hash}:{len}"),
    }
}

/// A payload as JSON: see [`bytes_json`], or `{"blob": {"sha256": ..., "len": ...}}`.
pub fn payload_json(p: &EventPayload, body: Option<&[u8]>) -> Value {
    match (p, body) {
        (_, Some(b)) => bytes_json(b),
        (EventPayload::Inline(b), None) => bytes_json(b),
        (EventPayload::Blob { hash, len }, None) => {
            json!({ "blob": { "sha256": hash.to_string(), "len": len } })
        }
    }
}

/// One event as one line of text: position, stream@version, type, time, payload, then
/// `meta=` and `id=` when present.
pub fn event_text(e: &RecordedEvent, body: Option<&[u8]>) -> String {
    let mut s = format!(
        "{} {}@{} {} {} {}",
        e.position,
        name(&e.stream),
        e.version,
        name(&e.event_type),
        timestamp(e.timestamp_us),
        payload_text(&e.payload, body)
    );
    if !e.metadata.is_empty() {
        s.push_str(" meta=");
        s.push_str(&bytes_text(&e.metadata));
    }
    if let Some(id) = e.id {
        s.push_str(" id=");
        s.push_str(&hex(&id));
    }
    s
}

/// One event as a JSON object.
pub fn event_json(e: &RecordedEvent, body: Option<&[u8]>) -> Value {
    json!({
        "position": e.position,
        "stream": &*e.stream,
        "version": e.version,
        "type": e.event_type,
        "timestamp_us": e.timestamp_us,
        "time": timestamp(e.timestamp_us),
        "payload_len": e.payload.len(),
        "payload": payload_json(&e.payload, body),
        "metadata": if e.metadata.is_empty() { Value::Null } else { bytes_json(&e.metadata) },
        "id": e.id.map(|id| hex(&id)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use varve_engine::BlobHash;

    #[test]
    fn hex_and_sizes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        // The largest unit is PiB.
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789012
        assert_eq!(
            timestamp(951_827_696_789_012),
            "2000-02-29T12:34:56.789012Z"
        );
        assert_eq!(
            timestamp(1_709_251_199_000_001),
            "2024-02-29T23:59:59.000001Z"
        );
        assert_eq!(
            timestamp(1_735_689_600_000_000),
            "2025-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            timestamp(4_107_542_400_000_000),
            "2100-03-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn payloads_are_utf8_when_valid_hex_otherwise_and_blobs_by_reference() {
        assert_eq!(bytes_text(b"a\"b\n"), r#""a\"b\n""#);
        assert_eq!(bytes_text(&[0xff, 0x00]), "hex:ff00");
        assert_eq!(bytes_json(b"hi"), json!({"utf8": "hi"}));
        assert_eq!(bytes_json(&[0xc3]), json!({"hex": "c3"}));
        let blob = EventPayload::Blob {
            hash: BlobHash([0xab; 32]),
            len: 4096,
        };
        assert_eq!(
            payload_text(&blob, None),
            format!("blob:sha256:{}:4096", "ab".repeat(32))
        );
        assert_eq!(payload_text(&blob, Some(b"x")), "\"x\"");
        assert_eq!(
            payload_json(&blob, None),
            json!({"blob": {"sha256": "ab".repeat(32), "len": 4096}})
        );
    }

    #[test]
    fn names_are_quoted_only_when_they_would_split_a_line() {
        assert_eq!(name("order-17"), "order-17");
        assert_eq!(name("a b"), "\"a b\"");
        assert_eq!(name("a\tb"), "\"a\\tb\"");
        assert_eq!(name("q\""), "\"q\\\"\"");
        assert_eq!(name(""), "\"\"");
    }

    #[test]
    fn an_event_line_has_every_field() {
        let e = RecordedEvent {
            position: 7,
            stream: Arc::from("s 1"),
            version: 2,
            event_type: "paid".into(),
            metadata: b"m".to_vec(),
            payload: EventPayload::Inline(b"{}".to_vec()),
            timestamp_us: 0,
            id: Some([1; 16]),
        };
        assert_eq!(
            event_text(&e, None),
            format!(
                "7 \"s 1\"@2 paid 1970-01-01T00:00:00.000000Z \"{{}}\" meta=\"m\" id={}",
                "01".repeat(16)
            )
        );
        let j = event_json(&e, None);
        assert_eq!(j["position"], 7);
        assert_eq!(j["stream"], "s 1");
        assert_eq!(j["version"], 2);
        assert_eq!(j["type"], "paid");
        assert_eq!(j["payload"], json!({"utf8": "{}"}));
        assert_eq!(j["payload_len"], 2);
        assert_eq!(j["metadata"], json!({"utf8": "m"}));
        assert_eq!(j["id"], "01".repeat(16));
    }
}
