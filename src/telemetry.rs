//! Logs to stdout and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span to an
//! OpenTelemetry collector over OTLP/HTTP: a job is one trace (the `job` span with its
//! backend run and store writes beneath it), an HTTP request another.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use dreamcore_relay::config::{Config, LogFormat};

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "dreamcore-relay";

/// Keeps the span exporter; [`Telemetry::shutdown`] sends what is still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;

/// Install the global subscriber. Call outside the async runtime: the exporter's HTTP client
/// and its batch thread are blocking.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut layers: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = Vec::new();
    layers.push(match config.server.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    });
    let provider = match config.telemetry.otlp_endpoint.trim_end_matches('/') {
        "" => None,
        base => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
            let mut resource = Resource::builder();
            if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                resource = resource.with_service_name(SERVICE_NAME);
            }
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build();
            let tracer = provider.tracer(SERVICE_NAME);
            layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
            Some(provider)
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    if provider.is_some() {
        tracing::info!(
            endpoint = %config.telemetry.otlp_endpoint,
            "exporting spans over OTLP/HTTP"
        );
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flush buffered spans and stop the exporter (blocking; call after the runtime ends).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("span export did not shut down cleanly: {e}");
            }
        }
    }
}
