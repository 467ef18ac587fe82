//! Test harness: a real Debian nginx in front of an upstream (normally a `TestRelay`),
//! configured like the production deploy (docs/protocol.md §1.1): HTTP/1.1 to the upstream,
//! the `Upgrade`/`Connection` pair passed through, forwarding headers, 86400 s timeouts.
//! nginx runs as a child process on 127.0.0.1:<free port> with everything (pid, logs, temp
//! paths) in its own temp dir, and is killed when the handle is dropped.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Start nginx proxying everything to `upstream`; returns once it accepts connections.
    pub async fn start(upstream: SocketAddr) -> Nginx {
        Self::start_round_robin(&[upstream]).await
    }

    /// Start nginx balancing connections over `upstreams` in turn (nginx's default
    /// round-robin, no sticky sessions), as a plain load balancer in front of replicas.
    pub async fn start_round_robin(upstreams: &[SocketAddr]) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: run scripts/install-test-deps.sh (installs nginx-light)"
        );
        // A port picked by binding :0 can be taken again before nginx binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start(upstreams).await {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    async fn try_start(upstreams: &[SocketAddr]) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, upstreams)).map_err(|e| e.to_string())?;
        let mut command = Command::new(NGINX);
        // If the test process dies without dropping the handle, nginx stops too.
        // SAFETY: prctl is async-signal-safe, as required between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // Without -e nginx opens the distribution's error log before reading the config.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {NGINX}: {e}"))?;
        let mut nginx = Nginx { addr, child, dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited ({status}): {}", nginx.error_log()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(nginx);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "nginx not listening on {addr}: {}",
                    nginx.error_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// nginx's error log so far (for assertion messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stop an nginx master: SIGTERM lets it stop its worker (SIGKILL to the master alone would
/// orphan it); SIGKILL only if it does not go within 5 s.
pub fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn config(dir: &Path, listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("        server {addr};\n"))
        .collect();
    let site = format!(
        r#"upstream relays {{
{servers}    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    server {{
        listen {listen};
        server_name _;

        location / {{
            proxy_pass http://relays;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 86400s;
            proxy_send_timeout 86400s;
        }}
    }}"#
    );
    main_context(dir, &site)
}

/// nginx's main context with `http` inside its `http` block, every file in `dir`; the access
/// log records which upstream served each request.
pub fn main_context(dir: &Path, http: &str) -> String {
    let dir = dir.display();
    // As root the workers would drop to `nobody`, who cannot enter the 0700 temp dir.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        r#"{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format upstream '$upstream_addr';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    {http}
}}
"#
    )
}
