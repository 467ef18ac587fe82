//! Draining behind a plain load balancer (docs/operations.md §4): from SIGTERM a relay accepts
//! no connection (the listening socket is closed), so the deploy kit's nginx, which has only
//! passive checks, sends every newcomer to another replica. Clustered, the draining relay's
//! sockets get 1012 at once and their tabs follow the job from another replica to its end;
//! the relay exits 0 once its jobs are done, or fails them recoverably at `DRAIN_TIMEOUT_SECS`
//! where every watcher sees it. Relays are real processes; PostgreSQL, Redis and nginx too.

use crate::support::balancer::Balancer;
use crate::support::fake_modal::{self, FakeModal, GenerateRequest, Script, Step};
use crate::support::postgres::PgDb;
use crate::support::redis::Redis;
use crate::support::relay::{stream_text, token, Client, Received, SECRET};
use crate::support::relay_process::{free_port, health_status, relay_command};

use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

/// One relay process that can be sent SIGTERM.
struct Replica {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Replica {
    /// Start the relay binary on `port` and wait until `/health` answers.
    async fn start(port: u16, env: &[(&str, &str)]) -> Replica {
        let data = tempfile::tempdir().expect("temp dir");
        let child = relay_command(data.path(), port, env, None)
            .spawn()
            .expect("relay binary starts");
        let replica = Replica {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while health_status(replica.addr).await != Some(200) {
            assert!(Instant::now() < deadline, "relay did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn running_jobs(&self) -> u64 {
        let ready: Value = reqwest::get(format!("http://{}/ready", self.addr))
            .await
            .expect("/ready")
            .json()
            .await
            .expect("/ready json");
        ready["runningJobs"].as_u64().expect("runningJobs")
    }

    /// The exit status, waiting at most `within`.
    async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the relay did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until connecting to `addr` is refused (the listening socket is gone).
async fn until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A browser's reconnect loop: connect through the load balancer and `init`, retrying a
/// refused or failed attempt the way the page does.
async fn reconnect(balancer: &Balancer, user: Uuid) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let mut client = Client::try_connect(&balancer.ws_url()).await?;
            let reply = client.init(&token(user, 3600)).await;
            (reply["type"] == "init").then_some(client)
        })
        .await;
        if let Ok(Some(client)) = attempt {
            return client;
        }
        assert!(Instant::now() < deadline, "no replica took the reconnect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL, Redis and a fake Modal shared by the replicas.
struct Shared {
    pg: PgDb,
    redis: Redis,
    fake: FakeModal,
}

impl Shared {
    async fn start(script: impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static) -> Shared {
        Shared {
            pg: PgDb::create().await,
            redis: Redis::start().await,
            fake: FakeModal::start(script).await,
        }
    }

    async fn replica(&self, port: u16, drain_timeout: &str) -> Replica {
        let (db, redis) = (self.pg.relay_url(), self.redis.url());
        Replica::start(
            port,
            &[
                ("SUPABASE_JWT_SECRET", SECRET),
                ("USE_MODAL", "true"),
                ("MODAL_ENDPOINT", &self.fake.url),
                ("MODAL_INTERNAL_SECRET", &self.fake.secret),
                ("DATABASE_URL", &db),
                ("REDIS_URL", &redis),
                ("JOB_LEASE_RENEW_SECS", "1"),
                ("JOB_LEASE_TTL_SECS", "3"),
                ("DRAIN_TIMEOUT_SECS", drain_timeout),
            ],
        )
        .await
    }

    async fn user(&self) -> Uuid {
        let user = Uuid::new_v4();
        self.pg
            .register_user(user, &format!("{user}@example.com"))
            .await;
        user
    }
}

fn texts(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("[{i:02}]")).collect()
}

#[tokio::test]
async fn rolling_restart_behind_nginx_the_tab_follows_its_job_to_the_end() {
    let all = texts(40);
    let script = all.clone();
    let shared = Shared::start(move |_| Script::paced(&script, Duration::from_millis(100))).await;
    let (old_port, new_port) = (free_port(), free_port());
    let mut old = shared.replica(old_port, "60").await;
    let balancer = Balancer::start(&[old.addr, ([127, 0, 0, 1], new_port).into()]).await;
    let user = shared.user().await;

    // Only the old replica runs: the tab and its job land there.
    let mut tab = reconnect(&balancer, user).await;
    let project = tab.create_project("ローリング").await;
    tab.select(project).await;
    tab.send(json!({"type":"message","content":"作って"})).await;
    tab.recv_until("jobStarted").await;
    tab.recv_until("stream").await;
    assert_eq!(old.running_jobs().await, 1);

    // The rolling update: the new replica first, then SIGTERM to the old one mid-job.
    let new = shared.replica(new_port, "60").await;
    old.sigterm();
    until_refused(old.addr).await;
    assert!(
        old.is_running(),
        "the old replica drains while its job runs"
    );
    let close = loop {
        if let Received::Closed(close) = tab.next().await {
            break close;
        }
    };
    assert_eq!(
        close.map(|c| c.0),
        Some(1012),
        "clustered: sockets close at once"
    );

    // The page reconnects through nginx, lands on the new replica, and follows the job there.
    let mut tab = reconnect(&balancer, user).await;
    let selected = tab.select(project).await;
    assert_eq!(selected["activeJob"]["status"], "processing", "{selected}");
    let events = tab.recv_until_any(&["completed", "failed"]).await;
    assert_eq!(events.last().unwrap()["type"], "completed", "{events:?}");
    assert_eq!(
        stream_text(&events),
        all.concat(),
        "every event once, in order"
    );
    assert!(old.exit_status(Duration::from_secs(20)).await.success());
    assert_eq!(new.running_jobs().await, 0);
    drop((tab, balancer, new));
    shared.pg.drop_db().await;
}

#[tokio::test]
async fn at_the_drain_timeout_every_watcher_on_every_replica_sees_the_job_fail() {
    let shared = Shared::start(|_| {
        Script::Stream(vec![
            fake_modal::status("Sandbox connected (warm)"),
            Step::Hang,
        ])
    })
    .await;
    let mut owner = shared.replica(free_port(), "2").await;
    let other = shared.replica(free_port(), "60").await;
    let user = shared.user().await;

    let mut starter = Client::connect(&format!("ws://{}/", owner.addr)).await;
    starter.init(&token(user, 3600)).await;
    let project = starter.create_project("タイムアウト").await;
    starter.select(project).await;
    starter
        .send(json!({"type":"message","content":"作って"}))
        .await;
    // `started` follows the row's move to processing, which the other replica then reads.
    starter.recv_until("started").await;
    let mut watcher = Client::connect(&format!("ws://{}/", other.addr)).await;
    watcher.init(&token(user, 3600)).await;
    let selected = watcher.select(project).await;
    assert_eq!(selected["activeJob"]["status"], "processing", "{selected}");

    owner.sigterm();
    until_refused(owner.addr).await;
    assert_eq!(starter.expect_close().await.map(|c| c.0), Some(1012));
    let events = watcher.recv_until_any(&["failed", "completed"]).await;
    let failed = events.last().unwrap();
    assert_eq!(failed["type"], "failed", "{events:?}");
    assert_eq!(failed["code"], "SERVER_RESTARTING", "{failed}");
    assert_eq!(failed["recoverable"], true, "{failed}");
    assert!(owner.exit_status(Duration::from_secs(20)).await.success());
    drop((watcher, other));
    shared.pg.drop_db().await;
}

#[tokio::test]
async fn a_draining_single_node_refuses_connections_and_keeps_its_sockets_to_the_end() {
    let fake = FakeModal::start(|_| {
        Script::Stream(vec![
            fake_modal::status("Sandbox connected (warm)"),
            Step::Hang,
        ])
    })
    .await;
    let mut relay = Replica::start(
        free_port(),
        &[
            ("SUPABASE_JWT_SECRET", SECRET),
            ("USE_MODAL", "true"),
            ("MODAL_ENDPOINT", &fake.url),
            ("MODAL_INTERNAL_SECRET", &fake.secret),
            ("DRAIN_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let user = Uuid::new_v4();
    let mut tab = Client::connect(&format!("ws://{}/", relay.addr)).await;
    tab.init(&token(user, 3600)).await;
    let project = tab.create_project("単一").await;
    tab.select(project).await;
    tab.send(json!({"type":"message","content":"作って"})).await;
    tab.recv_until("jobStarted").await;

    relay.sigterm();
    until_refused(relay.addr).await;
    assert!(relay.is_running(), "draining, not gone");
    // One process: its socket stays open and sees the end of the job, then 1012.
    let events = tab.recv_until_any(&["failed", "completed"]).await;
    let failed = events.last().unwrap();
    assert_eq!(failed["code"], "SERVER_RESTARTING", "{failed}");
    assert_eq!(failed["recoverable"], true, "{failed}");
    assert_eq!(tab.expect_close().await.map(|c| c.0), Some(1012));
    assert!(relay.exit_status(Duration::from_secs(20)).await.success());
}
