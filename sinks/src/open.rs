//! [`open_sink`]: from a sink URI to a running [`Sink`].

use std::sync::Arc;

use crate::blackhole::BlackholeSink;
use crate::mysql::MySqlSink;
use crate::sink::{Sink, SinkError};
use crate::storage::StorageSink;
use crate::uri::{SinkConfig, mask_password, parse_sink_uri};

/// Parses `uri` and opens the sink it names for changefeed `changefeed_id` (recorded by sinks
/// that keep progress downstream, such as the MySQL sink's `tidb_cdc.ddl_ts_v1`).
///
/// Must be called within a tokio runtime: sinks spawn their writers on it.
pub async fn open_sink(uri: &str, changefeed_id: &str) -> Result<Arc<dyn Sink>, SinkError> {
    let config = parse_sink_uri(uri)?;
    tracing::info!(uri = %mask_password(uri), changefeed = changefeed_id, "opening sink");
    match config {
        SinkConfig::MySql(mut cfg) => {
            cfg.changefeed_id = changefeed_id.to_string();
            Ok(Arc::new(MySqlSink::open(cfg).await?))
        }
        SinkConfig::Storage(cfg) => Ok(Arc::new(StorageSink::open(cfg).await?)),
        SinkConfig::Blackhole(cfg) => Ok(Arc::new(BlackholeSink::new(cfg))),
    }
}
