//! The canal-json file reader (`parse_canal_json`, `parse_canal_json_rows`).
//!
//! Byte 0 picks the terminator (CRLF, as TiCDC writes, or LF); the rest is a file. Properties
//! beyond "no panic":
//! * the complete part is consistent: `complete_len <= len`, `torn_tail` is exactly "bytes
//!   follow the complete part", and parsing only the complete part gives the same records with
//!   no torn tail;
//! * `parse_canal_json_rows` keeps exactly the row records;
//! * the decoded records, written back as canal-json (every column typed `blob`, its bytes as
//!   ISO-8859-1 characters, so any bytes survive), parse to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_sinks::encode::reader::{
    CanalRecord, DecodedRow, RowOp, Value, parse_canal_json, parse_canal_json_rows,
};

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn row_obj(cols: &[(String, Value)]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|(n, v)| {
            let v = match v {
                None => "null".to_string(),
                Some(b) => js(&latin1(b)),
            };
            format!("{}:{v}", js(n))
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn write_row(r: &DecodedRow) -> String {
    let kind = match r.op {
        RowOp::Insert => "INSERT",
        RowOp::Update => "UPDATE",
        RowOp::Delete => "DELETE",
    };
    let mut names: Vec<&str> = r.data.iter().map(|(n, _)| n.as_str()).collect();
    names.extend(r.old.iter().flatten().map(|(n, _)| n.as_str()));
    let types: Vec<String> = names
        .iter()
        .map(|n| format!("{}:\"blob\"", js(n)))
        .collect();
    let mut s = format!(
        "{{\"database\":{},\"table\":{},\"isDdl\":false,\"type\":\"{kind}\",\"mysqlType\":{{{}}},\"data\":[{}]",
        js(&r.schema),
        js(&r.table),
        types.join(","),
        row_obj(&r.data)
    );
    if let Some(old) = &r.old {
        s.push_str(&format!(",\"old\":[{}]", row_obj(old)));
    }
    if let Some(ts) = r.commit_ts {
        s.push_str(&format!(",\"_tidb\":{{\"commitTs\":{ts}}}"));
    }
    s.push('}');
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let term = if sel & 1 == 0 { "\r\n" } else { "\n" };
    let Ok(d) = parse_canal_json(file, term) else {
        let _ = parse_canal_json_rows(file, term);
        return;
    };
    assert!(d.complete_len <= file.len());
    assert_eq!(d.torn_tail, d.complete_len < file.len());
    let complete = parse_canal_json(&file[..d.complete_len], term)
        .expect("the complete part of a parsed file parses");
    assert_eq!(complete.items, d.items, "complete part gives other records");
    assert!(!complete.torn_tail);
    assert_eq!(complete.complete_len, d.complete_len);

    let rows = parse_canal_json_rows(file, term).expect("rows parse where records do");
    let want: Vec<&DecodedRow> = d
        .items
        .iter()
        .filter_map(|r| match r {
            CanalRecord::Row(row) => Some(row),
            CanalRecord::Ddl(_) => None,
        })
        .collect();
    assert_eq!(rows.items.iter().collect::<Vec<_>>(), want);

    // Write the records back and read them again.
    let mut out = String::new();
    for r in &d.items {
        match r {
            CanalRecord::Row(row) => out.push_str(&write_row(row)),
            CanalRecord::Ddl(ddl) => {
                out.push_str(&format!(
                    "{{\"database\":{},\"table\":{},\"isDdl\":true,\"type\":{}",
                    js(&ddl.schema),
                    js(&ddl.table),
                    js(&ddl.kind)
                ));
                if let Some(ts) = ddl.commit_ts {
                    out.push_str(&format!(",\"_tidb\":{{\"commitTs\":{ts}}}"));
                }
                out.push('}');
            }
        }
        out.push_str(term);
    }
    let again = parse_canal_json(out.as_bytes(), term).expect("re-written canal-json parses");
    assert_eq!(again.items, d.items, "canal-json round trip");
    assert!(!again.torn_tail);
});
