//! MySQL dates, times and durations, with TiDB's packed representation.
//!
//! TiDB stores DATE, DATETIME and TIMESTAMP as one packed `u64` (wire.md §5.4) and TIME as signed
//! nanoseconds. Sinks need the calendar fields and MySQL's text form, so [`Time`] keeps the
//! fields unpacked and checks their ranges when decoding: a packed value from the network with a
//! 14th month is an error here rather than a nonsense string downstream. The zero date
//! `0000-00-00` (and zero-in-date values such as `2024-00-00`) are valid, as MySQL allows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CodecError;

/// The largest fractional-seconds precision MySQL supports.
pub const MAX_FSP: u8 = 6;

/// Which SQL type a [`Time`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeKind {
    /// `DATE`: printed without a time part.
    Date,
    /// `DATETIME`.
    Datetime,
    /// `TIMESTAMP` (the fields are in UTC).
    Timestamp,
}

/// A DATE, DATETIME or TIMESTAMP value, unpacked.
///
/// Values built by [`Time::from_packed`] or parsed with [`FromStr`] have validated fields; a value
/// built by hand is trusted as is ([`Time::to_packed`] masks each field to its bit width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Time {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12 (0 only in zero dates).
    pub month: u8,
    /// Day of month, 0..=31 (0 only in zero dates).
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Microsecond, 0..1_000_000.
    pub microsecond: u32,
    /// The SQL type.
    pub kind: TimeKind,
    /// Fractional-seconds precision, 0..=6: how many fraction digits are printed.
    pub fsp: u8,
}

const TIME_WHAT: &str = "time";
const DURATION_WHAT: &str = "duration";

fn check_fsp(what: &'static str, fsp: u8) -> Result<(), CodecError> {
    if fsp > MAX_FSP {
        return Err(CodecError::invalid(what, format!("fsp {fsp} exceeds 6")));
    }
    Ok(())
}

impl Time {
    /// The zero value `0000-00-00 00:00:00` of a kind.
    pub fn zero(kind: TimeKind, fsp: u8) -> Time {
        Time {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            minute: 0,
            second: 0,
            microsecond: 0,
            kind,
            fsp,
        }
    }

    /// True for the zero value (all fields zero).
    pub fn is_zero(&self) -> bool {
        self.to_packed() == 0
    }

    /// Unpacks TiDB's packed `u64` (wire.md §5.4) and checks every field's range.
    pub fn from_packed(packed: u64, kind: TimeKind, fsp: u8) -> Result<Time, CodecError> {
        check_fsp(TIME_WHAT, fsp)?;
        let microsecond = (packed & 0xFF_FFFF) as u32;
        let ymdhms = packed >> 24;
        let ymd = ymdhms >> 17;
        let day = ymd & 31;
        let ym = ymd >> 5;
        let month = ym % 13;
        let year = ym / 13;
        let hms = ymdhms & 0x1_FFFF;
        let second = hms & 63;
        let minute = (hms >> 6) & 63;
        let hour = hms >> 12;
        if year > 9999 || hour > 23 || minute > 59 || second > 59 || microsecond >= 1_000_000 {
            return Err(CodecError::invalid(
                TIME_WHAT,
                format!(
                    "packed value {packed:#x} is out of range \
                     ({year}-{month}-{day} {hour}:{minute}:{second}.{microsecond})"
                ),
            ));
        }
        // Every field is range-checked above (month < 13, day < 32 by construction).
        Ok(Time {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            microsecond,
            kind,
            fsp,
        })
    }

    /// Packs the fields into TiDB's `u64` form.
    pub fn to_packed(&self) -> u64 {
        let ym = u64::from(self.year) * 13 + u64::from(self.month);
        let ymd = (ym << 5) | (u64::from(self.day) & 31);
        let hms = ((u64::from(self.hour) & 31) << 12)
            | ((u64::from(self.minute) & 63) << 6)
            | (u64::from(self.second) & 63);
        (((ymd << 17) | hms) << 24) | (u64::from(self.microsecond) & 0xFF_FFFF)
    }
}

/// Writes `.ffffff` truncated to `fsp` digits (nothing for fsp 0).
fn write_fraction(f: &mut fmt::Formatter<'_>, micros: u32, fsp: u8) -> fmt::Result {
    let fsp = usize::from(fsp.min(MAX_FSP));
    if fsp > 0 {
        let digits = format!("{:06}", micros % 1_000_000);
        write!(f, ".{}", &digits[..fsp])?;
    }
    Ok(())
}

impl fmt::Display for Time {
    /// MySQL's text form: `2024-01-31` for DATE, `2024-01-31 12:34:56[.ffffff]` otherwise, with
    /// as many fraction digits as `fsp` (truncated, not rounded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if self.kind != TimeKind::Date {
            write!(f, " {:02}:{:02}:{:02}", self.hour, self.minute, self.second)?;
            write_fraction(f, self.microsecond, self.fsp)?;
        }
        Ok(())
    }
}

/// Parses an unsigned decimal number of 1..=max_len ASCII digits.
fn parse_num(what: &'static str, s: &str, max_len: usize) -> Result<u32, CodecError> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodecError::invalid(what, format!("bad number {s:?}")));
    }
    s.parse()
        .map_err(|_| CodecError::invalid(what, format!("bad number {s:?}")))
}

/// Parses `.ffffff` (1..=6 digits) into microseconds and the number of digits.
fn parse_fraction(what: &'static str, frac: &str) -> Result<(u32, u8), CodecError> {
    let v = parse_num(what, frac, usize::from(MAX_FSP))?;
    let len = frac.len();
    let micros = v * 10u32.pow((6 - len) as u32);
    Ok((micros, len as u8))
}

impl FromStr for Time {
    type Err = CodecError;

    /// Parses `YYYY-MM-DD` (a DATE) or `YYYY-MM-DD HH:MM:SS[.f…]` (a DATETIME whose fsp is the
    /// number of fraction digits, at most 6; `T` is accepted as the separator). Set `kind`
    /// afterwards for a TIMESTAMP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || CodecError::invalid(TIME_WHAT, format!("not a date/time: {s:?}"));
        let (date, time) = match s.split_once([' ', 'T']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut parts = date.split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let mut t = Time::zero(TimeKind::Date, 0);
        t.year = parse_num(TIME_WHAT, y, 4)? as u16;
        t.month = parse_num(TIME_WHAT, m, 2)? as u8;
        t.day = parse_num(TIME_WHAT, d, 2)? as u8;
        if let Some(time) = time {
            t.kind = TimeKind::Datetime;
            let (hms, frac) = match time.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (time, None),
            };
            let mut parts = hms.split(':');
            let (Some(h), Some(mi), Some(se), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            t.hour = parse_num(TIME_WHAT, h, 2)? as u8;
            t.minute = parse_num(TIME_WHAT, mi, 2)? as u8;
            t.second = parse_num(TIME_WHAT, se, 2)? as u8;
            if let Some(frac) = frac {
                let (micros, fsp) = parse_fraction(TIME_WHAT, frac)?;
                t.microsecond = micros;
                t.fsp = fsp;
            }
        }
        // Re-validate every range through the packed form.
        Time::from_packed(t.to_packed(), t.kind, t.fsp).and_then(|back| {
            if back == t && t.month <= 12 && t.day <= 31 {
                Ok(back)
            } else {
                Err(bad())
            }
        })
    }
}

/// A TIME value: signed nanoseconds with a fractional-seconds precision.
///
/// MySQL's range is ±838:59:59; [`Duration::from_nanos`] accepts up to one second beyond it so
/// that fraction digits on the boundary are not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Duration {
    /// Signed nanoseconds.
    pub nanos: i64,
    /// Fractional-seconds precision, 0..=6.
    pub fsp: u8,
}

/// 838:59:59 in nanoseconds.
const MAX_DURATION_NANOS: i64 = (838 * 3600 + 59 * 60 + 59) * 1_000_000_000;

impl Duration {
    /// Builds a duration, checking `fsp <= 6` and the MySQL range (±838:59:59.999999999).
    pub fn from_nanos(nanos: i64, fsp: u8) -> Result<Duration, CodecError> {
        check_fsp(DURATION_WHAT, fsp)?;
        if nanos.unsigned_abs() >= (MAX_DURATION_NANOS as u64) + 1_000_000_000 {
            return Err(CodecError::invalid(
                DURATION_WHAT,
                format!("{nanos} ns is outside ±838:59:59"),
            ));
        }
        Ok(Duration { nanos, fsp })
    }
}

impl fmt::Display for Duration {
    /// MySQL's text form `[-]HH:MM:SS[.ffffff]`; hours may exceed 24 (up to 838).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        let abs = self.nanos.unsigned_abs();
        let secs = abs / 1_000_000_000;
        let micros = ((abs % 1_000_000_000) / 1_000) as u32;
        write!(
            f,
            "{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )?;
        write_fraction(f, micros, self.fsp)
    }
}

impl FromStr for Duration {
    type Err = CodecError;

    /// Parses `[-]H…:MM:SS[.f…]`; fsp is the number of fraction digits (at most 6).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || CodecError::invalid(DURATION_WHAT, format!("not a duration: {s:?}"));
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (hms, frac) = match body.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (body, None),
        };
        let mut parts = hms.split(':');
        let (Some(h), Some(m), Some(sec), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let h = i64::from(parse_num(DURATION_WHAT, h, 3)?);
        let m = i64::from(parse_num(DURATION_WHAT, m, 2)?);
        let sec = i64::from(parse_num(DURATION_WHAT, sec, 2)?);
        if m > 59 || sec > 59 {
            return Err(bad());
        }
        let (micros, fsp) = match frac {
            Some(frac) => parse_fraction(DURATION_WHAT, frac)?,
            None => (0, 0),
        };
        let abs = ((h * 3600 + m * 60 + sec) * 1_000_000 + i64::from(micros)) * 1_000;
        Duration::from_nanos(if negative { -abs } else { abs }, fsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packed_example() {
        // §5.4: ((((2024*13+1) << 5 | 31) << 17 | 12<<12 | 34<<6 | 56) << 24) | 789000.
        let packed: u64 = 0x19b2_7ec8_b80c_0a08;
        assert_eq!(packed, 1_851_681_797_349_050_888);
        let t = Time::from_packed(packed, TimeKind::Datetime, 6).unwrap();
        assert_eq!(
            (
                t.year,
                t.month,
                t.day,
                t.hour,
                t.minute,
                t.second,
                t.microsecond
            ),
            (2024, 1, 31, 12, 34, 56, 789_000)
        );
        assert_eq!(t.to_packed(), packed);
        assert_eq!(t.to_string(), "2024-01-31 12:34:56.789000");
        let t3 = Time { fsp: 3, ..t };
        assert_eq!(t3.to_string(), "2024-01-31 12:34:56.789");
        let t0 = Time { fsp: 0, ..t };
        assert_eq!(t0.to_string(), "2024-01-31 12:34:56");
        let d = Time::from_packed(packed & !((1u64 << 41) - 1), TimeKind::Date, 0);
        assert_eq!(d.unwrap().to_string(), "2024-01-31");
        assert_eq!("2024-01-31 12:34:56.789000".parse::<Time>().unwrap(), t);
        assert_eq!(
            "2024-01-31".parse::<Time>().unwrap().to_packed(),
            0x19b2_7e00_0000_0000
        );
    }

    #[test]
    fn zero_and_bad_packed() {
        let z = Time::from_packed(0, TimeKind::Datetime, 0).unwrap();
        assert_eq!(z.to_string(), "0000-00-00 00:00:00");
        assert!(z.is_zero());
        assert_eq!(
            Time::from_packed(0, TimeKind::Date, 0).unwrap().to_string(),
            "0000-00-00"
        );
        // usec = 1_000_000
        assert!(Time::from_packed(1_000_000, TimeKind::Datetime, 6).is_err());
        // hour 24
        assert!(Time::from_packed(24 << (12 + 24), TimeKind::Datetime, 0).is_err());
        // minute 60
        assert!(Time::from_packed(60 << (6 + 24), TimeKind::Datetime, 0).is_err());
        // year 10000
        assert!(Time::from_packed((10_000u64 * 13) << (5 + 17 + 24), TimeKind::Date, 0).is_err());
        // top bit set
        assert!(Time::from_packed(u64::MAX, TimeKind::Date, 0).is_err());
        assert!(Time::from_packed(0, TimeKind::Date, 7).is_err());
        assert!("2024-13-01".parse::<Time>().is_err());
        assert!("2024-01-01 25:00:00".parse::<Time>().is_err());
        assert!("2024-01".parse::<Time>().is_err());
    }

    #[test]
    fn durations() {
        let d = Duration::from_nanos(-((838 * 3600 + 59 * 60 + 59) * 1_000_000_000), 0).unwrap();
        assert_eq!(d.to_string(), "-838:59:59");
        let d = Duration::from_nanos(3_723_456_789_000, 6).unwrap();
        assert_eq!(d.to_string(), "01:02:03.456789");
        assert_eq!(Duration { fsp: 2, ..d }.to_string(), "01:02:03.45");
        assert_eq!("01:02:03.456789".parse::<Duration>().unwrap(), d);
        assert_eq!(
            "-838:59:59".parse::<Duration>().unwrap().nanos,
            -3_020_399_000_000_000
        );
        assert!(Duration::from_nanos(840 * 3600 * 1_000_000_000, 0).is_err());
        assert!(Duration::from_nanos(i64::MIN, 0).is_err());
        assert!(Duration::from_nanos(0, 9).is_err());
        assert!("1:60:00".parse::<Duration>().is_err());
    }

    proptest! {
        #[test]
        fn packed_round_trip(y in 0u16..=9999, mo in 0u8..=12, d in 0u8..=31, h in 0u8..24,
                             mi in 0u8..60, s in 0u8..60, us in 0u32..1_000_000, fsp in 0u8..=6) {
            let t = Time { year: y, month: mo, day: d, hour: h, minute: mi, second: s,
                           microsecond: us, kind: TimeKind::Timestamp, fsp };
            let back = Time::from_packed(t.to_packed(), TimeKind::Timestamp, fsp).unwrap();
            prop_assert_eq!(back, t);
            if fsp == 6 {
                prop_assert_eq!(t.to_string().parse::<Time>().unwrap(),
                                Time { kind: TimeKind::Datetime, ..t });
            }
        }

        #[test]
        fn duration_text_round_trip(us in -3_020_399_999_999i64..=3_020_399_999_999) {
            let d = Duration::from_nanos(us * 1000, 6).unwrap();
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }

        #[test]
        fn random_never_panics(p in any::<u64>(), fsp in any::<u8>(), s in ".{0,30}") {
            let _ = Time::from_packed(p, TimeKind::Datetime, fsp);
            let _ = Duration::from_nanos(p as i64, fsp);
            let _ = s.parse::<Time>();
            let _ = s.parse::<Duration>();
        }
    }
}
