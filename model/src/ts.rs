//! [`Ts`]: a TiDB/PD timestamp (TSO).
//!
//! Every commit, every resolved ts and every checkpoint in Tidal is a PD timestamp: milliseconds
//! since the Unix epoch shifted left by 18 bits, plus an 18-bit logical counter (wire.md §7).
//! Wrapping the `u64` in a type keeps timestamps from being mixed up with other integers, and
//! gives logs a readable form (`2023-11-14 22:13:20.000`) next to the raw number that operators
//! paste into TiDB.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Bits of the logical part of a timestamp.
pub const PHYSICAL_SHIFT_BITS: u32 = 18;
/// Mask of the logical part.
pub const LOGICAL_MASK: u64 = (1 << PHYSICAL_SHIFT_BITS) - 1;

/// A PD timestamp: `(physical_ms << 18) | logical`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ts(pub u64);

impl Ts {
    /// The smallest timestamp.
    pub const ZERO: Ts = Ts(0);
    /// The largest timestamp.
    pub const MAX: Ts = Ts(u64::MAX);

    /// Builds a timestamp from Unix milliseconds and a logical counter; the logical part is
    /// truncated to 18 bits and physical bits beyond 46 are dropped.
    pub const fn compose(physical_ms: u64, logical: u64) -> Ts {
        Ts((physical_ms << PHYSICAL_SHIFT_BITS) | (logical & LOGICAL_MASK))
    }

    /// The timestamp at the start of Unix millisecond `ms` (logical 0).
    pub const fn from_unix_millis(ms: u64) -> Ts {
        Ts::compose(ms, 0)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> PHYSICAL_SHIFT_BITS
    }

    /// The logical counter.
    pub const fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// How far `self` is behind `now`, in milliseconds: `now.physical − self.physical`.
    /// Negative when `self` is ahead of `now`.
    pub const fn lag_ms(self, now: Ts) -> i64 {
        // Physical parts are below 2^46, so both fit in an i64.
        (now.physical_ms() as i64).wrapping_sub(self.physical_ms() as i64)
    }

    /// The previous timestamp, saturating at [`Ts::ZERO`].
    pub const fn prev(self) -> Ts {
        Ts(self.0.saturating_sub(1))
    }

    /// The next timestamp, saturating at [`Ts::MAX`].
    pub const fn next(self) -> Ts {
        Ts(self.0.saturating_add(1))
    }
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day).
///
/// Works in 400-year eras counted from 0000-03-01, so that the leap day ends each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    const DAYS_PER_ERA: i64 = 146_097;
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z.rem_euclid(DAYS_PER_ERA); // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Ts {
    /// Formats the physical part as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.physical_ms();
        let days = (ms / 86_400_000) as i64; // < 2^46, fits
        let ms_of_day = ms % 86_400_000;
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s, milli) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03}")
    }
}

impl fmt::Debug for Ts {
    /// Shows the raw number, the UTC time and the logical counter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ts({}, {}, logical {})", self.0, self, self.logical())
    }
}

impl FromStr for Ts {
    type Err = std::num::ParseIntError;

    /// Parses a plain decimal `u64`, as TiDB prints timestamps.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Ts)
    }
}

impl From<u64> for Ts {
    fn from(v: u64) -> Self {
        Ts(v)
    }
}

impl From<Ts> for u64 {
    fn from(ts: Ts) -> Self {
        ts.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_example() {
        let ts = Ts::compose(1_700_000_000_000, 5);
        assert_eq!(ts, Ts(445_644_800_000_000_005));
        assert_eq!(ts.physical_ms(), 1_700_000_000_000);
        assert_eq!(ts.logical(), 5);
        assert_eq!(ts.to_string(), "2023-11-14 22:13:20.000");
        assert_eq!(
            format!("{ts:?}"),
            "Ts(445644800000000005, 2023-11-14 22:13:20.000, logical 5)"
        );
        assert_eq!("445644800000000005".parse::<Ts>().unwrap(), ts);
        assert!("-1".parse::<Ts>().is_err());
        assert!("abc".parse::<Ts>().is_err());
        assert_eq!(serde_json::to_string(&ts).unwrap(), "445644800000000005");
        assert_eq!(
            serde_json::from_str::<Ts>("445644800000000005").unwrap(),
            ts
        );
    }

    #[test]
    fn display_dates() {
        assert_eq!(Ts::ZERO.to_string(), "1970-01-01 00:00:00.000");
        // Leap day and millisecond formatting.
        assert_eq!(
            Ts::from_unix_millis(951_782_400_123).to_string(),
            "2000-02-29 00:00:00.123"
        );
        assert_eq!(
            Ts::from_unix_millis(1_709_251_199_999).to_string(),
            "2024-02-29 23:59:59.999"
        );
        assert_eq!(
            Ts::from_unix_millis(4_102_444_800_000).to_string(),
            "2100-01-01 00:00:00.000"
        );
        assert_eq!(Ts::MAX.to_string(), "4199-11-24 01:22:57.663");
    }

    #[test]
    fn lag_and_steps() {
        let a = Ts::compose(1_000, 7);
        let b = Ts::compose(3_500, 0);
        assert_eq!(a.lag_ms(b), 2_500);
        assert_eq!(b.lag_ms(a), -2_500);
        assert_eq!(Ts::ZERO.prev(), Ts::ZERO);
        assert_eq!(Ts::MAX.next(), Ts::MAX);
        assert_eq!(a.next().logical(), 8);
        assert_eq!(Ts::compose(1, LOGICAL_MASK + 3).logical(), 2);
        assert_eq!(Ts::MAX.lag_ms(Ts::ZERO), -((1i64 << 46) - 1));
    }

    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        // Independent check: count days year by year from 1970.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0i64;
        for yy in 1970..y {
            days += if leap(yy) { 366 } else { 365 };
        }
        let month_days = [
            31,
            if leap(y) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        for md in month_days.iter().take((m - 1) as usize) {
            days += md;
        }
        days + i64::from(d) - 1
    }

    proptest! {
        #[test]
        fn civil_matches_naive(days in 0i64..200_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn compose_round_trip(p in 0u64..(1 << 46), l in 0u64..(1 << 18)) {
            let ts = Ts::compose(p, l);
            prop_assert_eq!((ts.physical_ms(), ts.logical()), (p, l));
            prop_assert_eq!(ts.to_string().parse::<Ts>().ok(), None);
            prop_assert_eq!(ts.0.to_string().parse::<Ts>().unwrap(), ts);
        }
    }
}
