//! `tidal cli tso query`: the upstream PD's current TSO, through the server.
//!
//! `cdc cli tso query` asks PD directly; Tidal's CLI only knows the server, so it uses the
//! server's `POST /api/v2/tso` and composes the same number (`physical << 18 | logical`).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;
use tidal_control::api::models::TsoModel;

use super::client::ApiClient;
use super::{CliError, Io, codes};

/// Bits of the logical part of a TSO.
const LOGICAL_BITS: u32 = 18;

/// `tidal cli tso`.
#[derive(Debug, Args)]
pub struct TsoArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TsoCommand,
}

/// `tidal cli tso` subcommands.
#[derive(Debug, Subcommand)]
pub enum TsoCommand {
    /// Print PD's current TSO as one integer.
    Query,
}

/// Composes a TSO from the API's parts; `None` if they are out of range.
pub(crate) fn compose(t: &TsoModel) -> Option<u64> {
    let physical = u64::try_from(t.timestamp).ok()?;
    let logical = u64::try_from(t.logic_time).ok()?;
    if logical >= 1 << LOGICAL_BITS || physical >= 1 << (64 - LOGICAL_BITS) {
        return None;
    }
    Some(physical << LOGICAL_BITS | logical)
}

/// Asks the server for a TSO.
pub(crate) async fn query(client: &ApiClient) -> Result<(TsoModel, u64), CliError> {
    let t: TsoModel = client
        .call_as(Method::POST, "/api/v2/tso", Some(&json!({})))
        .await?;
    let ts = compose(&t).ok_or_else(|| {
        CliError::new(
            codes::BAD_RESPONSE,
            format!(
                "the server at {} answered an invalid TSO: timestamp {}, logic_time {}",
                client.base(),
                t.timestamp,
                t.logic_time
            ),
        )
    })?;
    Ok((t, ts))
}

/// Runs `tidal cli tso …`.
pub(crate) async fn run(
    client: &ApiClient,
    args: TsoArgs,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match args.command {
        TsoCommand::Query => {
            let (_, ts) = query(client).await?;
            io.print(&format!("{ts}\n"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_like_pd() {
        let t = TsoModel {
            timestamp: 1_716_171_072_123,
            logic_time: 5,
        };
        assert_eq!(compose(&t), Some((1_716_171_072_123u64 << 18) | 5));
        assert_eq!(
            compose(&TsoModel {
                timestamp: -1,
                logic_time: 0
            }),
            None
        );
        assert_eq!(
            compose(&TsoModel {
                timestamp: 1,
                logic_time: 1 << 18
            }),
            None
        );
        assert_eq!(
            compose(&TsoModel {
                timestamp: 1 << 46,
                logic_time: 0
            }),
            None
        );
    }
}
