//! The Grafana dashboard (`deploy/grafana/tidal.json`) and the PromQL quoted in
//! `docs/OPERATIONS.md` may only query series that [`Metrics`] really exports, with labels those
//! series really carry.
//!
//! A renamed metric or label otherwise fails silently: the panel goes blank, the alert never
//! fires, and nobody notices until the day it was needed. So this test builds a [`Metrics`],
//! touches every label set a running changefeed touches (the metrics updater's owner gauges, the
//! coordinator's sink counters, span-lag histograms and checksum states, the GC manager's safe
//! points), encodes the exposition, and checks every selector of every query against it: the
//! metric name must be a sample name of the exposition (a `# TYPE` family, or a histogram's
//! `_bucket`/`_sum`/`_count`), every label matcher must name a label of that series, and every
//! `by (...)` / `on (...)` label must exist on a series of the same expression.
//!
//! The PromQL scanner is deliberately small: it only has to find metric names, label matchers
//! and grouping labels, skipping strings, ranges, numbers, functions, keywords and Grafana
//! variables. Its own tests below pin that it finds exactly those.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tidal_control::metrics::{ChecksumState, Metrics};

const DASHBOARD: &str = include_str!("../../deploy/grafana/tidal.json");
const OPERATIONS: &str = include_str!("../../docs/OPERATIONS.md");

/// Labels Prometheus attaches at scrape time; queries may use them on any series.
const SCRAPE_LABELS: &[&str] = &["instance", "job", "__name__"];

// ---------------------------------------------------------------------------------------------
// The exposition of a running node.

/// A [`Metrics`] with every label set a running changefeed touches, as the code touches them.
fn running_metrics() -> Metrics {
    let m = Metrics::new();
    // MetricsUpdater::refresh, for a running changefeed.
    m.owner_status
        .with_label_values(&["default", "cf-1", "0"])
        .set(0);
    m.owner_checkpoint_ts
        .with_label_values(&["default", "cf-1"])
        .set(1.7e12);
    m.owner_checkpoint_ts_lag
        .with_label_values(&["default", "cf-1", "0"])
        .set(1.5);
    m.owner_resolved_ts
        .with_label_values(&["default", "cf-1"])
        .set(1.7e12);
    m.owner_resolved_ts_lag
        .with_label_values(&["default", "cf-1"])
        .set(0.5);
    // The coordinator's publish_metrics (sink counters, checksum states, span lags) and the
    // sink-side helpers.
    m.record_sink_batches("default", "cf-1", "mysql", 1, 10, 1000);
    m.record_sink_error("default", "cf-1", "dml");
    m.set_checksum_state("cf-1", 0, ChecksumState::Match);
    m.set_checksum_state("cf-1", 1, ChecksumState::Mismatch);
    m.observe_span_lags("default", "cf-1", 0.2, 1.2);
    // GcManager::tick.
    m.set_gc_safe_points(1_700_000_000_000, 1_699_999_999_000);
    m
}

/// What the exposition offers: every sample name with the label names its samples carry, and
/// every `# TYPE` family with its type.
#[derive(Debug, Default)]
struct Exposition {
    samples: BTreeMap<String, BTreeSet<String>>,
    families: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    e.families.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let labels = e.samples.entry(name.to_string()).or_default();
            if line[name_end..].starts_with('{') {
                labels.extend(exposition_label_names(&line[name_end + 1..]));
            }
        }
        e
    }

    /// The `# TYPE` family a sample name belongs to.
    fn family_of(&self, sample: &str) -> Option<&str> {
        if self.families.contains_key(sample) {
            return self.families.get_key_value(sample).map(|(k, _)| k.as_str());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            match self.families.get_key_value(base) {
                Some((k, kind)) if kind == "histogram" || kind == "summary" => Some(k.as_str()),
                _ => None,
            }
        })
    }
}

/// Label names of `a="x",b="y\"z"} 1` (the text after the opening brace).
fn exposition_label_names(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let name = name.trim_start_matches([',', ' ']).to_string();
        if name.is_empty() || name.starts_with('}') {
            break;
        }
        names.push(name);
        if chars.next() != Some('"') {
            break;
        }
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// A minimal PromQL scanner.

/// One metric selector: `name{label=~"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

/// What an expression refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Refs {
    selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` clauses.
    grouping: Vec<String>,
    /// Things the scanner refuses (a selector without a metric name, an unclosed string, ...).
    errors: Vec<String>,
}

/// Words that are never metric names: binary-operator keywords, modifiers, and the aggregation
/// operators (which may be followed by `by (...)` rather than by their parenthesis).
const KEYWORDS: &[&str] = &[
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    refs: &'a mut Refs,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn next_non_ws(&self) -> Option<char> {
        self.chars[self.pos..]
            .iter()
            .copied()
            .find(|c| !c.is_whitespace())
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Skips a string literal starting at the current quote.
    fn string(&mut self) {
        let Some(quote) = self.peek() else { return };
        self.pos += 1;
        let mut escaped = false;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match (escaped, c) {
                (false, '\\') if quote != '`' => escaped = true,
                (false, c) if c == quote => return,
                _ => escaped = false,
            }
        }
        self.refs.errors.push("unclosed string literal".into());
    }

    /// Skips a Grafana variable: `$name`, `${name}`, `${name:format}`.
    fn variable(&mut self) {
        self.pos += 1;
        if self.peek() == Some('{') {
            while let Some(c) = self.peek() {
                self.pos += 1;
                if c == '}' {
                    return;
                }
            }
            self.refs.errors.push("unclosed ${...} variable".into());
        } else {
            self.ident();
        }
    }

    /// Label names of `{a="x", b=~"y"}` starting at the opening brace.
    fn matchers(&mut self) -> Vec<String> {
        self.pos += 1;
        let mut labels = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    self.refs.errors.push("unclosed label matcher".into());
                    return labels;
                }
                Some('}') => {
                    self.pos += 1;
                    return labels;
                }
                Some(',') => self.pos += 1,
                Some('"' | '\'' | '`') => self.string(),
                Some(c) if is_ident_start(c) => labels.push(self.ident()),
                Some(_) => self.pos += 1, // = != =~ !~
            }
        }
    }

    /// Label names of `(a, b)` starting at the opening parenthesis.
    fn label_list(&mut self) -> Vec<String> {
        self.pos += 1;
        let mut labels = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    self.refs.errors.push("unclosed label list".into());
                    return labels;
                }
                Some(')') => {
                    self.pos += 1;
                    return labels;
                }
                Some(c) if is_ident_start(c) => labels.push(self.ident()),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                '"' | '\'' | '`' => self.string(),
                '$' => self.variable(),
                '[' => {
                    // Range or subquery: durations and variables only.
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == ']' {
                            break;
                        }
                    }
                }
                '{' => {
                    let labels = self.matchers();
                    self.refs
                        .errors
                        .push(format!("selector without a metric name: {labels:?}"));
                }
                c if c.is_ascii_digit()
                    || (c == '.'
                        && self
                            .chars
                            .get(self.pos + 1)
                            .is_some_and(char::is_ascii_digit)) =>
                {
                    // Numbers and durations (`0.99`, `1e3`, `5m`, `0x1f`).
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
                    {
                        self.pos += 1;
                    }
                }
                c if is_ident_start(c) => {
                    let word = self.ident();
                    let lower = word.to_ascii_lowercase();
                    if GROUPING.contains(&lower.as_str()) {
                        if self.next_non_ws() == Some('(') {
                            self.skip_ws();
                            let labels = self.label_list();
                            self.refs.grouping.extend(labels);
                        }
                    } else if KEYWORDS.contains(&lower.as_str()) || self.next_non_ws() == Some('(')
                    {
                        // A keyword or a function name.
                    } else {
                        let labels = if self.next_non_ws() == Some('{') {
                            self.skip_ws();
                            self.matchers()
                        } else {
                            Vec::new()
                        };
                        self.refs.selectors.push(Selector {
                            metric: word,
                            labels,
                        });
                    }
                }
                _ => self.pos += 1,
            }
        }
    }
}

/// The metric selectors and grouping labels of a PromQL expression.
fn scan(expr: &str) -> Refs {
    let mut refs = Refs::default();
    Scanner {
        chars: expr.chars().collect(),
        pos: 0,
        refs: &mut refs,
    }
    .run();
    refs
}

/// The PromQL of a Grafana variable query: `label_values(expr, label)` → (`expr`, `label`),
/// `label_values(label)` → no expression, `query_result(expr)` → `expr`.
fn variable_query(q: &str) -> Option<(String, Option<String>)> {
    let q = q.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let (expr, label) = inner.rsplit_once(',')?;
        return Some((expr.trim().to_string(), Some(label.trim().to_string())));
    }
    q.strip_prefix("query_result(")
        .and_then(|s| s.strip_suffix(')'))
        .map(|e| (e.to_string(), None))
}

// ---------------------------------------------------------------------------------------------
// Checking.

/// Problems with one expression against the exposition (empty: fine).
fn check_expr(exp: &Exposition, expr: &str, extra_label: Option<&str>) -> Vec<String> {
    let refs = scan(expr);
    let mut problems: Vec<String> = refs
        .errors
        .iter()
        .map(|e| format!("{expr:?}: {e}"))
        .collect();
    if refs.selectors.is_empty() {
        problems.push(format!("{expr:?}: queries no metric"));
    }
    let mut all_labels: BTreeSet<&str> = SCRAPE_LABELS.iter().copied().collect();
    for sel in &refs.selectors {
        let Some(labels) = exp.samples.get(&sel.metric) else {
            problems.push(format!(
                "{expr:?}: metric {} is not exported by tidal_control::metrics::Metrics",
                sel.metric
            ));
            continue;
        };
        if exp.family_of(&sel.metric).is_none() {
            problems.push(format!("{expr:?}: {} has no # TYPE family", sel.metric));
        }
        all_labels.extend(labels.iter().map(String::as_str));
        for l in &sel.labels {
            if !labels.contains(l) && !SCRAPE_LABELS.contains(&l.as_str()) {
                problems.push(format!(
                    "{expr:?}: {} has no label {l} (it has {labels:?})",
                    sel.metric
                ));
            }
        }
    }
    for l in refs.grouping.iter().map(String::as_str).chain(extra_label) {
        if !all_labels.contains(l) {
            problems.push(format!(
                "{expr:?}: grouping label {l} is on none of its series"
            ));
        }
    }
    problems
}

/// Every `expr` (panel targets) in a JSON document, with a path for messages.
fn collect_exprs(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                if k == "expr"
                    && let Value::String(s) = child
                {
                    out.push((p.clone(), s.clone()));
                }
                collect_exprs(child, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_exprs(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("deploy/grafana/tidal.json is valid JSON")
}

fn template_vars(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = d["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested.iter());
        }
        out.push(p);
    }
    out
}

/// The PromQL quoted in OPERATIONS.md: every ```promql block (one expression per block) and
/// every `expr:` line of the alert rules.
fn doc_exprs(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<(String, String)> = None;
    for line in doc.lines() {
        let t = line.trim();
        if let Some(fence) = t.strip_prefix("```") {
            match block.take() {
                Some((lang, body)) => {
                    if lang == "promql" && !body.trim().is_empty() {
                        out.push(body.trim().to_string());
                    }
                }
                None => block = Some((fence.trim().to_string(), String::new())),
            }
            continue;
        }
        if let Some((lang, body)) = &mut block {
            if lang == "promql" {
                body.push_str(line);
                body.push('\n');
            } else if (lang == "yaml" || lang == "yml")
                && let Some(e) = t.strip_prefix("expr:")
            {
                out.push(e.trim().trim_matches(['\'', '"']).to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_dashboard_query_is_exported() {
    let exp = Exposition::parse(&running_metrics().encode());
    let d = dashboard();
    let mut exprs = Vec::new();
    collect_exprs(&d["panels"], "panels", &mut exprs);
    assert!(exprs.len() >= 12, "too few panel queries: {exprs:?}");
    let mut problems = Vec::new();
    for (path, e) in &exprs {
        problems.extend(
            check_expr(&exp, e, None)
                .into_iter()
                .map(|p| format!("{path}: {p}")),
        );
    }
    for v in template_vars(&d) {
        if v["type"] != "query" {
            continue;
        }
        let q = match &v["query"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        match variable_query(&q) {
            Some((expr, label)) => problems.extend(check_expr(&exp, &expr, label.as_deref())),
            None => problems.push(format!("variable {}: unsupported query {q:?}", v["name"])),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_covers_the_operator_signals() {
    let d = dashboard();
    let mut exprs = Vec::new();
    collect_exprs(&d["panels"], "panels", &mut exprs);
    let queried: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| scan(e).selectors)
        .map(|s| s.metric)
        .collect();
    for needed in [
        "ticdc_owner_checkpoint_ts_lag",
        "ticdc_owner_resolved_ts_lag",
        "ticdc_owner_checkpoint_ts",
        "ticdc_owner_resolved_ts",
        "ticdc_owner_status",
        "ticdc_sink_dml_event_count",
        "ticdc_sink_write_bytes_total",
        "ticdc_sink_execution_error",
        "tidal_span_resolved_lag_seconds_bucket",
        "tidal_span_checkpoint_lag_seconds_bucket",
        "tidal_span_set_checksum_state",
        "ticdc_gc_min_service_gc_safepoint",
        "ticdc_gc_cdc_gc_safepoint",
    ] {
        assert!(queried.contains(needed), "no panel queries {needed}");
    }
    // Every changefeed-scoped series is filtered by the template variable.
    for (path, e) in &exprs {
        for s in scan(e).selectors {
            if s.metric.starts_with("ticdc_gc_") {
                continue;
            }
            assert!(
                s.labels.iter().any(|l| l == "changefeed"),
                "{path}: {} is not filtered by $changefeed in {e:?}",
                s.metric
            );
        }
    }
}

#[test]
fn dashboard_structure() {
    let d = dashboard();
    assert_eq!(d["title"], "Tidal");
    assert_eq!(d["uid"], "tidal-overview");
    let vars = template_vars(&d);
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let cf = vars
        .iter()
        .find(|v| v["name"] == "changefeed")
        .expect("a changefeed variable");
    assert_eq!(cf["type"], "query");
    assert_eq!(cf["includeAll"], true);
    assert_eq!(cf["multi"], true);
    assert_eq!(cf["datasource"]["uid"], "${datasource}");

    let panels = all_panels(&d);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "panel {id}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {id} ({}) must use the datasource variable",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id} target");
            assert!(t["refId"].is_string(), "panel {id}: target without refId");
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {id} ({}) needs a description",
            p["title"]
        );
    }
}

#[test]
fn operations_promql_is_exported() {
    let exp = Exposition::parse(&running_metrics().encode());
    let exprs = doc_exprs(OPERATIONS);
    assert!(
        exprs.len() >= 6,
        "docs/OPERATIONS.md should quote its alert expressions: {exprs:?}"
    );
    let problems: Vec<String> = exprs
        .iter()
        .flat_map(|e| check_expr(&exp, e, None))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn scanner_finds_selectors_and_grouping() {
    let r = scan(
        "sum by (changefeed) (rate(ticdc_sink_dml_event_count{namespace=\"a,b}\", \
         changefeed=~\"$changefeed\"}[$__rate_interval]))",
    );
    assert_eq!(
        r.selectors,
        vec![Selector {
            metric: "ticdc_sink_dml_event_count".into(),
            labels: vec!["namespace".into(), "changefeed".into()],
        }]
    );
    assert_eq!(r.grouping, vec!["changefeed".to_string()]);
    assert!(r.errors.is_empty());

    let r = scan(
        "histogram_quantile(0.99, sum(rate(tidal_span_resolved_lag_seconds_bucket[5m])) by (le)) \
         > 1e1 and on (changefeed) max without(instance) (ticdc_owner_status) == bool 0 offset 1m",
    );
    let names: Vec<&str> = r.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "tidal_span_resolved_lag_seconds_bucket",
            "ticdc_owner_status"
        ]
    );
    assert_eq!(r.grouping, ["le", "changefeed", "instance"]);
    assert!(r.errors.is_empty());

    let r = scan("{__name__=\"x\"} + ${var:raw}");
    assert!(r.selectors.is_empty());
    assert_eq!(r.errors.len(), 1, "{r:?}");
}

#[test]
fn checker_rejects_drift() {
    let exp = Exposition::parse(&running_metrics().encode());
    assert!(
        check_expr(
            &exp,
            "ticdc_owner_checkpoint_ts_lag{changefeed=\"x\"}",
            None
        )
        .is_empty()
    );
    assert!(check_expr(&exp, "ticdc_sink_batch_row_count_bucket{le=\"1\"}", None).is_empty());
    // a name that is not exported
    let p = check_expr(&exp, "ticdc_owner_checkpoint_lag", None);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("not exported"), "{p:?}");
    // a histogram queried by its family name (there is no such series)
    assert_eq!(
        check_expr(&exp, "tidal_span_resolved_lag_seconds", None).len(),
        1
    );
    // a label the series does not carry (checksum states have no namespace)
    let p = check_expr(
        &exp,
        "tidal_span_set_checksum_state{namespace=\"default\"}",
        None,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("has no label namespace"), "{p:?}");
    // a grouping label no series carries
    let p = check_expr(&exp, "sum by (worker) (ticdc_owner_status)", None);
    assert_eq!(p.len(), 1, "{p:?}");
    // the label of label_values()
    assert_eq!(
        check_expr(&exp, "ticdc_owner_status", Some("changefeed")),
        Vec::<String>::new()
    );
    assert_eq!(
        check_expr(&exp, "ticdc_owner_status", Some("capture")).len(),
        1
    );
}

#[test]
fn exposition_parser_reads_families_and_labels() {
    let exp = Exposition::parse(&running_metrics().encode());
    assert_eq!(
        exp.families
            .get("tidal_span_set_checksum_state")
            .map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        exp.families
            .get("tidal_span_resolved_lag_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        exp.samples["tidal_span_set_checksum_state"],
        BTreeSet::from(["changefeed".to_string(), "worker".to_string()])
    );
    assert_eq!(
        exp.samples["ticdc_owner_checkpoint_ts_lag"],
        BTreeSet::from([
            "changefeed".to_string(),
            "keyspace_id".to_string(),
            "namespace".to_string()
        ])
    );
    assert!(exp.samples["tidal_span_resolved_lag_seconds_bucket"].contains("le"));
    assert!(exp.samples["ticdc_gc_cdc_gc_safepoint"].is_empty());
    assert_eq!(
        exp.family_of("tidal_span_checkpoint_lag_seconds_sum"),
        Some("tidal_span_checkpoint_lag_seconds")
    );
    assert_eq!(exp.family_of("ticdc_owner_status_count"), None);
    assert_eq!(
        exposition_label_names("a=\"x\\\"}\",b=\"\"} 1"),
        vec!["a".to_string(), "b".to_string()]
    );
}

#[test]
fn doc_extraction() {
    let doc = "text\n```promql\nmax by (changefeed) (\n  ticdc_owner_status\n)\n```\n\
               ```yaml\n- alert: X\n  expr: ticdc_owner_status == 2\n```\n```sh\nexpr: no\n```\n";
    assert_eq!(
        doc_exprs(doc),
        vec![
            "max by (changefeed) (\n  ticdc_owner_status\n)".to_string(),
            "ticdc_owner_status == 2".to_string(),
        ]
    );
}
