//! DECIMAL: `Decimal::from_bin` with every (precision, frac), `decode_column`, and the text
//! parser.
//!
//! Bytes 0 and 1 are precision and frac, the rest the binary form. Properties:
//! * a decoded value re-encodes with the same (precision, frac) and decodes to the same value,
//!   consuming exactly `decimal_bin_size` bytes;
//! * its text form parses back to the same value;
//! * the column form (`encode_column` ∘ `decode_column`) is stable;
//! * any text that parses prints as text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_model::decimal::{Decimal, decimal_bin_size};

fuzz_target!(|data: &[u8]| {
    let [p, f, bin @ ..] = data else {
        return;
    };
    // Fold most bytes onto valid (precision, frac) pairs; keep raw ones for the error paths.
    let (p, f) = if p & 0x80 != 0 {
        let p = 1 + (p & 0x7f) % 65;
        (p, f % (p.min(30) + 1))
    } else {
        (*p, *f)
    };
    if let Ok((d, used)) = Decimal::from_bin(bin, p, f) {
        assert_eq!(Ok(used), decimal_bin_size(p, f));
        let enc = d
            .to_bin(p, f)
            .expect("a decoded value re-encodes with its own type");
        assert_eq!(enc.len(), used);
        let (d2, used2) = Decimal::from_bin(&enc, p, f).expect("re-encoded value decodes");
        assert_eq!(used2, used);
        assert_eq!(d2, d, "decimal binary round trip");
        let text = d.to_string();
        assert_eq!(
            text.parse::<Decimal>().as_ref(),
            Ok(&d),
            "decimal text round trip"
        );
        assert_eq!(usize::from(d.scale()), usize::from(f));
        let (dp, df) = d.precision_and_frac();
        assert!(dp >= df);
        let _ = d.round(f / 2);
    }
    let mut col = vec![p, f];
    col.extend_from_slice(bin);
    if let Ok((d, cp, cf)) = Decimal::decode_column(&col) {
        assert_eq!((cp, cf), (p, f));
        let enc = d.encode_column(cp, cf).expect("column re-encodes");
        assert_eq!(Decimal::decode_column(&enc), Ok((d, cp, cf)));
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = s.parse::<Decimal>()
    {
        let text = d.to_string();
        assert_eq!(
            text.parse::<Decimal>().as_ref(),
            Ok(&d),
            "text round trip of {s:?}"
        );
        let (dp, df) = d.precision_and_frac();
        if let Ok(bin) = d.to_bin(dp, df) {
            let (back, _) = Decimal::from_bin(&bin, dp, df).expect("to_bin output decodes");
            assert_eq!(back, d, "value at its own precision changed in binary");
        }
    }
});
