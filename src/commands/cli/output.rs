//! What `tidal cli` prints, shaped like `cdc cli`'s output so that scripts parsing it work.
//!
//! `cdc cli` does not print the API documents as they come: `list` wraps each changefeed as
//! `{"id","keyspace","summary":{"state","tso","checkpoint","error"}}`, and a full `query` renames
//! `checkpoint_ts` to `checkpoint_tso` and shows `create_time` as a `JSONTime`. The structs here
//! fix those shapes (and field order) in one place. Sink URIs are masked again before printing,
//! whatever the server did, so a password never reaches a terminal or a log.

use serde::Serialize;
use serde_json::Value;
use tidal_control::api::models::{ChangeFeedInfoModel, ChangefeedCommonInfo, RunningErrorModel};

/// The list item of `cdc cli changefeed list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ListItem {
    pub id: String,
    pub keyspace: String,
    pub summary: Summary,
}

/// `summary` of a list item (TiCDC's `owner.ChangefeedResp`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub state: String,
    pub tso: u64,
    pub checkpoint: String,
    /// Always null for a `normal` changefeed.
    pub error: Option<RunningErrorModel>,
}

impl ListItem {
    pub(crate) fn from_api(c: &ChangefeedCommonInfo) -> Self {
        ListItem {
            id: c.id.clone(),
            keyspace: c.keyspace.clone(),
            summary: Summary {
                state: c.state.clone(),
                tso: c.checkpoint_tso,
                checkpoint: c.checkpoint_time.clone(),
                error: if c.state == "normal" {
                    None
                } else {
                    c.error.clone()
                },
            },
        }
    }
}

/// The document of `cdc cli changefeed query` (TiCDC's `cfMeta`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct QueryDetail {
    pub upstream_id: u64,
    pub id: String,
    pub keyspace: String,
    pub sink_uri: String,
    pub config: Option<Value>,
    pub create_time: String,
    pub start_ts: u64,
    pub resolved_ts: u64,
    pub target_ts: u64,
    pub checkpoint_tso: u64,
    pub checkpoint_time: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunningErrorModel>,
    pub creator_version: String,
}

impl QueryDetail {
    pub(crate) fn from_api(d: &ChangeFeedInfoModel) -> Self {
        QueryDetail {
            upstream_id: d.upstream_id,
            id: d.id.clone(),
            keyspace: d.keyspace.clone(),
            sink_uri: mask_sink_uri(&d.sink_uri),
            config: d.config.clone(),
            create_time: json_time_from_rfc3339(&d.create_time),
            start_ts: d.start_ts,
            resolved_ts: d.resolved_ts,
            target_ts: d.target_ts,
            checkpoint_tso: d.checkpoint_ts,
            checkpoint_time: d.checkpoint_time.clone(),
            state: d.state.clone(),
            error: d.error.clone(),
            creator_version: d.creator_version.clone(),
        }
    }
}

/// A sink URI with its password replaced by `xxxxx`.
pub(crate) fn mask_sink_uri(uri: &str) -> String {
    tidal_sinks::uri::mask_password(uri)
}

/// A changefeed info document ready to print: the sink URI masked.
pub(crate) fn masked_info(mut info: ChangeFeedInfoModel) -> ChangeFeedInfoModel {
    info.sink_uri = mask_sink_uri(&info.sink_uri);
    info
}

/// Pretty JSON with a trailing newline, like Go's `json.MarshalIndent(v, "", "  ")`.
pub(crate) fn pretty<T: Serialize>(v: &T) -> String {
    match serde_json::to_string_pretty(v) {
        Ok(s) => s + "\n",
        Err(e) => format!("{{\"error\": \"cannot encode output: {e}\"}}\n"),
    }
}

/// Compact JSON, like Go's `json.Marshal`.
pub(crate) fn compact<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode output: {e}\"}}"))
}

/// Turns the RFC 3339 UTC time the server writes (`2024-05-20T10:11:12.123Z`) into a
/// `JSONTime` (`2024-05-20 10:11:12.123`). Anything else is returned unchanged: a time with a
/// zone offset is better shown as is than converted wrongly.
pub(crate) fn json_time_from_rfc3339(s: &str) -> String {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let shape_ok = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !shape_ok || !matches!(b.last(), Some(b'Z' | b'z')) {
        return s.to_string();
    }
    let (Some(date), Some(clock)) = (s.get(0..10), s.get(11..19)) else {
        return s.to_string();
    };
    let Some(rest) = s.get(19..s.len().saturating_sub(1)) else {
        return s.to_string();
    };
    let frac = match rest.strip_prefix('.') {
        None if rest.is_empty() => "",
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => f,
        _ => return s.to_string(),
    };
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push('0');
    }
    format!("{date} {clock}.{ms}")
}

/// One difference between two JSON documents, printed like the changelog `cdc cli changefeed
/// update` shows (`{Type:update Path:[target_ts] From:0 To:5}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub kind: &'static str,
    pub path: Vec<String>,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| match v {
            None => "<nil>".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        write!(
            f,
            "{{Type:{} Path:[{}] From:{} To:{}}}",
            self.kind,
            self.path.join(" "),
            show(&self.from),
            show(&self.to)
        )
    }
}

/// The leaf-level differences from `old` to `new`, in key order (arrays compared whole).
pub(crate) fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_into(&mut Vec::new(), old, new, &mut out);
    out
}

fn diff_into(path: &mut Vec<String>, old: &Value, new: &Value, out: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(k.clone());
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(path, x, y, out),
                    (Some(x), None) => out.push(Change {
                        kind: "delete",
                        path: path.clone(),
                        from: Some(x.clone()),
                        to: None,
                    }),
                    (None, Some(y)) => out.push(Change {
                        kind: "create",
                        path: path.clone(),
                        from: None,
                        to: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
                path.pop();
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(Change {
            kind: "update",
            path: path.clone(),
            from: Some(x.clone()),
            to: Some(y.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_times() {
        assert_eq!(
            json_time_from_rfc3339("2024-05-20T10:11:12.123Z"),
            "2024-05-20 10:11:12.123"
        );
        assert_eq!(
            json_time_from_rfc3339("2024-05-20T10:11:12Z"),
            "2024-05-20 10:11:12.000"
        );
        assert_eq!(
            json_time_from_rfc3339("2024-05-20T10:11:12.5Z"),
            "2024-05-20 10:11:12.500"
        );
        assert_eq!(
            json_time_from_rfc3339("2024-05-20T10:11:12.123456789Z"),
            "2024-05-20 10:11:12.123"
        );
        // offsets and garbage are passed through, never panicking
        for s in [
            "2024-05-20T10:11:12+08:00",
            "2024-05-20T10:11:12.Z",
            "",
            "Z",
            "é",
            "2024-05-20T10:11:1éZ",
        ] {
            assert_eq!(json_time_from_rfc3339(s), s);
        }
    }

    #[test]
    fn list_item_shape() {
        let c = ChangefeedCommonInfo {
            upstream_id: 7,
            id: "cf-1".into(),
            keyspace: "default".into(),
            state: "stopped".into(),
            checkpoint_tso: 449_843_373_428_998_145,
            checkpoint_time: "2024-05-20 02:11:12.123".into(),
            error: None,
        };
        assert_eq!(
            pretty(&vec![ListItem::from_api(&c)]),
            r#"[
  {
    "id": "cf-1",
    "keyspace": "default",
    "summary": {
      "state": "stopped",
      "tso": 449843373428998145,
      "checkpoint": "2024-05-20 02:11:12.123",
      "error": null
    }
  }
]
"#
        );
    }

    #[test]
    fn normal_changefeeds_hide_warnings() {
        let c = ChangefeedCommonInfo {
            upstream_id: 0,
            id: "cf".into(),
            keyspace: "default".into(),
            state: "normal".into(),
            checkpoint_tso: 1,
            checkpoint_time: String::new(),
            error: Some(RunningErrorModel {
                time: String::new(),
                addr: String::new(),
                code: "CDC:ErrX".into(),
                message: "m".into(),
            }),
        };
        assert_eq!(ListItem::from_api(&c).summary.error, None);
        let mut w = c.clone();
        w.state = "warning".into();
        assert_eq!(
            ListItem::from_api(&w).summary.error.map(|e| e.code),
            Some("CDC:ErrX".to_string())
        );
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask_sink_uri("mysql://root:secret@127.0.0.1:3306/"),
            "mysql://root:xxxxx@127.0.0.1:3306/"
        );
        assert_eq!(mask_sink_uri("blackhole://"), "blackhole://");
    }

    #[test]
    fn diffs() {
        let old = json!({"target_ts": 0, "sink_uri": "a", "config": {"x": 1, "y": [1, 2]}});
        let new = json!({"target_ts": 5, "sink_uri": "a", "config": {"y": [1], "z": true}});
        let d: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            d,
            vec![
                "{Type:delete Path:[config x] From:1 To:<nil>}",
                "{Type:update Path:[config y] From:[1,2] To:[1]}",
                "{Type:create Path:[config z] From:<nil> To:true}",
                "{Type:update Path:[target_ts] From:0 To:5}",
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
