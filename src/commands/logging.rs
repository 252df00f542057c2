//! The binary's logging: one `tracing` subscriber on stderr, its level from `RUST_LOG` when set,
//! else the command's default (for `tidal server`, the `log-level` setting), changeable at run
//! time through the server's `POST /api/v2/log`.
//!
//! Colour codes are only written to a terminal: server logs usually go to files or a collector,
//! where escape sequences are noise.

use std::io::IsTerminal;
use std::sync::Arc;

use tidal_control::api::LogControl;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// Changes the installed subscriber's level.
struct ReloadLevel(reload::Handle<EnvFilter, Registry>);

impl LogControl for ReloadLevel {
    fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the subscriber (`RUST_LOG` wins over `default_level`) and returns a handle that
/// changes its level. Installing twice keeps the first subscriber.
pub fn init(default_level: &str) -> Arc<dyn LogControl> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(default_level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let output = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    Arc::new(ReloadLevel(handle))
}
