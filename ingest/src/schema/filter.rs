//! Table filters in TiDB's table-filter syntax, as TiCDC's `filter.rules` takes them.
//!
//! Operators already write these rules for TiCDC, Dumpling, Lightning and BR; accepting the same
//! syntax means a changefeed moves to Tidal without rewriting its filter. A rule is
//! `db-pattern.table-pattern`:
//!
//! - `*` matches any run of characters, `?` exactly one, `[a-z]` one character of a class
//!   (`[!a-z]` or `[^a-z]` one character outside it);
//! - a leading `!` makes the rule an exclusion;
//! - names may be quoted with backticks or double quotes (`` `my.db`.t ``) and a backslash
//!   escapes the next character, so dots and wildcards can be matched literally;
//! - blank rules and rules starting with `#` are ignored (as in a rules file).
//!
//! A table is matched by the **last** rule whose patterns match it: an including rule accepts
//! it, an excluding rule rejects it, and a table no rule matches is rejected. Matching is
//! case-insensitive unless the filter is built case-sensitive.
//!
//! System schemas are not the filter's business: [`is_system_schema`] lists the ones the schema
//! store always leaves out, whatever the rules say.

use std::fmt;

/// Databases that are never replicated, whatever the filter rules say: TiDB's own schemas,
/// TiCDC's bookkeeping schema, Lightning's task-info schema and the workload repository.
pub const SYSTEM_SCHEMAS: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "metrics_schema",
    "sys",
    "tidb_cdc",
    "lightning_task_info",
    "workload_schema",
];

/// True for a system schema (compared case-insensitively).
pub fn is_system_schema(db: &str) -> bool {
    SYSTEM_SCHEMAS.iter().any(|s| s.eq_ignore_ascii_case(db))
}

/// Why a rule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid table filter rule {rule:?} at character {position}: {detail}")]
pub struct FilterError {
    /// The rule as given.
    pub rule: String,
    /// Character offset (0-based) where the problem was found.
    pub position: usize,
    /// What was wrong.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Any,
    /// `[...]`
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One name pattern (database or table part of a rule).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    fn matches(&self, name: &[char], case_sensitive: bool) -> bool {
        let eq = |a: char, b: char| {
            if case_sensitive {
                a == b
            } else {
                a == b || a.to_lowercase().eq(b.to_lowercase())
            }
        };
        let in_class = |negated: bool, ranges: &[(char, char)], c: char| {
            let hit = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            let found = if case_sensitive {
                hit(c)
            } else {
                hit(c) || c.to_lowercase().any(hit) || c.to_uppercase().any(hit)
            };
            found != negated
        };
        // Iterative glob matching with a single backtrack point for the last `*`.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        let toks = &self.tokens;
        while n < name.len() {
            let c = name[n];
            match toks.get(p) {
                Some(Token::Any) => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                Some(Token::One) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                Some(Token::Lit(l)) if eq(*l, c) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                Some(Token::Class { negated, ranges }) if in_class(*negated, ranges, c) => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            }
        }
        toks.get(p..)
            .is_some_and(|rest| rest.iter().all(|t| *t == Token::Any))
    }
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    exclude: bool,
    db: Pattern,
    table: Pattern,
}

/// A parsed table filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFilter {
    rules: Vec<Rule>,
    case_sensitive: bool,
    text: Vec<String>,
}

impl fmt::Display for TableFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.text.join(", "))
    }
}

impl Default for TableFilter {
    /// `*.*`, case-insensitive: every table.
    fn default() -> TableFilter {
        TableFilter::all()
    }
}

struct Parser<'a> {
    rule: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, position: usize, detail: impl Into<String>) -> FilterError {
        FilterError {
            rule: self.rule.to_owned(),
            position,
            detail: detail.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Parses one pattern up to an unquoted, unescaped `.` (when `stop_at_dot`) or the end.
    fn pattern(&mut self, stop_at_dot: bool, what: &str) -> Result<Pattern, FilterError> {
        let start = self.pos;
        let mut tokens = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '.' if stop_at_dot => break,
                '.' => {
                    return Err(self.err(
                        self.pos,
                        "unexpected '.' in the table name (quote or escape it)",
                    ));
                }
                '\\' => {
                    let Some(next) = self.chars.get(self.pos + 1).copied() else {
                        return Err(self.err(self.pos, "dangling '\\' at the end of the rule"));
                    };
                    tokens.push(Token::Lit(next));
                    self.pos += 2;
                }
                '`' | '"' => {
                    let quote = c;
                    let open = self.pos;
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(self.err(open, format!("unterminated quote {quote}")));
                            }
                            Some(q) if q == quote => {
                                // A doubled quote stands for the quote itself.
                                if self.chars.get(self.pos + 1) == Some(&quote) {
                                    tokens.push(Token::Lit(quote));
                                    self.pos += 2;
                                } else {
                                    self.pos += 1;
                                    break;
                                }
                            }
                            Some(ch) => {
                                tokens.push(Token::Lit(ch));
                                self.pos += 1;
                            }
                        }
                    }
                }
                '*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                    self.pos += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    self.pos += 1;
                }
                '[' => tokens.push(self.class()?),
                ']' => return Err(self.err(self.pos, "unmatched ']'")),
                '/' if self.pos == start => {
                    return Err(self.err(
                        self.pos,
                        "regular-expression patterns (/…/) are not supported; use wildcards",
                    ));
                }
                c if c.is_whitespace() => {
                    return Err(self.err(self.pos, "whitespace inside a pattern (quote the name)"));
                }
                '!' => {
                    return Err(self.err(
                        self.pos,
                        "'!' is only allowed at the start of a rule (quote or escape it)",
                    ));
                }
                c => {
                    tokens.push(Token::Lit(c));
                    self.pos += 1;
                }
            }
        }
        if tokens.is_empty() {
            return Err(self.err(start, format!("empty {what} pattern")));
        }
        Ok(Pattern { tokens })
    }

    fn class(&mut self) -> Result<Token, FilterError> {
        let open = self.pos;
        self.pos += 1;
        let negated = matches!(self.peek(), Some('!' | '^'));
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(open, "unterminated character class '['"));
            };
            if c == ']' && !ranges.is_empty() {
                self.pos += 1;
                break;
            }
            if c == ']' {
                return Err(self.err(self.pos, "empty character class"));
            }
            let lo = if c == '\\' {
                self.pos += 1;
                self.peek()
                    .ok_or_else(|| self.err(open, "unterminated character class '['"))?
            } else {
                c
            };
            self.pos += 1;
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let mut hi = self
                    .peek()
                    .ok_or_else(|| self.err(open, "unterminated character class '['"))?;
                if hi == '\\' {
                    self.pos += 1;
                    hi = self
                        .peek()
                        .ok_or_else(|| self.err(open, "unterminated character class '['"))?;
                }
                self.pos += 1;
                if hi < lo {
                    return Err(self.err(self.pos - 1, format!("reversed range {lo}-{hi}")));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Token::Class { negated, ranges })
    }
}

fn parse_rule(rule: &str) -> Result<Option<Rule>, FilterError> {
    let trimmed = rule.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let (exclude, body) = match trimmed.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut p = Parser {
        rule,
        chars: body.chars().collect(),
        pos: 0,
    };
    let db = p.pattern(true, "database")?;
    if p.peek() != Some('.') {
        return Err(p.err(
            p.pos,
            "expected '.' between the database and the table pattern (e.g. db.* )",
        ));
    }
    p.pos += 1;
    let table = p.pattern(false, "table")?;
    Ok(Some(Rule { exclude, db, table }))
}

impl TableFilter {
    /// Parses `rules`, case-insensitive (TiCDC's default).
    pub fn new<S: AsRef<str>>(rules: &[S]) -> Result<TableFilter, FilterError> {
        TableFilter::with_case_sensitivity(rules, false)
    }

    /// Parses `rules`; `case_sensitive` makes names compare exactly.
    pub fn with_case_sensitivity<S: AsRef<str>>(
        rules: &[S],
        case_sensitive: bool,
    ) -> Result<TableFilter, FilterError> {
        let mut parsed = Vec::with_capacity(rules.len());
        let mut text = Vec::with_capacity(rules.len());
        for r in rules {
            if let Some(rule) = parse_rule(r.as_ref())? {
                parsed.push(rule);
                text.push(r.as_ref().trim().to_owned());
            }
        }
        Ok(TableFilter {
            rules: parsed,
            case_sensitive,
            text,
        })
    }

    /// The filter `*.*`: every table.
    pub fn all() -> TableFilter {
        TableFilter {
            rules: vec![Rule {
                exclude: false,
                db: Pattern {
                    tokens: vec![Token::Any],
                },
                table: Pattern {
                    tokens: vec![Token::Any],
                },
            }],
            case_sensitive: false,
            text: vec!["*.*".into()],
        }
    }

    /// True if table `db`.`table` is selected: the last rule matching it includes it.
    pub fn matches(&self, db: &str, table: &str) -> bool {
        let db: Vec<char> = db.chars().collect();
        let table: Vec<char> = table.chars().collect();
        for rule in self.rules.iter().rev() {
            if rule.db.matches(&db, self.case_sensitive)
                && rule.table.matches(&table, self.case_sensitive)
            {
                return !rule.exclude;
            }
        }
        false
    }

    /// True if some table of database `db` may be selected (a rule that includes tables of it
    /// exists). Used to skip whole databases cheaply; `matches` remains the authority.
    pub fn may_match_schema(&self, db: &str) -> bool {
        let db: Vec<char> = db.chars().collect();
        self.rules
            .iter()
            .any(|r| !r.exclude && r.db.matches(&db, self.case_sensitive))
    }

    /// Whether names compare case-sensitively.
    pub fn is_case_sensitive(&self) -> bool {
        self.case_sensitive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(rules: &[&str]) -> TableFilter {
        TableFilter::new(rules).unwrap()
    }

    #[test]
    fn all_and_exact() {
        let all = f(&["*.*"]);
        assert!(all.matches("db", "t"));
        assert!(all.matches("", ""));
        assert_eq!(all, TableFilter::all());
        let exact = f(&["db1.tbl"]);
        assert!(exact.matches("db1", "tbl"));
        assert!(exact.matches("DB1", "TBL"));
        assert!(!exact.matches("db1", "tbl2"));
        assert!(!exact.matches("db", "tbl"));
        assert!(!f(&[]).matches("db", "t"));
    }

    #[test]
    fn wildcards_and_classes() {
        let w = f(&["db?.t_*", "shop.order_[0-9][0-9]"]);
        assert!(w.matches("db1", "t_"));
        assert!(w.matches("dbx", "t_anything"));
        assert!(!w.matches("db12", "t_x"));
        assert!(!w.matches("db1", "tx"));
        assert!(w.matches("shop", "order_07"));
        assert!(!w.matches("shop", "order_7"));
        assert!(!w.matches("shop", "order_0a"));
        let neg = f(&["a.[!0-9]*"]);
        assert!(neg.matches("a", "x1"));
        assert!(!neg.matches("a", "1x"));
        let caret = f(&["a.[^xy]"]);
        assert!(caret.matches("a", "z"));
        assert!(!caret.matches("a", "x"));
        let star = f(&["*.*_log*"]);
        assert!(star.matches("any", "app_log"));
        assert!(star.matches("any", "app_log_2024"));
        assert!(!star.matches("any", "applog"));
    }

    #[test]
    fn later_rules_win() {
        let r = f(&["*.*", "!mysql.*", "!db.secret*", "db.secret_ok"]);
        assert!(r.matches("db", "t"));
        assert!(!r.matches("mysql", "user"));
        assert!(!r.matches("db", "secret_keys"));
        assert!(r.matches("db", "secret_ok"));
        // Reversing the last two rules flips the outcome for secret_ok.
        let r2 = f(&["*.*", "db.secret_ok", "!db.secret*"]);
        assert!(!r2.matches("db", "secret_ok"));
        // Only exclusions: nothing matches.
        assert!(!f(&["!db.*"]).matches("other", "t"));
    }

    #[test]
    fn case_sensitivity() {
        let ci = f(&["Db.[A-C]x"]);
        assert!(ci.matches("db", "bX"));
        assert!(ci.matches("DB", "Bx"));
        let cs = TableFilter::with_case_sensitivity(&["Db.[A-C]x"], true).unwrap();
        assert!(cs.matches("Db", "Bx"));
        assert!(!cs.matches("db", "Bx"));
        assert!(!cs.matches("Db", "bx"));
        assert!(cs.is_case_sensitive());
    }

    #[test]
    fn quoting_and_escapes() {
        let q = f(&["`my.db`.\"t*\"", "a\\.b.c"]);
        assert!(q.matches("my.db", "t*"));
        assert!(!q.matches("my.db", "tx"));
        assert!(q.matches("a.b", "c"));
        assert!(!q.matches("a", "b.c"));
        let doubled = f(&["`a``b`.t"]);
        assert!(doubled.matches("a`b", "t"));
        // Comments and blank lines are skipped.
        let c = f(&["# comment", "  ", "x.y"]);
        assert!(c.matches("x", "y"));
        assert_eq!(c.to_string(), "[x.y]");
    }

    #[test]
    fn bad_rules_are_named() {
        let cases: &[(&str, &str)] = &[
            ("db", "expected '.'"),
            ("db.", "empty table pattern"),
            (".t", "empty database pattern"),
            ("db.[a-", "unterminated character class"),
            ("db.[]", "empty character class"),
            ("db.[z-a]", "reversed range"),
            ("db.t]", "unmatched ']'"),
            ("`db.t", "unterminated quote"),
            ("db.t.x", "unexpected '.'"),
            ("db.t x", "whitespace"),
            ("db.t\\", "dangling"),
            ("/^db$/.t", "regular-expression"),
            ("db.!t", "'!' is only allowed"),
        ];
        for (rule, want) in cases {
            let e = TableFilter::new(&[*rule]).unwrap_err();
            assert_eq!(e.rule, *rule);
            assert!(
                e.to_string().contains(want),
                "rule {rule:?}: error {e} should mention {want:?}"
            );
        }
        let e = TableFilter::new(&["db.t", "bad"]).unwrap_err();
        assert_eq!(e.rule, "bad");
        assert_eq!(e.position, 3);
    }

    #[test]
    fn schema_precheck_and_system_schemas() {
        let r = f(&["app.*", "!other.*"]);
        assert!(r.may_match_schema("APP"));
        assert!(!r.may_match_schema("other"));
        for s in [
            "mysql",
            "INFORMATION_SCHEMA",
            "Performance_Schema",
            "METRICS_SCHEMA",
            "sys",
        ] {
            assert!(is_system_schema(s), "{s}");
        }
        assert!(is_system_schema("tidb_cdc"));
        assert!(is_system_schema("lightning_task_info"));
        assert!(!is_system_schema("mysql2"));
        assert!(!is_system_schema("app"));
    }

    proptest! {
        #[test]
        fn random_rules_never_panic(rule in ".{0,24}", db in ".{0,8}", t in ".{0,8}") {
            if let Ok(filter) = TableFilter::new(&[rule.as_str()]) {
                let _ = filter.matches(&db, &t);
            }
        }

        #[test]
        fn literal_names_match_themselves(db in "[a-z0-9_]{1,10}", t in "[a-z0-9_$]{1,10}") {
            let filter = TableFilter::new(&[format!("{db}.{t}")]).unwrap();
            prop_assert!(filter.matches(&db, &t));
            prop_assert!(filter.matches(&db.to_uppercase(), &t.to_uppercase()));
            let other = format!("{t}x");
            prop_assert!(!filter.matches(&db, &other));
        }
    }
}
