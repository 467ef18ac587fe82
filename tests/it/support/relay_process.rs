//! The relay binary as a separate process: an empty environment but what a test gives it,
//! and optionally a descriptor limit set before it starts.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// The relay binary on 127.0.0.1 (or `HOST` from `env`), its own data directory and port.
pub struct RelayProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
    pub data: tempfile::TempDir,
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
    pub async fn start(env: &[(&str, &str)], nofile: Option<u64>) -> RelayProcess {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = relay_command(data.path(), port, env, nofile)
            .spawn()
            .expect("relay binary starts");
        let relay = RelayProcess {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while health_status(relay.addr).await != Some(200) {
            assert!(Instant::now() < deadline, "relay did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        relay
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
