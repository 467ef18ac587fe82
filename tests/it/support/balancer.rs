//! Test harness: the deploy kit's own load balancer (deploy/nginx.conf, round-robin over the
//! replicas) run by a real Debian nginx in front of test relays. The file is used as written;
//! only what names the containers changes: the `server relayN:3000` lines become the test
//! relays' addresses and `listen 80` a free local port. nginx's main context (pid, logs, temp
//! paths) lives in a temp dir, and the access log records which replica served each request.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::nginx::{main_context, NGINX};

/// The load balancer configuration the deploy kit ships.
pub const DEPLOY_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf");

pub struct Balancer {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Balancer {
    /// Check the configuration with `nginx -t`, start nginx, return once it accepts.
    pub async fn start(replicas: &[SocketAddr]) -> Balancer {
        let mut last_error = String::new();
        // A port picked by binding :0 can be taken again before nginx binds it: retry.
        for _ in 0..5 {
            match Self::try_start(replicas).await {
                Ok(balancer) => return balancer,
                Err(e) => last_error = e,
            }
        }
        panic!("the deploy load balancer did not start: {last_error}");
    }

    async fn try_start(replicas: &[SocketAddr]) -> Result<Balancer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let site = std::fs::read_to_string(DEPLOY_CONF).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.path().join("relay.conf"),
            site_for(&site, addr, replicas),
        )
        .map_err(|e| e.to_string())?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main_context(dir.path(), &site_include(dir.path())))
            .map_err(|e| e.to_string())?;
        let test = nginx(dir.path(), &conf)
            .arg("-t")
            .output()
            .map_err(|e| format!("spawn {NGINX}: {e}"))?;
        if !test.status.success() {
            panic!(
                "nginx -t refuses deploy/nginx.conf: {}",
                String::from_utf8_lossy(&test.stderr)
            );
        }
        let mut command = nginx(dir.path(), &conf);
        // If the test process dies without dropping the handle, nginx stops too.
        // SAFETY: prctl is async-signal-safe, as required between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .args(["-g", "daemon off;"])
            .spawn()
            .map_err(|e| format!("spawn {NGINX}: {e}"))?;
        let mut balancer = Balancer { addr, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                return Err(format!("nginx exited ({status}): {}", balancer.error_log()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(balancer);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("nginx not listening on {addr}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The replica address of every request proxied so far (one line per request, in order;
    /// a request retried on another replica lists both, comma-separated).
    pub fn upstreams(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        crate::support::nginx::stop(&mut self.child);
    }
}

fn nginx(dir: &Path, conf: &Path) -> Command {
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        // Without -e nginx opens the distribution's error log before reading the config.
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// deploy/nginx.conf with the test relays for the containers and a local port for port 80.
fn site_for(site: &str, listen: SocketAddr, replicas: &[SocketAddr]) -> String {
    let servers: String = replicas
        .iter()
        .map(|r| format!("    server {r} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    let mut out = String::new();
    let mut servers_written = false;
    for line in site.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server relay") {
            if !servers_written {
                out.push_str(&servers);
                servers_written = true;
            }
        } else if trimmed == "listen 80;" {
            out.push_str(&format!("    listen {listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        servers_written,
        "deploy/nginx.conf has no `server relayN:3000` lines"
    );
    out
}

/// The `http` block's part: the site file the deploy kit's configuration becomes.
fn site_include(dir: &Path) -> String {
    format!("include {}/relay.conf;", dir.display())
}
