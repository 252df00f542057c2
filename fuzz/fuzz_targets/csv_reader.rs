//! The csv file reader (`parse_csv_records`, `parse_csv_rows`).
//!
//! Two halves, chosen by the first input bit:
//! * raw: arbitrary bytes under an arbitrary (valid or not) configuration and column list must
//!   parse or fail cleanly, with a consistent complete part (`complete_len <= len`, `torn_tail`
//!   exactly "bytes follow", the complete part alone giving the same records);
//! * round trip: arbitrary records (text, numbers, NULLs) written with the sink's own
//!   `CsvWriter` under a valid configuration must read back as the same fields, and every
//!   prefix of that file must read as the records that end within it (a torn tail is never
//!   taken for a record).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidal_sinks::encode::csv::{BinaryEncoding, CsvConfig, CsvField, CsvWriter};
use tidal_sinks::encode::reader::{CsvColumn, RawField, parse_csv_records, parse_csv_rows};

const DELIMS: [&str; 6] = [",", "|", ";", "\t", "|#|", "ab"];
const QUOTES: [&str; 3] = ["\"", "'", ""];
const TERMS: [&str; 2] = ["\r\n", "\n"];

#[derive(Debug, Arbitrary)]
enum Field {
    Text(Vec<u8>),
    Number(u32),
    Null,
}

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    delim: u8,
    quote: u8,
    term: u8,
    records: Vec<Vec<Field>>,
    cut: u16,
}

fn config_from(u: &mut Unstructured<'_>) -> arbitrary::Result<CsvConfig> {
    Ok(CsvConfig {
        delimiter: String::arbitrary(u)?,
        quote: String::arbitrary(u)?,
        null: String::arbitrary(u)?,
        include_commit_ts: bool::arbitrary(u)?,
        output_old_value: bool::arbitrary(u)?,
        binary_encoding: if bool::arbitrary(u)? {
            BinaryEncoding::Hex
        } else {
            BinaryEncoding::Base64
        },
        terminator: String::arbitrary(u)?,
    })
}

fn raw(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let config = if bool::arbitrary(u)? {
        CsvConfig::default()
    } else {
        config_from(u)?
    };
    let columns: Vec<CsvColumn> = (0..u.int_in_range(0..=4)?)
        .map(|i| {
            Ok(CsvColumn {
                name: format!("c{i}"),
                binary: bool::arbitrary(u)?,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    let file = u.bytes(u.len())?;
    if let Ok(d) = parse_csv_records(file, &config) {
        assert!(d.complete_len <= file.len());
        assert_eq!(d.torn_tail, d.complete_len < file.len());
        let complete = parse_csv_records(&file[..d.complete_len], &config)
            .expect("the complete part of a parsed file parses");
        assert_eq!(complete.items, d.items, "complete part gives other records");
        assert!(!complete.torn_tail);
    }
    if let Ok(rows) = parse_csv_rows(file, &config, &columns) {
        assert!(rows.complete_len <= file.len());
        for r in &rows.items {
            assert_eq!(r.data.len(), columns.len());
        }
    }
    Ok(())
}

fn round_trip(input: RoundTrip) {
    let config = CsvConfig {
        delimiter: DELIMS[usize::from(input.delim) % DELIMS.len()].to_string(),
        quote: QUOTES[usize::from(input.quote) % QUOTES.len()].to_string(),
        terminator: TERMS[usize::from(input.term) % TERMS.len()].to_string(),
        ..CsvConfig::default()
    };
    if config.validate().is_err() {
        return;
    }
    let mut out = Vec::new();
    let mut ends = Vec::new();
    let mut want: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
    for rec in &input.records {
        if rec.is_empty() {
            continue; // a record has at least one field
        }
        let mut w = CsvWriter::new(&config);
        let mut values = Vec::new();
        for f in rec {
            let (field, value) = match f {
                Field::Text(b) => (CsvField::Text(b.clone()), Some(b.clone())),
                Field::Number(n) => (
                    CsvField::Bare(n.to_string()),
                    Some(n.to_string().into_bytes()),
                ),
                Field::Null => (CsvField::Null, None),
            };
            w.field(&field, &mut out);
            values.push(value);
        }
        w.end(&mut out);
        ends.push(out.len());
        want.push(values);
    }
    let d = parse_csv_records(&out, &config).expect("the writer's output parses");
    let got: Vec<Vec<Option<Vec<u8>>>> = d
        .items
        .iter()
        .map(|r| r.iter().map(RawField::value).collect())
        .collect();
    assert_eq!(got, want, "csv round trip under {config:?}");
    assert_eq!(d.complete_len, out.len());
    assert!(!d.torn_tail);

    // Any prefix reads as the records that end within it.
    let cut = usize::from(input.cut) % (out.len() + 1);
    let p = parse_csv_records(&out[..cut], &config).expect("a prefix of valid csv parses");
    let n = ends.iter().take_while(|&&e| e <= cut).count();
    assert_eq!(
        p.items.len(),
        n,
        "prefix of {cut} bytes read {} records",
        p.items.len()
    );
    assert_eq!(p.complete_len, if n == 0 { 0 } else { ends[n - 1] });
    assert_eq!(p.torn_tail, p.complete_len < cut);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    if sel & 1 == 0 {
        let _ = raw(&mut u);
    } else if let Ok(input) = RoundTrip::arbitrary_take_rest(u) {
        round_trip(input);
    }
});
