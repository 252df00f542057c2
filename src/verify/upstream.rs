//! The upstream side: a consistent snapshot of the cluster at one ts, read through PD and the
//! TiKV KV API exactly as against a production cluster (no shortcut through the embedded
//! cluster), decoded with the schema that was in effect at that ts.

use std::sync::Arc;

use tidal_ingest::pd::{PdClient, PdConfig};
use tidal_ingest::schema::{SchemaError, SchemaStore, TableFilter, TableVersion};
use tidal_ingest::snapshot::{SnapshotError, SnapshotReader};
use tidal_model::{Ts, decode, tablecodec};

use super::VerifyError;
use super::canon::{Cell, datum_cell};
use super::compare::Columns;

/// Pairs asked for per scan call: bounds memory per table to one page.
const PAGE: usize = 2048;

/// A connected upstream.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    reader: SnapshotReader,
}

fn snapshot_error(what: String, e: SnapshotError) -> VerifyError {
    match e {
        SnapshotError::LostByGc { ts, safe_point } => VerifyError::LostByGc { ts, safe_point },
        other => VerifyError::Upstream {
            what,
            detail: other.to_string(),
        },
    }
}

impl Upstream {
    /// Connects to PD (any of `endpoints`).
    pub(crate) async fn connect(endpoints: &[String]) -> Result<Upstream, VerifyError> {
        let pd = PdClient::connect(PdConfig::new(endpoints.iter().cloned()))
            .await
            .map_err(|e| VerifyError::Upstream {
                what: format!("connecting to PD {}", endpoints.join(",")),
                detail: e.to_string(),
            })?;
        Ok(Upstream {
            reader: SnapshotReader::new(pd),
        })
    }

    /// A fresh ts from PD.
    pub(crate) async fn now(&self) -> Result<Ts, VerifyError> {
        self.reader
            .pd()
            .get_ts()
            .await
            .map_err(|e| VerifyError::Upstream {
                what: "getting a ts from PD".into(),
                detail: e.to_string(),
            })
    }

    /// The tables `filter` selects at `ts`. Fails with [`VerifyError::LostByGc`] below the GC
    /// safe point.
    pub(crate) async fn tables(
        &self,
        ts: Ts,
        filter: &TableFilter,
    ) -> Result<Vec<Arc<TableVersion>>, VerifyError> {
        self.reader
            .check_gc(ts)
            .await
            .map_err(|e| snapshot_error(format!("checking the GC safe point at {}", ts.0), e))?;
        let store = SchemaStore::bootstrap(&self.reader, ts)
            .await
            .map_err(|e| match e {
                SchemaError::Snapshot(s) => {
                    snapshot_error(format!("reading the schema at {}", ts.0), s)
                }
                other => VerifyError::Upstream {
                    what: format!("reading the schema at {}", ts.0),
                    detail: other.to_string(),
                },
            })?;
        Ok(store.tables_at(ts, filter))
    }

    /// Reads every row of `table` at `ts` and hands its canonical cells to `each`.
    pub(crate) async fn rows(
        &self,
        table: &TableVersion,
        cols: &Columns,
        ts: Ts,
        mut each: impl FnMut(Vec<Cell>),
    ) -> Result<(), VerifyError> {
        let info = &table.info;
        let name = table.qualified_name();
        for id in info.physical_table_ids() {
            let (mut cursor, end) = tablecodec::table_record_range(id);
            loop {
                let pairs = self
                    .reader
                    .scan(&cursor, &end, ts, PAGE)
                    .await
                    .map_err(|e| snapshot_error(format!("scanning {name}"), e))?;
                let full = pairs.len() >= PAGE;
                let Some(last) = pairs.last().map(|(k, _)| k.clone()) else {
                    break;
                };
                for (key, value) in &pairs {
                    let datums = decode::decode_row(info, key, value).map_err(|e| {
                        VerifyError::Upstream {
                            what: format!("decoding a row of {name}"),
                            detail: e.to_string(),
                        }
                    })?;
                    let row = cols
                        .cols
                        .iter()
                        .map(|c| {
                            datums
                                .get(c.upstream_pos)
                                .and_then(|d| datum_cell(c.kind, &c.info.field_type, d))
                        })
                        .collect();
                    each(row);
                }
                if !full {
                    break;
                }
                cursor = last;
                cursor.push(0);
            }
        }
        Ok(())
    }
}
