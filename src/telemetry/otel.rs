//! OpenTelemetry trace export over OTLP/gRPC (feature `otel`). Configured by
//! the standard OTEL_* environment variables; nothing is exported unless
//! OTEL_EXPORTER_OTLP_ENDPOINT is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::{Layer, registry::LookupSpan};

/// The tracer provider; shut down (flushed) on drop.
#[derive(Debug)]
pub(super) struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// An exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set and valid.
    pub(super) fn from_env() -> Option<Exporter> {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("calgate: OpenTelemetry export disabled: {error}");
                return None;
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("calgate").build())
            .build();
        Some(Exporter { provider })
    }

    /// The tracing layer that turns spans into OpenTelemetry spans.
    pub(super) fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("calgate"))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}
