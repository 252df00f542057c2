//! Go's `time.Duration` text form, parsed and printed the way Go does it.
//!
//! TiCDC's users write durations in Go syntax everywhere: changefeed configs (`"10m0s"`) and
//! sink URI parameters (`flush-interval=5s`, `read-timeout=2m`). Both the control plane and the
//! sinks read that syntax, so it lives here once, with one rule for what is accepted: an optional
//! sign, then one or more `<number><unit>` groups (`1h30m`, `1.5s`, `.5s`), units `ns`, `us`/`µs`/
//! `μs`, `ms`, `s`, `m`, `h`, or the bare `0`. Values are exact integers of nanoseconds (no
//! floating point), and anything outside `i64` nanoseconds is refused rather than wrapped.

use std::time::Duration;

/// Formats nanoseconds like Go's `time.Duration.String()` (`"10m0s"`, `"1h30m0s"`, `"1.5s"`,
/// `"500ms"`, `"1.5µs"`, `"0s"`, `"-2s"`).
pub fn format_go_duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (unit, div, width) = if u < 1_000 {
            ("ns", 1, 0)
        } else if u < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        return format!("{sign}{}{}{unit}", u / div, frac_digits(u % div, width));
    }
    let secs = u / 1_000_000_000;
    let frac = frac_digits(u % 1_000_000_000, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}{frac}s")
    } else {
        format!("{sign}{s}{frac}s")
    }
}

/// `.ddd` for a fraction `frac` of `width` decimal digits, trailing zeros dropped (empty when
/// nothing is left).
fn frac_digits(mut frac: u64, mut width: u32) -> String {
    while width > 0 && frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    if width == 0 {
        String::new()
    } else {
        format!(".{frac:0width$}", width = width as usize)
    }
}

/// Parses a Go duration string (`"1h30m"`, `"10m0s"`, `"1.5s"`, `"300ms"`, `"-2s"`, `"0"`) into
/// nanoseconds; `None` if malformed or outside `i64` nanoseconds. No white space is trimmed.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = rest.get(..int_len)?;
        rest = rest.get(int_len..)?;
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = r.get(..n)?;
            rest = r.get(n..)?;
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit: i128 = match rest.get(..unit_len)? {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = rest.get(unit_len..)?;
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = int.checked_mul(unit)?;
        let mut scale = unit;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            value = value.checked_add(i128::from(d - b'0').checked_mul(scale)?)?;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok()
}

/// Parses a non-negative Go duration (as [`parse_go_duration`], but with no sign at all) into a
/// [`Duration`]: what a timeout or an interval parameter accepts. `None` for anything else.
pub fn parse_go_std_duration(s: &str) -> Option<Duration> {
    if s.starts_with(['-', '+']) {
        return None;
    }
    let ns = u64::try_from(parse_go_duration(s)?).ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signed_nanoseconds() {
        for (ns, s) in [
            (0i64, "0s"),
            (600_000_000_000, "10m0s"),
            (86_400_000_000_000, "24h0m0s"),
            (5_400_000_000_000, "1h30m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500, "1.5µs"),
            (7, "7ns"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(format_go_duration(ns), s);
            assert_eq!(parse_go_duration(s), Some(ns), "{s}");
        }
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_go_duration("+3us"), Some(3_000));
        assert_eq!(parse_go_duration("3μs"), Some(3_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("-"), None);
        assert_eq!(parse_go_duration("1y"), None);
        assert_eq!(parse_go_duration("99999999999h"), None);
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Some(i64::MIN));
        assert_eq!(parse_go_duration("9223372036854775808ns"), None);
    }

    #[test]
    fn std_durations() {
        let d = parse_go_std_duration;
        assert_eq!(d("5s"), Some(Duration::from_secs(5)));
        assert_eq!(d("2m"), Some(Duration::from_secs(120)));
        assert_eq!(d("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("5"), None);
        assert_eq!(d("s"), None);
        assert_eq!(d("."), None);
        assert_eq!(d("-5s"), None);
        assert_eq!(d("-0s"), None);
        assert_eq!(d("+5s"), None);
        assert_eq!(d("3d"), None);
        assert_eq!(d("1.2.3s"), None);
        assert_eq!(d(" 5s"), None);
        assert_eq!(d("99999999999999999999h"), None);
        assert_eq!(d("1e400h"), None);
        assert_eq!(d(""), None);
    }

    proptest! {
        #[test]
        fn round_trip(ns in any::<i64>()) {
            prop_assert_eq!(parse_go_duration(&format_go_duration(ns)), Some(ns));
        }

        #[test]
        fn std_round_trip(ns in 0..=i64::MAX) {
            let expected = Duration::from_nanos(u64::try_from(ns).unwrap());
            prop_assert_eq!(parse_go_std_duration(&format_go_duration(ns)), Some(expected));
        }

        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = parse_go_duration(&s);
            let _ = parse_go_std_duration(&s);
        }
    }
}
