//! The MySQL/TiDB downstream: each table read over one connection with the text protocol, so
//! every value arrives as MySQL prints it and is canonicalized by the upstream column's type.
//!
//! The session runs in UTC (`time_zone = '+00:00'`), as the MySQL sink writes: TIMESTAMP values
//! then read back as the UTC wall time TiDB stores.

use futures::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tidal_sinks::uri::{SinkConfig, mask_password, parse_sink_uri};

use super::VerifyError;
use super::canon::{Cell, Source, text_cell};
use super::compare::Columns;

/// One connection to the downstream.
#[derive(Debug)]
pub(crate) struct MySqlDownstream {
    conn: MySqlConnection,
    masked: String,
    password: String,
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl MySqlDownstream {
    /// Connects to `url` (`mysql://user:password@host:port/`, or `tidb://`; the path and sink
    /// parameters are ignored).
    pub(crate) async fn connect(url: &str) -> Result<MySqlDownstream, VerifyError> {
        let masked = mask_password(url);
        let scheme = url
            .trim()
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("mysql" | "tidb")) {
            return Err(VerifyError::InvalidOptions(format!(
                "--mysql {masked}: not a mysql:// or tidb:// URL"
            )));
        }
        let cfg = match parse_sink_uri(url) {
            Ok(SinkConfig::MySql(cfg)) => cfg,
            Ok(_) => {
                return Err(VerifyError::InvalidOptions(format!(
                    "--mysql {masked}: not a mysql:// or tidb:// URL"
                )));
            }
            Err(e) => {
                return Err(VerifyError::InvalidOptions(format!("--mysql: {e}")));
            }
        };
        let opts = MySqlConnectOptions::new()
            .host(&cfg.host)
            .port(cfg.port)
            .username(&cfg.user)
            .password(&cfg.password)
            .ssl_mode(MySqlSslMode::Disabled)
            .timezone(Some("+00:00".to_string()))
            .charset("utf8mb4")
            .disable_statement_logging();
        let scrub = |s: String| {
            if cfg.password.len() >= 3 {
                s.replace(&cfg.password, "xxxxx")
            } else {
                s
            }
        };
        let conn = match tokio::time::timeout(
            cfg.dial_timeout,
            MySqlConnection::connect_with(&opts),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(VerifyError::Downstream {
                    what: format!("connecting to {masked}"),
                    detail: scrub(e.to_string()),
                });
            }
            Err(_) => {
                return Err(VerifyError::Downstream {
                    what: format!("connecting to {masked}"),
                    detail: format!("timed out after {:?}", cfg.dial_timeout),
                });
            }
        };
        Ok(MySqlDownstream {
            conn,
            masked,
            password: cfg.password,
        })
    }

    fn error(&self, what: String, e: sqlx::Error) -> VerifyError {
        let mut detail = e.to_string();
        if self.password.len() >= 3 {
            detail = detail.replace(&self.password, "xxxxx");
        }
        VerifyError::Downstream {
            what: format!("{what} on {}", self.masked),
            detail,
        }
    }

    /// The downstream's column names of `db`.`table`, or `None` if there is no such table.
    pub(crate) async fn columns(
        &mut self,
        db: &str,
        table: &str,
    ) -> Result<Option<Vec<String>>, VerifyError> {
        let rows = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(db)
        .bind(table)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.error(format!("listing the columns of {db}.{table}"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: Vec<u8> = r
                .try_get_unchecked(0)
                .map_err(|e| self.error(format!("listing the columns of {db}.{table}"), e))?;
            out.push(String::from_utf8_lossy(&name).into_owned());
        }
        Ok(Some(out))
    }

    /// Reads every row of `db`.`table` (ordered by its key when it has one) and hands its
    /// canonical cells to `each`. `present[i]` says whether compared column `i` exists
    /// downstream; absent ones read as a marked value that equals nothing upstream.
    pub(crate) async fn rows(
        &mut self,
        db: &str,
        table: &str,
        cols: &Columns,
        present: &[bool],
        mut each: impl FnMut(Vec<Cell>),
    ) -> Result<(), VerifyError> {
        let selected: Vec<(usize, &super::compare::Column)> = cols
            .cols
            .iter()
            .enumerate()
            .filter(|(i, _)| present.get(*i).copied().unwrap_or(false))
            .collect();
        let list = if selected.is_empty() {
            "1".to_string()
        } else {
            selected
                .iter()
                .map(|(_, c)| quote(&c.info.name.O))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {list} FROM {}.{}", quote(db), quote(table));
        if let Some(key) = &cols.key
            && key
                .iter()
                .all(|&k| present.get(k).copied().unwrap_or(false))
        {
            let order: Vec<String> = key
                .iter()
                .filter_map(|&k| cols.cols.get(k))
                .map(|c| quote(&c.info.name.O))
                .collect();
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        let what = format!("reading {db}.{table}");
        let masked = self.masked.clone();
        let password = self.password.clone();
        let err = |e: sqlx::Error| {
            let mut detail = e.to_string();
            if password.len() >= 3 {
                detail = detail.replace(&password, "xxxxx");
            }
            VerifyError::Downstream {
                what: format!("{what} on {masked}"),
                detail,
            }
        };
        let mut stream = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&mut self.conn);
        while let Some(r) = stream.try_next().await.map_err(err)? {
            let mut row: Vec<Cell> = Vec::with_capacity(cols.cols.len());
            let mut next = 0usize;
            for (i, c) in cols.cols.iter().enumerate() {
                if !present.get(i).copied().unwrap_or(false) {
                    row.push(Some("absent downstream".to_string()));
                    continue;
                }
                // The text protocol sends every value as bytes.
                let v: Option<Vec<u8>> = r.try_get_unchecked(next).map_err(err)?;
                next += 1;
                row.push(text_cell(
                    c.kind,
                    &c.info.field_type,
                    Source::MySql,
                    v.as_deref(),
                ));
            }
            each(row);
        }
        Ok(())
    }

    /// Closes the connection.
    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }
}
