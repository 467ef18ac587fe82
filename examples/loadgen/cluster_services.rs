//! The processes behind `loadgen cluster-*` (examples/loadgen/cluster.rs): relay replicas,
//! a database copied from the test PostgreSQL's stand-in template, and a `redis-server`.

use super::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

const PG_TEMPLATE: &str = "relay_template";
const DEFAULT_REDIS_SERVER: &str = "/usr/bin/redis-server";

pub(super) async fn spawn_replica(
    bin: &Path,
    upstream: SocketAddr,
    modal_secret: &str,
    jwt_secret: &str,
    database_url: &str,
    redis_url: Option<String>,
    name: &str,
) -> Result<Relay> {
    if !bin.is_file() {
        return Err(BenchError::Relay(format!(
            "{} not found (cargo build --release)",
            bin.display()
        )));
    }
    let port = free_port()?;
    let data_dir = tempfile::tempdir()?;
    let log_path = data_dir.path().join(format!("relay-{name}.log"));
    let log = File::create(&log_path)?;
    let mut command = Command::new(bin);
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    // The replicas reach PostgreSQL directly, where prepared statements are kept; an explicit
    // DATABASE_PREPARED_STATEMENTS in this process's environment wins (for A/B runs).
    if std::env::var_os("DATABASE_PREPARED_STATEMENTS").is_none() {
        command.env("DATABASE_PREPARED_STATEMENTS", "true");
    }
    let child = command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data_dir.path().join("data"))
        .env("DATABASE_URL", database_url)
        .env("DATABASE_POOL_SIZE", "32")
        .env("SUPABASE_JWT_SECRET", jwt_secret)
        .env("USE_MODAL", "true")
        .env("MODAL_ENDPOINT", format!("http://{upstream}/generate_game"))
        .env("MODAL_INTERNAL_SECRET", modal_secret)
        .env("MAX_JOBS_TOTAL", "1000000")
        .env("MAX_JOBS_PER_USER", "1")
        .env("RATE_LIMIT_GENERATIONS_PER_MIN", "0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    let pid = child.id();
    let mut relay = Relay {
        child,
        pid,
        port,
        jwt_secret: jwt_secret.to_string(),
        log_path,
        _data_dir: data_dir,
    };
    relay.wait_healthy().await?;
    Ok(relay)
}

/// The test PostgreSQL cluster of `scripts/test-postgres.sh`.
pub(super) struct Postgres {
    socket_dir: String,
}

/// A database copied from the stand-in template, with the benchmark's users registered.
pub(super) struct Database {
    socket_dir: String,
    name: String,
    pub(super) url: String,
}

impl Postgres {
    pub(super) fn locate() -> Result<Self> {
        let socket_dir = match std::env::var("LOADGEN_PG_SOCKET_DIR") {
            Ok(dir) => dir,
            Err(_) => std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/test-postgres/socket_dir"
            ))
            .map_err(|e| {
                BenchError::Relay(format!("no PostgreSQL: run scripts/test-postgres.sh ({e})"))
            })?
            .trim()
            .to_string(),
        };
        Ok(Self { socket_dir })
    }

    async fn superuser(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let config = format!("host={} user=postgres dbname={dbname}", self.socket_dir);
        let (client, conn) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .map_err(|e| BenchError::Relay(format!("PostgreSQL: {e}")))?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub(super) async fn create_database(&self, users: &[Uuid]) -> Result<Database> {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let pg_err = |e: tokio_postgres::Error| BenchError::Relay(format!("PostgreSQL: {e}"));
        self.superuser("postgres")
            .await?
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}"))
            .await
            .map_err(pg_err)?;
        // What GoTrue does at sign-up; the trigger creates each profile.
        self.superuser(&name)
            .await?
            .execute(
                "INSERT INTO auth.users (id, email) SELECT id, id::text || '@example.test' FROM unnest($1::uuid[]) AS id",
                &[&users],
            )
            .await
            .map_err(pg_err)?;
        Ok(Database {
            url: format!(
                "postgresql://relay:relay-test@/{name}?host={}",
                self.socket_dir
            ),
            socket_dir: self.socket_dir.clone(),
            name,
        })
    }
}

impl Database {
    pub(super) async fn drop(self) {
        let postgres = Postgres {
            socket_dir: self.socket_dir,
        };
        if let Ok(client) = postgres.superuser("postgres").await {
            let _ = client
                .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .await;
        }
    }
}

/// A `redis-server` on a unix socket in its own temp dir, without persistence.
pub(super) struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub(super) fn start() -> Result<Self> {
        let bin =
            std::env::var("LOADGEN_REDIS_SERVER").unwrap_or_else(|_| DEFAULT_REDIS_SERVER.into());
        let dir = tempfile::tempdir()?;
        let child = Command::new(&bin)
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Relay(format!("{bin}: {e}")))?;
        let redis = Self { child, dir };
        let deadline = Instant::now() + HEALTH_DEADLINE;
        while redis_command(&redis.socket(), "PING").is_err() {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("redis-server start"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }
}

/// One inline command to the Redis at `socket`; the whole reply as text.
fn redis_command(socket: &Path, command: &str) -> Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\nQUIT\r\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// `used_memory` of `INFO memory`, in bytes.
pub(super) fn used_memory(socket: &Path) -> Result<u64> {
    let info = redis_command(socket, "INFO memory")?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BenchError::Protocol("INFO memory has no used_memory".into()))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
