//! Logs, metrics and per-call context. Logs are human-readable text locally
//! and JSON in containers; `RUST_LOG` overrides the configured level.

pub mod metrics;
pub mod rpc_layer;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogSettings;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    if settings.json {
        registry.with(fmt::layer().json().with_current_span(true)).init();
    } else {
        // Colours only for a person at a terminal, never into a log collector.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
            .init();
    }
}
