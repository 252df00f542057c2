//! DATE/DATETIME/TIMESTAMP and TIME: `Time::from_packed`, the text parsers and printers.
//!
//! Bytes 0..8 are a packed `u64` (little-endian), byte 8 the kind and fsp. Properties:
//! * an unpacked time packs back to exactly the same `u64` (the packed form is canonical);
//! * a DATETIME with fsp 6 prints as text that parses back to the same time;
//! * any text that parses as a time or a duration prints as text that parses to the same value;
//! * `Duration::from_nanos` accepts exactly the MySQL range and prints parseable text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_model::time::{Duration, Time, TimeKind};

fuzz_target!(|data: &[u8]| {
    if let Some((packed, rest)) = data.split_first_chunk::<8>() {
        let packed = u64::from_le_bytes(*packed);
        let sel = rest.first().copied().unwrap_or(0);
        let kind = match sel % 3 {
            0 => TimeKind::Date,
            1 => TimeKind::Datetime,
            _ => TimeKind::Timestamp,
        };
        let fsp = (sel >> 2) % 8; // 7 is invalid
        if let Ok(t) = Time::from_packed(packed, kind, fsp) {
            assert!(fsp <= 6);
            assert_eq!(t.to_packed(), packed, "packed time round trip");
            assert_eq!(t.is_zero(), packed == 0);
            let text = t.to_string();
            if kind == TimeKind::Datetime && fsp == 6 {
                assert_eq!(
                    text.parse::<Time>().as_ref(),
                    Ok(&t),
                    "datetime text {text:?}"
                );
            }
        }
        if let Ok(d) = Duration::from_nanos(packed as i64, fsp) {
            let text = d.to_string();
            let back: Duration = text.parse().expect("a duration's text parses");
            assert_eq!(back.fsp, fsp);
            // The text keeps microseconds, truncated to fsp digits.
            assert!(
                back.nanos.abs_diff(d.nanos) < 1_000_000_000,
                "{text:?} vs {d:?}"
            );
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = s.parse::<Time>() {
            let text = t.to_string();
            assert_eq!(
                text.parse::<Time>().as_ref(),
                Ok(&t),
                "time text round trip {s:?}"
            );
        }
        if let Ok(d) = s.parse::<Duration>() {
            let text = d.to_string();
            assert_eq!(
                text.parse::<Duration>().as_ref(),
                Ok(&d),
                "duration text round trip {s:?}"
            );
        }
    }
});
