//! Exact decimals in TiDB's (MySQL's) binary form.
//!
//! MySQL allows 65 significant digits, more than any machine integer holds, and a sink must be
//! able to print a DECIMAL(65,30) exactly as the database would. So a [`Decimal`] keeps its
//! digits as text: a sign, the integer digits and the fraction digits, with the scale (number of
//! fraction digits) preserved, so `1.50` stays `1.50`. The binary form (`MyDecimal.WriteBin`) is
//! what TiDB writes into rows and keys: digits grouped nine to a big-endian word, negative values
//! bit-inverted, and the top bit of the first byte flipped so that the bytes sort like the values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CodecError;

/// The most digits MySQL allows in a DECIMAL.
pub const MAX_PRECISION: u8 = 65;
/// The most fraction digits MySQL allows in a DECIMAL.
pub const MAX_FRAC: u8 = 30;

/// Digits per 4-byte word of the binary form.
const DIGITS_PER_WORD: usize = 9;
/// Bytes needed for a partial group of 0..=9 digits.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
/// Powers of ten up to 10^9.
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

const WHAT: &str = "decimal";

/// An exact decimal value with up to 65 integer digits and up to 30 fraction digits.
///
/// The value is canonical: the integer part has no leading zeros (it is `"0"` when zero) and
/// zero is never negative. The scale is kept, so `1.5` and `1.50` are different values of this
/// type (they print differently, as MySQL prints them). Serialized as its text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal {
    /// True for values below zero.
    negative: bool,
    /// Integer digits, ASCII, no leading zeros, `"0"` for zero.
    int_digits: String,
    /// Fraction digits, ASCII; its length is the scale.
    frac_digits: String,
}

/// Size in bytes of the binary form of a DECIMAL(precision, frac).
///
/// Fails unless `1 <= precision <= 65`, `frac <= 30` and `frac <= precision`.
pub fn decimal_bin_size(precision: u8, frac: u8) -> Result<usize, CodecError> {
    if precision == 0 || precision > MAX_PRECISION || frac > MAX_FRAC || frac > precision {
        return Err(CodecError::invalid(
            WHAT,
            format!("bad precision/frac ({precision},{frac})"),
        ));
    }
    let intg = usize::from(precision - frac);
    let frac = usize::from(frac);
    Ok((intg / DIGITS_PER_WORD) * 4
        + DIG2BYTES[intg % DIGITS_PER_WORD]
        + (frac / DIGITS_PER_WORD) * 4
        + DIG2BYTES[frac % DIGITS_PER_WORD])
}

impl Decimal {
    /// The value zero with scale 0.
    pub fn zero() -> Decimal {
        Decimal {
            negative: false,
            int_digits: "0".to_string(),
            frac_digits: String::new(),
        }
    }

    /// Builds a canonical decimal from a sign and digit strings (ASCII digits only).
    fn from_parts(negative: bool, int_digits: &str, frac_digits: &str) -> Decimal {
        let trimmed = int_digits.trim_start_matches('0');
        let int_digits = if trimmed.is_empty() { "0" } else { trimmed };
        let is_zero = int_digits == "0" && frac_digits.bytes().all(|b| b == b'0');
        Decimal {
            negative: negative && !is_zero,
            int_digits: int_digits.to_string(),
            frac_digits: frac_digits.to_string(),
        }
    }

    /// True for values below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// True for zero (at any scale).
    pub fn is_zero(&self) -> bool {
        self.int_digits == "0" && self.frac_digits.bytes().all(|b| b == b'0')
    }

    /// The number of fraction digits.
    pub fn scale(&self) -> u8 {
        // The constructors keep the fraction at most MAX_FRAC digits.
        u8::try_from(self.frac_digits.len()).unwrap_or(u8::MAX)
    }

    /// The integer digits (no sign, no leading zeros; `"0"` when the integer part is zero).
    pub fn int_digits(&self) -> &str {
        &self.int_digits
    }

    /// The fraction digits (as many as the scale).
    pub fn frac_digits(&self) -> &str {
        &self.frac_digits
    }

    /// The smallest (precision, frac) that holds this value exactly, as MySQL computes it:
    /// significant integer digits plus the scale, at least 1.
    pub fn precision_and_frac(&self) -> (u8, u8) {
        let int_len = if self.int_digits == "0" {
            0
        } else {
            self.int_digits.len()
        };
        let frac = self.scale();
        let prec = (int_len + usize::from(frac)).max(1);
        (u8::try_from(prec).unwrap_or(u8::MAX), frac)
    }

    /// Decodes the binary form of a DECIMAL(precision, frac) from the start of `bytes`.
    ///
    /// Returns the value (with scale `frac`) and the number of bytes consumed.
    pub fn from_bin(bytes: &[u8], precision: u8, frac: u8) -> Result<(Decimal, usize), CodecError> {
        let size = decimal_bin_size(precision, frac)?;
        CodecError::ensure_len(WHAT, bytes, size)?;
        let mut buf = bytes.get(..size).unwrap_or_default().to_vec();
        let first = buf
            .first_mut()
            .ok_or_else(|| CodecError::invalid(WHAT, "empty binary form"))?;
        let negative = *first & 0x80 == 0;
        *first ^= 0x80;
        if negative {
            for b in &mut buf {
                *b ^= 0xFF;
            }
        }
        let intg = usize::from(precision - frac);
        let frac = usize::from(frac);
        let mut pos = 0usize;
        let mut int_digits = String::with_capacity(intg);
        let mut frac_digits = String::with_capacity(frac);
        let lead = intg % DIGITS_PER_WORD;
        if lead > 0 {
            read_group(&buf, &mut pos, lead, &mut int_digits)?;
        }
        for _ in 0..intg / DIGITS_PER_WORD {
            read_group(&buf, &mut pos, DIGITS_PER_WORD, &mut int_digits)?;
        }
        for _ in 0..frac / DIGITS_PER_WORD {
            read_group(&buf, &mut pos, DIGITS_PER_WORD, &mut frac_digits)?;
        }
        let trail = frac % DIGITS_PER_WORD;
        if trail > 0 {
            read_group(&buf, &mut pos, trail, &mut frac_digits)?;
        }
        Ok((
            Decimal::from_parts(negative, &int_digits, &frac_digits),
            size,
        ))
    }

    /// Encodes the value as the binary form of a DECIMAL(precision, frac).
    ///
    /// The value is rounded (half away from zero) or zero-padded to `frac` fraction digits. Fails
    /// if (precision, frac) is invalid or the integer part needs more than `precision - frac`
    /// digits.
    pub fn to_bin(&self, precision: u8, frac: u8) -> Result<Vec<u8>, CodecError> {
        let size = decimal_bin_size(precision, frac)?;
        let rounded = self.round(frac);
        let intg = usize::from(precision - frac);
        let int_len = if rounded.int_digits == "0" {
            0
        } else {
            rounded.int_digits.len()
        };
        if int_len > intg {
            return Err(CodecError::invalid(
                WHAT,
                format!("{self} does not fit DECIMAL({precision},{frac})"),
            ));
        }
        let mut int_padded = "0".repeat(intg - int_len);
        if int_len > 0 {
            int_padded.push_str(&rounded.int_digits);
        }
        let mut out = Vec::with_capacity(size);
        let lead = intg % DIGITS_PER_WORD;
        let (lead_digits, int_words) = int_padded.split_at(lead);
        if lead > 0 {
            write_group(&mut out, lead_digits);
        }
        for word in int_words.as_bytes().chunks(DIGITS_PER_WORD) {
            write_group(&mut out, std::str::from_utf8(word).unwrap_or("0"));
        }
        for chunk in rounded.frac_digits.as_bytes().chunks(DIGITS_PER_WORD) {
            write_group(&mut out, std::str::from_utf8(chunk).unwrap_or("0"));
        }
        if rounded.negative {
            for b in &mut out {
                *b ^= 0xFF;
            }
        }
        if let Some(first) = out.first_mut() {
            *first ^= 0x80;
        }
        debug_assert_eq!(out.len(), size);
        Ok(out)
    }

    /// Rounds (half away from zero) or zero-pads to exactly `frac` fraction digits.
    pub fn round(&self, frac: u8) -> Decimal {
        let frac = usize::from(frac);
        if self.frac_digits.len() <= frac {
            let mut f = self.frac_digits.clone();
            f.push_str(&"0".repeat(frac - self.frac_digits.len()));
            return Decimal::from_parts(self.negative, &self.int_digits, &f);
        }
        let round_up = self
            .frac_digits
            .as_bytes()
            .get(frac)
            .is_some_and(|&d| d >= b'5');
        let mut digits: Vec<u8> = self.int_digits.bytes().collect();
        digits.extend_from_slice(self.frac_digits.as_bytes().get(..frac).unwrap_or_default());
        if round_up {
            let mut carry = true;
            for d in digits.iter_mut().rev() {
                if *d == b'9' {
                    *d = b'0';
                } else {
                    *d += 1;
                    carry = false;
                    break;
                }
            }
            if carry {
                digits.insert(0, b'1');
            }
        }
        let split = digits.len() - frac;
        let (i, f) = digits.split_at(split);
        Decimal::from_parts(
            self.negative,
            std::str::from_utf8(i).unwrap_or("0"),
            std::str::from_utf8(f).unwrap_or(""),
        )
    }

    /// Decodes a row-v2 DECIMAL column: `precision u8, frac u8`, then the binary form, which must
    /// fill the rest of `bytes`. Returns the value, the precision and the frac.
    pub fn decode_column(bytes: &[u8]) -> Result<(Decimal, u8, u8), CodecError> {
        CodecError::ensure_len(WHAT, bytes, 2)?;
        let (head, rest) = bytes.split_at(2);
        let (precision, frac) = (head[0], head[1]);
        let (value, used) = Decimal::from_bin(rest, precision, frac)?;
        if used != rest.len() {
            return Err(CodecError::invalid(
                WHAT,
                format!("{} trailing bytes after the value", rest.len() - used),
            ));
        }
        Ok((value, precision, frac))
    }

    /// Encodes a row-v2 DECIMAL column: `precision u8, frac u8`, then the binary form.
    pub fn encode_column(&self, precision: u8, frac: u8) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![precision, frac];
        out.extend(self.to_bin(precision, frac)?);
        Ok(out)
    }
}

/// Reads one group of `digits` digits (a full word or a partial group) from the unmasked bytes.
fn read_group(
    buf: &[u8],
    pos: &mut usize,
    digits: usize,
    out: &mut String,
) -> Result<(), CodecError> {
    let n = DIG2BYTES[digits];
    let end = pos.checked_add(n).unwrap_or(usize::MAX);
    let bytes = buf
        .get(*pos..end)
        .ok_or_else(|| CodecError::invalid(WHAT, "binary form shorter than its size"))?;
    let value = bytes.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    if value >= POW10[digits] {
        return Err(CodecError::invalid(
            WHAT,
            format!("digit group {value} exceeds {digits} digits"),
        ));
    }
    out.push_str(&format!("{value:0digits$}"));
    *pos = end;
    Ok(())
}

/// Writes one group of digits (1..=9 ASCII digits) big-endian in its byte size.
fn write_group(out: &mut Vec<u8>, digits: &str) {
    let value = digits
        .bytes()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let n = DIG2BYTES[digits.len().min(DIGITS_PER_WORD)];
    let be = value.to_be_bytes();
    out.extend_from_slice(&be[4 - n..]);
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.int_digits)?;
        if !self.frac_digits.is_empty() {
            f.write_str(".")?;
            f.write_str(&self.frac_digits)?;
        }
        Ok(())
    }
}

impl FromStr for Decimal {
    type Err = CodecError;

    /// Parses `[+-]digits[.digits]` (either side of the point may be empty, not both), at most
    /// 65 integer digits and 30 fraction digits, surrounding ASCII whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !all_digits(int_part)
            || !all_digits(frac_part)
        {
            return Err(CodecError::invalid(WHAT, format!("not a decimal: {s:?}")));
        }
        let int_trimmed = int_part.trim_start_matches('0');
        if int_trimmed.len() > usize::from(MAX_PRECISION) || frac_part.len() > usize::from(MAX_FRAC)
        {
            return Err(CodecError::invalid(WHAT, format!("too many digits: {s:?}")));
        }
        Ok(Decimal::from_parts(negative, int_trimmed, frac_part))
    }
}

impl From<Decimal> for String {
    fn from(d: Decimal) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Decimal {
    type Error = CodecError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<i64> for Decimal {
    fn from(v: i64) -> Decimal {
        Decimal::from_parts(v < 0, &v.unsigned_abs().to_string(), "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn wire_example() {
        let v = d("1234567890.1234");
        let bin = v.to_bin(14, 4).unwrap();
        assert_eq!(hex::encode(&bin), "810dfb38d204d2");
        let (back, used) = Decimal::from_bin(&bin, 14, 4).unwrap();
        assert_eq!(used, 7);
        assert_eq!(back.to_string(), "1234567890.1234");
        assert_eq!(decimal_bin_size(14, 4).unwrap(), 7);
    }

    #[test]
    fn negative_and_zero() {
        let bin = d("-1234567890.1234").to_bin(14, 4).unwrap();
        assert_eq!(hex::encode(&bin), "7ef204c72dfb2d");
        let (back, _) = Decimal::from_bin(&bin, 14, 4).unwrap();
        assert_eq!(back.to_string(), "-1234567890.1234");

        let zero = d("0").to_bin(5, 2).unwrap();
        assert_eq!(hex::encode(&zero), "800000");
        assert_eq!(
            Decimal::from_bin(&zero, 5, 2).unwrap().0.to_string(),
            "0.00"
        );
        assert_eq!(d("-0.00").to_string(), "0.00");
        assert!(!d("-0.00").is_negative());
        // -1.5 in DECIMAL(2,1): int group 1 byte (1), frac group 1 byte (5), inverted, top flipped.
        assert_eq!(hex::encode(d("-1.5").to_bin(2, 1).unwrap()), "7efa");
    }

    #[test]
    fn rounding_and_overflow() {
        assert_eq!(
            hex::encode(d("1.25").to_bin(3, 1).unwrap()),
            hex::encode(d("1.3").to_bin(3, 1).unwrap())
        );
        assert_eq!(d("9.95").round(1).to_string(), "10.0");
        assert_eq!(d("-9.95").round(1).to_string(), "-10.0");
        assert_eq!(d("1.2").round(3).to_string(), "1.200");
        assert!(d("10.0").to_bin(2, 1).is_err());
        assert!(d("9.95").to_bin(2, 1).is_err());
        assert!(d("0.5").to_bin(1, 1).is_ok());
    }

    #[test]
    fn sixty_five_digits() {
        let s = format!("-{}.{}", "9".repeat(35), "1".repeat(30));
        let v = d(&s);
        let bin = v.to_bin(65, 30).unwrap();
        assert_eq!(bin.len(), decimal_bin_size(65, 30).unwrap());
        assert_eq!(bin.len(), 30);
        let (back, used) = Decimal::from_bin(&bin, 65, 30).unwrap();
        assert_eq!(used, 30);
        assert_eq!(back.to_string(), s);
        let int65 = "12345678901234567890123456789012345678901234567890123456789012345";
        let bin = d(int65).to_bin(65, 0).unwrap();
        assert_eq!(Decimal::from_bin(&bin, 65, 0).unwrap().0.to_string(), int65);
    }

    #[test]
    fn bad_inputs() {
        assert!(decimal_bin_size(0, 0).is_err());
        assert!(decimal_bin_size(66, 0).is_err());
        assert!(decimal_bin_size(40, 31).is_err());
        assert!(decimal_bin_size(3, 4).is_err());
        assert!(Decimal::from_bin(&[0x81, 0x0d], 14, 4).is_err());
        // A full word of 0xFFFFFFFF-ish (after unmasking) exceeds 999999999.
        assert!(Decimal::from_bin(&[0x80, 0xff, 0xff, 0xff, 0xff], 10, 0).is_err());
        // A one-digit partial group holding 10.
        assert!(Decimal::from_bin(&[0x8a], 1, 0).is_err());
        assert!(Decimal::decode_column(&[14]).is_err());
        assert!(Decimal::decode_column(&[70, 0, 0x80]).is_err());
        assert!("1.2.3".parse::<Decimal>().is_err());
        assert!("".parse::<Decimal>().is_err());
        assert!(".".parse::<Decimal>().is_err());
        assert!("1e5".parse::<Decimal>().is_err());
    }

    #[test]
    fn column_form() {
        let col = d("-12.340").encode_column(5, 3).unwrap();
        assert_eq!(col[..2], [5, 3]);
        let (v, p, f) = Decimal::decode_column(&col).unwrap();
        assert_eq!((v.to_string().as_str(), p, f), ("-12.340", 5, 3));
        let mut long = col.clone();
        long.push(0);
        assert!(Decimal::decode_column(&long).is_err());
    }

    #[test]
    fn serde_as_text() {
        let v = d("-3.140");
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(j, "\"-3.140\"");
        assert_eq!(serde_json::from_str::<Decimal>(&j).unwrap(), v);
    }

    fn arb_decimal() -> impl Strategy<Value = (Decimal, u8, u8)> {
        (1u8..=65)
            .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
            .prop_flat_map(|(p, f)| {
                (
                    Just(p),
                    Just(f),
                    any::<bool>(),
                    proptest::string::string_regex(&format!("[0-9]{{0,{}}}", p - f)).unwrap(),
                    proptest::string::string_regex(&format!("[0-9]{{{f}}}")).unwrap(),
                )
            })
            .prop_map(|(p, f, neg, i, fr)| (Decimal::from_parts(neg, &i, &fr), p, f))
    }

    proptest! {
        #[test]
        fn bin_round_trip((v, p, f) in arb_decimal()) {
            let bin = v.to_bin(p, f).unwrap();
            prop_assert_eq!(bin.len(), decimal_bin_size(p, f).unwrap());
            let (back, used) = Decimal::from_bin(&bin, p, f).unwrap();
            prop_assert_eq!(used, bin.len());
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(back.to_string().parse::<Decimal>().unwrap(), v);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), p in any::<u8>(), f in any::<u8>()) {
            let _ = Decimal::from_bin(&bytes, p, f);
            let _ = Decimal::decode_column(&bytes);
        }
    }
}
