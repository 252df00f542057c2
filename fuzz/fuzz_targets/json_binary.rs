//! TiDB binary JSON: `Json::from_binary` / `decode_column`, `to_serde`, `from_serde`, `to_text`
//! and the text parser.
//!
//! Byte 0 is the type code (half the time folded onto the valid ones), the rest the value.
//! Properties beyond "no panic":
//! * the column form round-trips byte for byte (`encode_column` ∘ `decode_column`);
//! * a value that converts to serde converts back (`from_serde`) to a value with the same serde
//!   form (binary → serde → binary → serde is stable);
//! * the text form of a valid value parses, and the parsed value prints the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidal_model::json::Json;

/// Equal, except that floats may differ in the last place: serde_json's default float parser
/// (without its `float_roundtrip` feature) can be one ULP off, so printed floats do not always
/// read back bit-exact (reported; see docs/FUZZING.md).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && close(x, y))
        }
        _ => a == b,
    }
}

const CODES: [u8; 12] = [
    0x01, 0x03, 0x04, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,
];

fuzz_target!(|data: &[u8]| {
    let Some((&tc, bytes)) = data.split_first() else {
        return;
    };
    let tc = if tc & 0x80 != 0 {
        CODES[usize::from(tc & 0x7f) % CODES.len()]
    } else {
        tc
    };
    let Ok(j) = Json::from_binary(tc, bytes) else {
        // The text parser gets the raw bytes too.
        if let Ok(s) = std::str::from_utf8(data)
            && let Ok(j) = s.parse::<Json>()
        {
            let text = j.to_text().expect("a parsed value prints");
            let again: Json = text.parse().expect("printed text parses");
            let (Ok(a), Ok(b)) = (j.to_serde(), again.to_serde()) else {
                panic!("a parsed value has no serde form");
            };
            assert!(close(&a, &b), "text form not stable: {text}");
        }
        return;
    };

    let col = j.encode_column();
    assert_eq!(
        Json::decode_column(&col).as_ref(),
        Ok(&j),
        "column form round trip"
    );

    if let Ok(v) = j.to_serde() {
        let j2 = Json::from_serde(&v).expect("a serde value from binary JSON re-encodes");
        let v2 = j2.to_serde().expect("from_serde output converts back");
        assert_eq!(v, v2, "binary → serde → binary changed the value");
    }

    if let Ok(text) = j.to_text() {
        assert_eq!(j.to_string(), text);
        let parsed: Json = text.parse().expect("the text of a valid value parses");
        let text2 = parsed.to_text().expect("a parsed value prints");
        let parsed2: Json = text2.parse().expect("printed text parses");
        let (a, b) = (parsed.to_serde(), parsed2.to_serde());
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("a parsed value has no serde form");
        };
        assert!(close(&a, &b), "text form not stable: {text2}");
    }
});
