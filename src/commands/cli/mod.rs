//! `tidal cli`: a client of a Tidal server's HTTP API that behaves like TiCDC's `cdc cli`.
//!
//! Operators already have runbooks and scripts built on `cdc cli changefeed …`; the same flags,
//! the same output (pretty-printed JSON, the same "… successfully!" lines) and the same error
//! shape (`Error: [CDC:ErrX]message` on stderr, non-zero exit) let them point those at Tidal
//! unchanged. Everything goes through the Open API v2 served by `tidal server` (ticdc.md §2);
//! nothing here talks to PD or the metadata store directly, so the server stays the single place
//! that validates and applies changes.
//!
//! The module only uses external crates (never `crate::`), so that integration tests can compile
//! it on its own; output and prompts go through [`Io`] so they can be captured.

mod changefeed;
mod client;
mod config;
mod output;
mod tso;

use std::fmt;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use client::{ApiClient, ClientSecurity};

/// TiCDC's default server address (`cdc server` listens on 8300).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8300";

/// Talk to a Tidal server's HTTP API (changefeeds, TSO), like `cdc cli`.
#[derive(Debug, Args)]
pub struct CliArgs {
    /// Address of the Tidal server's HTTP API (`host:port`, `http://host:port` or
    /// `https://host:port`).
    #[arg(long, env = "TIDAL_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// PEM file with the certificate(s) to trust for an `https://` server (its CA, or its
    /// self-signed certificate), in addition to the system's.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// User for a server that requires HTTP basic auth.
    #[arg(long, env = "TIDAL_USER", global = true)]
    pub user: Option<String>,
    /// Password for `--user` (better: the TIDAL_PASSWORD environment variable, which does not
    /// show in the process list).
    #[arg(long, env = "TIDAL_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Log level of the client (debug, info, warn, error).
    #[arg(long, default_value = "warn", global = true)]
    pub log_level: String,
    /// Give up on any single HTTP request after this many seconds.
    #[arg(long, default_value_t = 30, global = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// `tidal cli` subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Manage replication tasks (changefeeds).
    Changefeed(changefeed::ChangefeedArgs),
    /// Query the TSO of the upstream PD through the server.
    Tso(tso::TsoArgs),
}

/// A failure of a CLI command, shown as `Error: [code]message` like TiCDC's client errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// RFC error code, e.g. `CDC:ErrChangeFeedNotExists`.
    pub code: String,
    /// Message without the code prefix.
    pub message: String,
}

impl CliError {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        CliError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// An error reported by the server as `{"error_msg","error_code"}`; the message loses its
    /// `[code]` prefix (it is added back when displayed).
    pub fn from_server(code: &str, error_msg: &str) -> Self {
        let code = if code.is_empty() {
            "CDC:ErrInternalServerError"
        } else {
            code
        };
        let prefix = format!("[{code}]");
        let message = error_msg.strip_prefix(&prefix).unwrap_or(error_msg);
        CliError::new(code, message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]{}", self.code, self.message)
    }
}

impl std::error::Error for CliError {}

/// Error codes of failures detected on the client side.
pub(crate) mod codes {
    /// The server could not be reached (connection refused, DNS, TLS).
    pub const SERVER_UNREACHABLE: &str = "CDC:ErrCliServerUnreachable";
    /// A request did not complete within the timeout.
    pub const REQUEST_TIMEOUT: &str = "CDC:ErrCliRequestTimeout";
    /// The server answered something that is not the API's JSON.
    pub const BAD_RESPONSE: &str = "CDC:ErrCliBadResponse";
    /// Invalid command-line input.
    pub const INVALID_PARAM: &str = "CDC:ErrAPIInvalidParam";
    /// The user answered "no" to a confirmation.
    pub const ABORTED: &str = "CDC:ErrCliAborted";
    /// Bad `--overwrite-checkpoint-ts`.
    pub const INVALID_CHECKPOINT_TS: &str = "CDC:ErrCliInvalidCheckpointTs";
    /// `--overwrite-checkpoint-ts` ahead of PD.
    pub const CHECKPOINT_TS_IN_FUTURE: &str = "CDC:ErrCliCheckpointTsIsInFuture";
    /// Operation not allowed in the changefeed's state.
    pub const UPDATE_REFUSED: &str = "CDC:ErrChangefeedUpdateRefused";
    /// Changefeed unknown.
    pub const NOT_EXISTS: &str = "CDC:ErrChangeFeedNotExists";
    /// Changefeed still there after removal.
    pub const DELETION_UNFINISHED: &str = "CDC:ErrChangeFeedDeletionUnfinished";
    /// Bad replica config file.
    pub const INVALID_CONFIG: &str = "CDC:ErrInvalidReplicaConfig";
}

/// Where a command writes its output and reads confirmations from.
pub struct Io<'a> {
    /// Results (stdout).
    pub out: &'a mut dyn Write,
    /// Answers to `[Y/N]` prompts (stdin).
    pub input: &'a mut dyn BufRead,
}

impl fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

impl Io<'_> {
    /// Writes text to the output; a broken pipe is not worth failing the command for.
    pub(crate) fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Reads one answer; `true` only for `y`/`Y` (TiCDC's `readYOrN`).
    pub(crate) fn read_yes(&mut self) -> bool {
        let mut line = String::new();
        match self.input.read_line(&mut line) {
            Ok(0) => {
                self.print("Received invalid input: EOF, abort the command.\n");
                false
            }
            Ok(_) => line.trim().eq_ignore_ascii_case("y"),
            Err(e) => {
                self.print(&format!(
                    "Received invalid input: {e}, abort the command.\n"
                ));
                false
            }
        }
    }
}

/// Runs `tidal cli …` with the process's stdout/stdin; errors go to stderr as
/// `Error: [CDC:ErrX]message` and give exit code 1.
pub fn run(args: CliArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let mut out = stdout.lock();
    let mut input = stdin.lock();
    let mut io = Io {
        out: &mut out,
        input: &mut input,
    };
    match run_with(args, &mut io) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command against `io`; the error is what [`run`] prints.
pub fn run_with(args: CliArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    let level = parse_log_level(&args.log_level)?;
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                CliError::new(
                    "CDC:ErrInternalServerError",
                    format!("cannot start the runtime: {e}"),
                )
            })?;
        let security = client_security(&args)?;
        let client = ApiClient::new(&args.server, Duration::from_secs(args.timeout), &security)?;
        runtime.block_on(async {
            match args.command {
                CliCommand::Changefeed(cmd) => changefeed::run(&client, cmd, io).await,
                CliCommand::Tso(cmd) => tso::run(&client, cmd, io).await,
            }
        })
    })
}

/// The `--ca`, `--user` and `--password` flags as a [`ClientSecurity`].
fn client_security(args: &CliArgs) -> Result<ClientSecurity, CliError> {
    let ca_pem = match &args.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::new(
                codes::INVALID_PARAM,
                format!("--ca {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    let auth = match (&args.user, &args.password) {
        (Some(user), Some(password)) => Some((user.clone(), password.clone())),
        (Some(_), None) => {
            return Err(CliError::new(
                codes::INVALID_PARAM,
                "--user needs a password (--password or TIDAL_PASSWORD)",
            ));
        }
        (None, Some(_)) => {
            return Err(CliError::new(
                codes::INVALID_PARAM,
                "--password given without --user",
            ));
        }
        (None, None) => None,
    };
    Ok(ClientSecurity { ca_pem, auth })
}

fn parse_log_level(s: &str) -> Result<tracing::Level, CliError> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warn" | "warning" => tracing::Level::WARN,
        "error" | "fatal" | "panic" => tracing::Level::ERROR,
        other => {
            return Err(CliError::new(
                codes::INVALID_PARAM,
                format!("invalid log level {other:?}: must be one of debug, info, warn, error"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_code_and_message() {
        let e = CliError::from_server(
            "CDC:ErrChangeFeedNotExists",
            "[CDC:ErrChangeFeedNotExists]changefeed not exists, cf-1",
        );
        assert_eq!(e.code, "CDC:ErrChangeFeedNotExists");
        assert_eq!(e.message, "changefeed not exists, cf-1");
        assert_eq!(
            e.to_string(),
            "[CDC:ErrChangeFeedNotExists]changefeed not exists, cf-1"
        );
        // a message without the prefix gets it on display
        let e = CliError::from_server("CDC:ErrX", "boom");
        assert_eq!(e.to_string(), "[CDC:ErrX]boom");
        let e = CliError::from_server("", "boom");
        assert_eq!(e.to_string(), "[CDC:ErrInternalServerError]boom");
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("WARN").unwrap(), tracing::Level::WARN);
        assert_eq!(parse_log_level("debug").unwrap(), tracing::Level::DEBUG);
        assert_eq!(parse_log_level("fatal").unwrap(), tracing::Level::ERROR);
        let e = parse_log_level("loud").unwrap_err();
        assert_eq!(e.code, codes::INVALID_PARAM);
    }

    #[test]
    fn prompts_accept_only_y() {
        for (answer, want) in [
            ("y\n", true),
            ("Y\n", true),
            ("yes\n", false),
            ("n\n", false),
        ] {
            let mut out = Vec::new();
            let mut input = answer.as_bytes();
            let mut io = Io {
                out: &mut out,
                input: &mut input,
            };
            assert_eq!(io.read_yes(), want, "{answer:?}");
        }
        let mut out = Vec::new();
        let mut input: &[u8] = b"";
        let mut io = Io {
            out: &mut out,
            input: &mut input,
        };
        assert!(!io.read_yes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received invalid input: EOF, abort the command.\n"
        );
    }
}
