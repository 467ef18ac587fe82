//! `ADMIN_LISTEN` puts `/metrics`, `/ops` and `/admin/*` on a listener of their own (and off
//! the public one); `/metrics` carries the process's own resources.

use crate::support::relay;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const ADMIN_TOKEN: &str = "admin-listener-test-token";

struct Running {
    child: Child,
    public: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn relay_command(dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.join("data"))
        .env("SUPABASE_JWT_SECRET", relay::SECRET)
        .env("ADMIN_TOKEN", ADMIN_TOKEN);
    command
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let child = relay_command(dir.path(), public)
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay binary starts");
    let running = Running {
        child,
        public,
        admin,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for port in [public, admin] {
        while get(port, "/health", false).await.0 != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "port {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    running
}

/// Status and body of `GET http://127.0.0.1:{port}{path}`; status 0 when nothing answers.
async fn get(port: u16, path: &str, with_token: bool) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
    if with_token {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

#[tokio::test]
async fn operator_routes_move_to_the_admin_listener() {
    let relay = start().await;
    for path in ["/metrics", "/ops", "/admin/status", "/admin/backend"] {
        let (status, body) = get(relay.public, path, true).await;
        assert_eq!(status, 404, "public {path}: {body}");
    }
    let (status, body) = get(relay.admin, "/admin/status", true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepting\":true"), "{body}");
    let (status, _) = get(relay.admin, "/admin/status", false).await;
    assert_eq!(status, 401, "the admin token is still required");
    let (status, page) = get(relay.admin, "/ops", false).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    // Probes answer on both, and agree.
    assert_eq!(
        get(relay.public, "/ready", false).await.0,
        get(relay.admin, "/ready", false).await.0
    );
    // The browser's routes stay public only.
    assert_eq!(get(relay.admin, "/api/projects", false).await.0, 404);
}

#[tokio::test]
async fn metrics_carry_the_process_resources() {
    let relay = start().await;
    let (status, text) = get(relay.admin, "/metrics", false).await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(
        value("process_open_fds") >= 5.0,
        "two listeners, stdio, the database"
    );
    assert!(value("process_threads") >= 2.0);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_start_time_seconds") > 1.7e9);
    assert!(text.contains("relay_websockets_open 0"));
}

#[test]
fn a_bad_admin_address_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let Output { status, stderr, .. } = relay_command(dir.path(), free_port())
        .env("ADMIN_LISTEN", "localhost")
        .output()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(stderr.contains("ADMIN_LISTEN"), "{stderr}");
}

/// Every metric the Grafana dashboard (`deploy/grafana/dreamcore-relay.json`) queries is one
/// the relay exports, so the dashboard cannot drift from `/metrics` unnoticed.
#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let relay = start().await;
    let (_, text) = get(relay.admin, "/metrics", false).await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/dreamcore-relay.json")).unwrap();
    let mut expressions = Vec::new();
    collect_exprs(&dashboard, &mut expressions);
    assert!(expressions.len() > 10, "{expressions:?}");
    let mut queried = std::collections::BTreeSet::new();
    for expr in &expressions {
        // Metric names are the identifiers followed by `{`.
        for (at, _) in expr.match_indices('{') {
            let name: String = expr[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.starts_with("relay_") || name.starts_with("process_") {
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 12, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| exported.contains(base))
            .unwrap_or(name);
        assert!(
            exported.contains(family),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
