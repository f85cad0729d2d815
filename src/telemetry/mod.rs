//! Logs, metrics, traces and per-call context. Logs are human-readable text
//! locally and JSON in containers; `RUST_LOG` overrides the configured level.
//! Built with `--features otel`, spans are also exported over OTLP/gRPC when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set.

mod labels;
pub mod metrics;
#[cfg(feature = "otel")]
mod otel;
pub(crate) mod rpc_layer;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Keeps trace export alive; dropping it flushes pending spans.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    _otel: Option<otel::Exporter>,
}

/// Log output (`[log]` in the config): telemetry's own settings, so that
/// telemetry, which every layer reports to, depends on no layer.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `text` (human-readable) or `json`.
    pub json: bool,
    /// Default filter directive, overridden by `RUST_LOG`.
    pub level: String,
}

/// Installs the global subscriber. Call once, from `main`, inside the runtime.
pub fn init(settings: &LogSettings) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    #[cfg(feature = "otel")]
    let (otel_layer, otel) = match otel::Exporter::from_env() {
        Some(exporter) => (Some(exporter.layer()), Some(exporter)),
        None => (None, None),
    };
    #[cfg(not(feature = "otel"))]
    let otel_layer: Option<tracing_subscriber::layer::Identity> = None;
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    if settings.json {
        registry.with(fmt::layer().json().with_current_span(true)).init();
    } else {
        // Colours only for a person at a terminal, never into a log collector.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
            .init();
    }
    TelemetryGuard {
        #[cfg(feature = "otel")]
        _otel: otel,
    }
}
