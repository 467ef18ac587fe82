//! The relay binary as a process of its own, backed by the fake Modal: for what only a
//! separate process shows (SIGKILL and restart, resident memory read from /proc).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

use super::fake_modal::FakeModal;
use super::relay::{token, Client, SECRET};

pub struct RelayProcess {
    pub child: Child,
    pub port: u16,
}

impl RelayProcess {
    /// Start on `data_dir` (and `database_url`, empty for SQLite) and wait for `/health`.
    pub async fn start(
        data_dir: &std::path::Path,
        fake: &FakeModal,
        database_url: &str,
    ) -> RelayProcess {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", data_dir)
            .env("SUPABASE_JWT_SECRET", SECRET)
            .env("USE_MODAL", "true")
            .env("MODAL_ENDPOINT", &fake.url)
            .env("MODAL_INTERNAL_SECRET", &fake.secret)
            .env("DATABASE_URL", database_url)
            // Short leases: a killed instance's job is failed within about three seconds.
            .env("JOB_LEASE_RENEW_SECS", "1")
            .env("JOB_LEASE_TTL_SECS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("relay binary starts");
        let process = RelayProcess { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// A connected client that sent `init` for `user`, and the `init` reply.
    pub async fn user(&self, user: Uuid) -> (Client, serde_json::Value) {
        let mut c = Client::connect(&format!("ws://127.0.0.1:{}/", self.port)).await;
        let init = c.init(&token(user, 3600)).await;
        (c, init)
    }

    /// A figure of `/proc/<pid>/status` in KiB, e.g. `VmRSS:` or `VmHWM:` (the peak).
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("relay /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("figure in /proc status")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
