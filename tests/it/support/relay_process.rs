//! The relay binary as a separate process, for what only a process of its own shows: its
//! start-up refusals, descriptor limits, SIGKILL and restart, resident memory read from
//! /proc. An empty environment but what a test gives it, and optionally a descriptor limit
//! set before it starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::fake_modal::FakeModal;
use super::relay::{token, Client, SECRET};

/// Where a relay process keeps its data.
enum DataDir {
    /// A directory of its own, removed with it.
    Own(tempfile::TempDir),
    /// A directory the test keeps (to start another process on the same data).
    Shared(PathBuf),
}

/// The relay binary on 127.0.0.1 (or `HOST` from `env`), its data directory and port.
pub struct RelayProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
    data: DataDir,
}

/// The relay binary's command line with an empty environment but `env`; `nofile` sets
/// `RLIMIT_NOFILE` (soft and hard) before it starts.
pub fn relay_command(
    data: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null());
    if let Some(nofile) = nofile {
        // SAFETY: setrlimit is async-signal-safe and only reads the struct passed to it.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RelayProcess {
    /// Start in a data directory of its own; returns once `/health` answers.
    pub async fn start(env: &[(&str, &str)], nofile: Option<u64>) -> RelayProcess {
        let data = tempfile::tempdir().unwrap();
        Self::spawn(DataDir::Own(data), env, nofile).await
    }

    /// Start on `data` (which outlives it) with the fake Modal as backend and, unless
    /// `database_url` is empty, PostgreSQL as store. Short leases: a killed process's job is
    /// failed within about three seconds.
    pub async fn on_fake_modal(data: &Path, fake: &FakeModal, database_url: &str) -> RelayProcess {
        Self::on_fake_modal_with(data, fake, database_url, &[]).await
    }

    /// `on_fake_modal` with `extra` settings added (they win over the defaults above).
    pub async fn on_fake_modal_with(
        data: &Path,
        fake: &FakeModal,
        database_url: &str,
        extra: &[(&str, &str)],
    ) -> RelayProcess {
        let mut env = vec![
            ("SUPABASE_JWT_SECRET", SECRET),
            ("USE_MODAL", "true"),
            ("MODAL_ENDPOINT", fake.url.as_str()),
            ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
            ("DATABASE_URL", database_url),
            ("JOB_LEASE_RENEW_SECS", "1"),
            ("JOB_LEASE_TTL_SECS", "2"),
            ("RUST_LOG", "warn"),
        ];
        env.extend_from_slice(extra);
        Self::spawn(DataDir::Shared(data.to_path_buf()), &env, None).await
    }

    async fn spawn(data: DataDir, env: &[(&str, &str)], nofile: Option<u64>) -> RelayProcess {
        let port = free_port();
        let dir = match &data {
            DataDir::Own(dir) => dir.path().to_path_buf(),
            DataDir::Shared(dir) => dir.clone(),
        };
        let child = relay_command(&dir, port, env, nofile)
            .spawn()
            .expect("relay binary starts");
        let relay = RelayProcess {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            data,
        };
        wait_healthy(relay.addr, String::new).await;
        relay
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        match &self.data {
            DataDir::Own(dir) => dir.path(),
            DataDir::Shared(dir) => dir,
        }
    }

    /// The WebSocket URL of the relay.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// A connected client that sent `init` for `user`, and the `init` reply.
    pub async fn user(&self, user: Uuid) -> (Client, serde_json::Value) {
        let mut c = Client::connect(&self.ws_url()).await;
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

    /// The descriptors the process has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("relay /proc fd")
            .count()
    }

    /// Send `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// SIGKILL: no drain, no last words.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait up to 20 s for `/health` to answer 200 at `addr`; `context` adds to the failure.
pub async fn wait_healthy(addr: std::net::SocketAddr, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health_status(addr).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "relay did not come up {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /health` with a 3 s deadline: its status, or `None` when it did not answer.
pub async fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}
