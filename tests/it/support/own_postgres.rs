//! A PostgreSQL cluster of a test's own, started by `scripts/test-postgres.sh` in a state
//! directory of its own: it can be stopped and started again (an outage) without touching
//! the shared cluster the other tests use, and can serve TLS on a loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster started by `scripts/test-postgres.sh` in a state directory of its own.
pub struct OwnPostgres {
    state: tempfile::TempDir,
    socket_dir: String,
    /// TLS files and port, for a cluster started by `start_tls`.
    tls: Option<(PathBuf, u16)>,
}

fn script(state: &Path, tls: Option<&(PathBuf, u16)>, command: &str) -> std::process::Output {
    let mut bash = Command::new("bash");
    if let Some((dir, port)) = tls {
        bash.env("TEST_PG_TLS_DIR", dir)
            .env("TEST_PG_PORT", port.to_string());
    }
    let output = bash
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-postgres.sh"
        ))
        .arg(command)
        .env("TEST_PG_STATE", state)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "test-postgres.sh {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl OwnPostgres {
    /// Listening on its unix socket only.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Also on `127.0.0.1:port` with TLS, presenting `dir/server.pem` (key `dir/server.key`).
    pub async fn start_tls(dir: &Path, port: u16) -> Self {
        Self::start_with(Some((dir.to_path_buf(), port))).await
    }

    async fn start_with(tls: Option<(PathBuf, u16)>) -> Self {
        let state = tempfile::tempdir().unwrap();
        let path = state.path().to_path_buf();
        let options = tls.clone();
        tokio::task::spawn_blocking(move || script(&path, options.as_ref(), "start"))
            .await
            .unwrap();
        let socket_dir = std::fs::read_to_string(state.path().join("socket_dir"))
            .unwrap()
            .trim()
            .to_string();
        Self {
            state,
            socket_dir,
            tls,
        }
    }

    /// The port the server's socket (and TLS listener, if any) is named after.
    fn port(&self) -> u16 {
        self.tls.as_ref().map_or(5432, |(_, port)| *port)
    }

    /// The relay's `DATABASE_URL`, over the unix socket.
    pub fn relay_url(&self) -> String {
        self.relay_url_in(Path::new(&self.socket_dir))
    }

    /// The server's unix socket file.
    pub fn socket(&self) -> PathBuf {
        Path::new(&self.socket_dir).join(format!(".s.PGSQL.{}", self.port()))
    }

    /// The relay's `DATABASE_URL`, over a socket of the same name in `dir` (a [`SocketLink`]'s).
    ///
    /// [`SocketLink`]: crate::support::socket_link::SocketLink
    pub fn relay_url_in(&self, dir: &Path) -> String {
        format!(
            "postgresql://relay:relay-test@/relay_dev?host={}&port={}",
            dir.display(),
            self.port()
        )
    }

    /// `pause` (stop the server, keep its files) or `resume`.
    pub async fn run(&self, command: &'static str) {
        let path: PathBuf = self.state.path().to_path_buf();
        let tls = self.tls.clone();
        tokio::task::spawn_blocking(move || script(&path, tls.as_ref(), command))
            .await
            .unwrap();
    }

    /// A superuser connection to the relay's database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let dsn = format!(
            "host={} port={} user=postgres dbname=relay_dev",
            self.socket_dir,
            self.port()
        );
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .expect("the test's own PostgreSQL answers");
        tokio::spawn(conn);
        client
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        script(self.state.path(), self.tls.as_ref(), "stop");
    }
}
