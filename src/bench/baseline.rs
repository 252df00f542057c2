//! The same run's baselines, so a throughput figure can be read against what is physically
//! possible on this machine today:
//!
//! - **decode floor**: the time one core needs just to decode the same rows
//!   (`tidal_model::decode::decode_row` over TiDB's row-format-v2 bytes). A changefeed cannot
//!   be faster per core than this.
//! - **MySQL load**: the time the downstream needs to take the same rows in bulk, by
//!   `LOAD DATA LOCAL INFILE` through the `mariadb`/`mysql` client when one is installed and the
//!   server allows it, else by multi-row `INSERT`s on one connection. A MySQL sink cannot
//!   reasonably beat the downstream's own bulk path.

use std::io::Write;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tidal_model::decode::decode_row;
use tidal_model::tablecodec::{self, Handle};
use tidal_sim::tidb::Table;
use tidal_sim::tidb::dml::encode_value;
use tidal_sinks::mysql::MySqlConfig;
use tidal_sinks::uri::{SinkConfig, parse_sink_uri};

use super::BenchError;
use super::workload::{Shape, pad_bytes};

/// Largest number of distinct rows materialized for the decode floor; a bigger run decodes
/// them repeatedly.
const DECODE_SAMPLE: u64 = 100_000;

/// Result of the decode floor.
#[derive(Debug, Clone, Copy)]
pub struct DecodeFloor {
    /// Rows decoded.
    pub rows: u64,
    /// Time taken on one core.
    pub elapsed: Duration,
    /// Average encoded row size (key + value), bytes.
    pub avg_raw_row_bytes: f64,
}

/// Decodes `rows` rows of `shape` on the calling thread and times it.
pub fn decode_floor(shape: &Shape, tables: &[Table], rows: u64) -> Result<DecodeFloor, BenchError> {
    let sample_n = rows.clamp(1, DECODE_SAMPLE);
    let mut sample = Vec::with_capacity(sample_n as usize);
    let mut raw_bytes = 0u64;
    for seq in 0..sample_n {
        let (t, id) = shape.place(seq);
        let table = tables
            .get(t)
            .ok_or_else(|| BenchError::Workload(format!("no table {t}")))?;
        let key = tablecodec::encode_row_key(table.id(), &Handle::Int(id));
        let value = encode_value(&table.info, &shape.row(seq))
            .map_err(|e| BenchError::Workload(e.to_string()))?;
        raw_bytes += (key.len() + value.len()) as u64;
        sample.push((t, key, value));
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut cols = 0usize;
    while done < rows {
        for (t, key, value) in &sample {
            if done >= rows {
                break;
            }
            let Some(table) = tables.get(*t) else {
                continue;
            };
            let row = decode_row(&table.info, key, value)
                .map_err(|e| BenchError::Workload(format!("decode floor: {e}")))?;
            cols += row.len();
            done += 1;
        }
    }
    let elapsed = start.elapsed();
    // Keep the decoded results observable so the loop cannot be optimized away.
    std::hint::black_box(cols);
    Ok(DecodeFloor {
        rows: done,
        elapsed,
        avg_raw_row_bytes: raw_bytes as f64 / sample_n as f64,
    })
}

/// Result of the MySQL baseline.
#[derive(Debug, Clone)]
pub struct MysqlBaseline {
    /// `load-data-local` or `multi-row-insert`.
    pub method: String,
    /// Rows loaded.
    pub rows: u64,
    /// Time of the load itself (table creation excluded).
    pub elapsed: Duration,
    /// Why LOAD DATA LOCAL was not used, if it was not.
    pub note: Option<String>,
}

const BASELINE_DB: &str = "tidal_bench_baseline";

fn create_sql(shape: &Shape) -> String {
    format!(
        "CREATE TABLE `{BASELINE_DB}`.`t` (id BIGINT NOT NULL PRIMARY KEY, k BIGINT NOT NULL, \
         pad VARCHAR({}))",
        shape.pad_len()
    )
}

fn row_fields(shape: &Shape, seq: u64) -> (i64, i64, Vec<u8>) {
    let id = (seq + 1) as i64;
    let k = seq.wrapping_mul(2_654_435_761) as i64 & 0xFFFF_FFFF;
    (id, k, pad_bytes(seq, shape.pad_len()))
}

fn mysql_err(what: &str, e: sqlx::Error) -> BenchError {
    BenchError::Mysql(format!("{what}: {e}"))
}

fn mysql_config(uri: &str) -> Result<MySqlConfig, BenchError> {
    match parse_sink_uri(uri) {
        Ok(SinkConfig::MySql(c)) => Ok(c),
        Ok(_) => Err(BenchError::Options("not a mysql:// sink".into())),
        Err(e) => Err(BenchError::Options(e.to_string())),
    }
}

async fn connect(cfg: &MySqlConfig) -> Result<MySqlConnection, BenchError> {
    let opts = MySqlConnectOptions::new()
        .host(&cfg.host)
        .port(cfg.port)
        .username(&cfg.user)
        .password(&cfg.password)
        .ssl_mode(MySqlSslMode::Disabled)
        .charset("utf8mb4")
        .disable_statement_logging();
    MySqlConnection::connect_with(&opts)
        .await
        .map_err(|e| mysql_err("connecting", e))
}

/// Drops database `db` on the MySQL server of sink `uri`, so a run starts from an empty
/// downstream (the changefeed re-creates it from the replicated DDL).
pub async fn drop_downstream_db(uri: &str, db: &str) -> Result<(), BenchError> {
    let cfg = mysql_config(uri)?;
    let mut conn = connect(&cfg).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS `{}`",
        db.replace('`', "``")
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| mysql_err("dropping the bench database", e))?;
    let _ = conn.close().await;
    Ok(())
}

/// Loads `rows` rows of `shape` into `tidal_bench_baseline.t` of the MySQL server named by
/// `uri` (a `mysql://` sink URI), recreating that database first.
pub async fn mysql_baseline(
    uri: &str,
    shape: &Shape,
    rows: u64,
) -> Result<MysqlBaseline, BenchError> {
    let cfg = mysql_config(uri)?;
    let mut conn = connect(&cfg).await?;
    let reset = format!(
        "DROP DATABASE IF EXISTS `{BASELINE_DB}`; CREATE DATABASE `{BASELINE_DB}`; {}",
        create_sql(shape)
    );
    sqlx::raw_sql(AssertSqlSafe(reset))
        .execute(&mut conn)
        .await
        .map_err(|e| mysql_err("creating the baseline table", e))?;

    let note = match load_data_local(&cfg.host, cfg.port, &cfg.user, &cfg.password, shape, rows) {
        Ok(elapsed) => {
            let _ = conn.close().await;
            return Ok(MysqlBaseline {
                method: "load-data-local".into(),
                rows,
                elapsed,
                note: None,
            });
        }
        Err(why) => why,
    };
    // Fall back to multi-row INSERTs of 1000 rows on this one connection.
    sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE TABLE `{BASELINE_DB}`.`t`")))
        .execute(&mut conn)
        .await
        .map_err(|e| mysql_err("truncating", e))?;
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < rows {
        let end = (seq + 1000).min(rows);
        let mut sql = format!("INSERT INTO `{BASELINE_DB}`.`t` (id, k, pad) VALUES ");
        for s in seq..end {
            let (id, k, pad) = row_fields(shape, s);
            if s > seq {
                sql.push(',');
            }
            // The pad is alphanumeric, so it needs no escaping.
            sql.push_str(&format!("({id},{k},'{}')", String::from_utf8_lossy(&pad)));
        }
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| mysql_err("multi-row insert", e))?;
        seq = end;
    }
    let elapsed = start.elapsed();
    let _ = conn.close().await;
    Ok(MysqlBaseline {
        method: "multi-row-insert".into(),
        rows,
        elapsed,
        note: Some(note),
    })
}

/// Runs `LOAD DATA LOCAL INFILE` through the command-line client; returns the time of the
/// load, or why it could not be used.
fn load_data_local(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    shape: &Shape,
    rows: u64,
) -> Result<Duration, String> {
    let client = ["mariadb", "mysql"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| "no mariadb/mysql client installed".to_string())?;
    let path = std::env::temp_dir().join(format!("tidal-bench-{}.tsv", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for s in 0..rows {
            let (id, k, pad) = row_fields(shape, s);
            write!(f, "{id}\t{k}\t")?;
            f.write_all(&pad)?;
            f.write_all(b"\n")?;
        }
        f.flush()
    };
    write().map_err(|e| format!("writing the data file: {e}"))?;
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE `{BASELINE_DB}`.`t` (id, k, pad)",
        path.display().to_string().replace('\'', "''")
    );
    let start = Instant::now();
    let out = std::process::Command::new(client)
        .arg("--local-infile=1")
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg("--protocol=TCP")
        .arg(format!("--user={user}"))
        .env("MYSQL_PWD", password)
        .arg("-e")
        .arg(&sql)
        .output();
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| format!("running {client}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "LOAD DATA LOCAL refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_rows_match_the_workload() {
        let s = Shape {
            tables: 2,
            row_width: 64,
            txn_size: 10,
        };
        let (id, k, pad) = row_fields(&s, 3);
        let row = s.row(3);
        assert_eq!(row[0], tidal_model::Datum::Int(id));
        assert_eq!(row[1], tidal_model::Datum::Int(k));
        assert_eq!(row[2], tidal_model::Datum::Bytes(pad));
    }
}
