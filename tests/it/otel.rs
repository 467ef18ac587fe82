//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the relay binary exports its spans over OTLP/HTTP:
//! one trace per job, the `job` span at its root and the backend run and the store writes
//! beneath it. The collector here is a real HTTP server decoding the real protobuf payload.

use crate::support::fake_modal;
use crate::support::relay;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use fake_modal::{FakeModal, Script};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use relay::{token, Client, SECRET};
use serde_json::json;
use uuid::Uuid;

/// Spans received, with the service name of the resource that sent them.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn collect(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf payload");
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push((service.clone(), span));
            }
        }
    }
    ""
}

async fn start_collector() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test]
async fn a_job_is_one_trace_with_its_stages_beneath_it() {
    let fake = FakeModal::start(|_| Script::success(&["hello"])).await;
    let (collector, received) = start_collector().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.path().join("data"))
        .env("SUPABASE_JWT_SECRET", SECRET)
        .env("USE_MODAL", "true")
        .env("MODAL_ENDPOINT", &fake.url)
        .env("MODAL_INTERNAL_SECRET", &fake.secret)
        .env("DRAIN_TIMEOUT_SECS", "5")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay binary starts");
    let url = format!("ws://127.0.0.1:{port}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let user = Uuid::new_v4();
    let mut client = Client::connect(&url).await;
    assert_eq!(client.init(&token(user, 3600)).await["type"], "init");
    client.create_project("traced").await;
    client.send(json!({"type":"message","content":"go"})).await;
    let started = client.recv_until("jobStarted").await.pop().unwrap();
    let job_id = started["job"]["id"].as_str().unwrap().to_string();
    client.recv_until("completed").await;
    client.close().await;

    // SIGTERM: drain, stop, flush the spans still buffered.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(exit.unwrap().success());

    let spans = received.lock().unwrap().clone();
    let job = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.name == "job" && attribute(span, "job_id").as_deref() == Some(&job_id))
        .unwrap_or_else(|| panic!("no job span among {:?}", names(&spans)));
    assert!(spans
        .iter()
        .all(|(service, _)| service == "dreamcore-relay"));
    assert_eq!(attribute(job, "user_id"), Some(user.to_string()));
    assert_eq!(attribute(job, "backend").as_deref(), Some("modal"));

    let children: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.trace_id == job.trace_id && span.parent_span_id == job.span_id)
        .collect();
    let child_names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(child_names.contains(&"backend_run"), "{child_names:?}");
    assert!(child_names.contains(&"store_write"), "{child_names:?}");
    // The backend's own span sits under the run.
    let run = children.iter().find(|s| s.name == "backend_run").unwrap();
    assert!(
        spans
            .iter()
            .any(|(_, s)| s.name == "modal_run" && s.parent_span_id == run.span_id),
        "{:?}",
        names(&spans)
    );
}

fn names(spans: &[(String, Span)]) -> Vec<&str> {
    spans.iter().map(|(_, s)| s.name.as_str()).collect()
}
