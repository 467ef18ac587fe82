//! Test harness: a real Debian `redis-server`, listening only on a unix socket in its own
//! temp dir (no port to race for), without persistence. It can be stopped and started again
//! on the same socket (a Redis restart: everything it held is gone), and is killed when the
//! handle is dropped. `start_tls` serves TLS on a loopback port instead, with a certificate
//! of a test CA whose file the relay is told to trust (`SSL_CERT_FILE`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The TLS port, for a server started by `start_tls`.
    tls_port: Option<u16>,
}

impl Redis {
    /// Start redis-server; returns once it answers PING.
    pub async fn start() -> Redis {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: run scripts/install-test-deps.sh (installs redis-server)"
        );
        let mut redis = Redis {
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            tls_port: None,
        };
        redis.resume().await;
        redis
    }

    /// Start redis-server serving TLS only, on a loopback port, with a certificate for
    /// `localhost` signed by a CA of its own (`ca_file`).
    pub async fn start_tls() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("CA file");
        std::fs::write(dir.path().join("server.pem"), server.pem()).expect("certificate file");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("key file");
        let mut redis = Redis {
            dir,
            child: None,
            tls_port: Some(crate::support::relay_process::free_port()),
        };
        redis.resume().await;
        redis
    }

    /// The CA a TLS server's certificate is signed by (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// What `REDIS_URL` holds.
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(port) => format!("rediss://localhost:{port}"),
            None => format!("redis+unix://{}", self.socket().display()),
        }
    }

    /// Kill the server (SIGKILL: nothing is flushed, every connection drops).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Start the server again on the same socket, empty.
    pub async fn resume(&mut self) {
        let mut command = Command::new(REDIS_SERVER);
        // If the test process dies without dropping the handle, redis-server stops too.
        // SAFETY: prctl is async-signal-safe, as required between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        command.args(["--port", "0", "--save", "", "--appendonly", "no"]);
        match self.tls_port {
            Some(port) => {
                let dir = self.dir.path();
                command
                    .args(["--bind", "127.0.0.1", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(dir.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(dir.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(dir.join("ca.pem"))
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command
                    .arg("--unixsocket")
                    .arg(self.socket())
                    .args(["--unixsocketperm", "700"]);
            }
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let client = match self.tls_port {
            Some(_) => {
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(self.ca_file()).expect("CA file")),
                };
                redis::Client::build_with_tls(self.url(), certificates).expect("redis url")
            }
            None => redis::Client::open(self.url()).expect("redis url"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer: {}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
