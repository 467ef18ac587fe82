//! Several relay processes sharing one PostgreSQL and one Redis behave as one relay
//! (README "Scaling"): a tab follows a job from whichever replica it lands on, cancel works
//! from any replica, two racing tabs start one job, limits hold across replicas, a dead
//! replica's jobs are failed by the others, a starting replica touches nothing, and a Redis
//! restart loses no event a tab can see.

use crate::support::relay_process::{free_port, relay_command, wait_healthy};
use crate::support::{fake_modal, nginx, postgres, redis, relay};

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fake_modal::{FakeModal, GenerateRequest, Script, Step};
use nginx::Nginx;
use postgres::PgDb;
use redis::Redis;
use relay::{stream_text, token, Client, SECRET};
use serde_json::{json, Value};
use uuid::Uuid;

/// Job events a tab receives (what the frames of other requests are filtered from).
const JOB_EVENTS: [&str; 7] = [
    "started",
    "progress",
    "stream",
    "completed",
    "failed",
    "cancelled",
    "gameUpdated",
];

/// One relay process of the cluster.
struct Replica {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
}

impl Replica {
    /// Start the relay binary on the fake Modal with short leases and `env` on top, in a data
    /// directory of its own unless `env` names one; returns once `/health` answers.
    async fn spawn(fake: &FakeModal, env: &[(String, String)]) -> Replica {
        let port = free_port();
        let data = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(data.path().join("relay.log")).expect("log file");
        let level = std::env::var("CLUSTER_TEST_LOG").unwrap_or("warn".into());
        let mut base = vec![
            ("SUPABASE_JWT_SECRET", SECRET),
            ("USE_MODAL", "true"),
            ("MODAL_ENDPOINT", fake.url.as_str()),
            ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
            ("JOB_LEASE_RENEW_SECS", "1"),
            ("JOB_LEASE_TTL_SECS", "3"),
            ("RUST_LOG", level.as_str()),
        ];
        base.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = relay_command(data.path(), port, &base, None)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("relay binary starts");
        let replica = Replica { child, port, data };
        wait_healthy(replica.addr(), || replica.log()).await;
        replica
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn client(&self, user: Uuid) -> Client {
        let mut client = Client::connect(&self.ws_url()).await;
        let reply = client.init(&token(user, 3600)).await;
        assert_eq!(reply["type"], "init", "{reply}");
        client
    }

    async fn ready(&self) -> Value {
        relay::ready(self.addr()).await.1
    }

    /// SIGKILL: no drain, no last words.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's log (for assertion messages).
    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("relay.log")).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- replica on port {} ---\n{}", self.port, self.log());
        }
    }
}

struct Cluster {
    pg: Option<PgDb>,
    redis: Redis,
    fake: FakeModal,
    env: Vec<(String, String)>,
    replicas: Vec<Replica>,
}

impl Cluster {
    /// `count` replicas behind one PostgreSQL and one Redis, on the fake Modal `script`.
    async fn start(
        count: usize,
        env: &[(&str, &str)],
        script: impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static,
    ) -> Cluster {
        Self::start_on(Redis::start().await, count, env, script).await
    }

    /// `start` on a Redis of the caller's.
    async fn start_on(
        redis: Redis,
        count: usize,
        env: &[(&str, &str)],
        script: impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static,
    ) -> Cluster {
        let mut cluster = Cluster {
            pg: Some(PgDb::create().await),
            redis,
            fake: FakeModal::start(script).await,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            replicas: Vec::new(),
        };
        for _ in 0..count {
            cluster.add_replica().await;
        }
        cluster
    }

    fn pg(&self) -> &PgDb {
        self.pg.as_ref().expect("database")
    }

    async fn add_replica(&mut self) -> &Replica {
        let mut env = vec![
            ("DATABASE_URL".to_string(), self.pg().relay_url()),
            ("REDIS_URL".to_string(), self.redis.url()),
        ];
        env.extend(self.env.iter().cloned());
        let replica = Replica::spawn(&self.fake, &env).await;
        self.replicas.push(replica);
        self.replicas.last().expect("just added")
    }

    /// A user known to the database (as GoTrue would have created it).
    async fn user(&self) -> Uuid {
        let user = Uuid::new_v4();
        self.pg()
            .register_user(user, &format!("{user}@example.com"))
            .await;
        user
    }

    async fn job_status(&self, job_id: &str) -> String {
        let id = Uuid::parse_str(job_id).expect("job id");
        let row = self
            .pg()
            .admin
            .query_one("SELECT status FROM jobs WHERE id = $1", &[&id])
            .await
            .expect("job row");
        row.get(0)
    }

    async fn finish(mut self) {
        self.replicas.clear();
        if let Some(db) = self.pg.take() {
            db.drop_db().await;
        }
    }
}

/// `count` distinct texts (so a duplicate or a reordering shows in the concatenation).
fn texts(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("<{i}>")).collect()
}

/// Job events until one of type `kind` (inclusive), other frames dropped.
async fn job_events_until(client: &mut Client, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = client.recv().await;
        let done = frame["type"] == kind;
        if JOB_EVENTS.contains(&frame["type"].as_str().unwrap_or_default()) || done {
            events.push(frame);
        }
        if done {
            return events;
        }
    }
}

/// No job event arrives within `quiet` (nothing twice after the end).
async fn assert_no_more_job_events(client: &mut Client, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(frame) = tokio::time::timeout_at(deadline, client.recv()).await {
        assert!(
            !JOB_EVENTS.contains(&frame["type"].as_str().unwrap_or_default()),
            "unexpected job event after the end: {frame}"
        );
    }
}

/// Read frames until `n` stream frames have gone by.
async fn skip_streams(client: &mut Client, n: usize) {
    let mut streams = 0;
    while streams < n {
        if client.recv().await["type"] == "stream" {
            streams += 1;
        }
    }
}

fn count(frames: &[Value], kind: &str) -> usize {
    frames.iter().filter(|f| f["type"] == kind).count()
}

async fn until_streams_closed(fake: &FakeModal) {
    let deadline = tokio::time::Instant::now() + relay::WAIT;
    while fake.open_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream left open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_streams_open(fake: &FakeModal) {
    let deadline = tokio::time::Instant::now() + relay::WAIT;
    while fake.open_streams() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "generate_game never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first generation hangs after its first status; later ones succeed.
fn hang_once() -> impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static {
    let calls = Arc::new(AtomicUsize::new(0));
    move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Script::Stream(vec![
                fake_modal::status("Sandbox connected (warm)"),
                Step::Hang,
            ])
        } else {
            Script::success(&["できました。"])
        }
    }
}

#[tokio::test]
async fn reconnect_on_the_other_replica_mid_job_gets_every_event_once() {
    let all = texts(20);
    let script = all.clone();
    let cluster = Cluster::start(2, &[], move |_| {
        Script::paced(&script, Duration::from_millis(50))
    })
    .await;
    let user = cluster.user().await;

    let mut first = cluster.replicas[0].client(user).await;
    let project = first.create_project("再接続のゲーム").await;
    first.select(project).await;
    first
        .send(json!({"type":"message","content":"作って"}))
        .await;
    first.recv_until("jobStarted").await;
    skip_streams(&mut first, 3).await;
    first.close().await;

    let mut second = cluster.replicas[1].client(user).await;
    let selected = second.select(project).await;
    assert_eq!(selected["activeJob"]["status"], "processing", "{selected}");
    let events = job_events_until(&mut second, "completed").await;
    assert_eq!(
        events[0]["type"], "started",
        "the replay starts at the beginning"
    );
    assert_eq!(
        stream_text(&events),
        all.concat(),
        "in order, nothing lost or twice"
    );
    assert_eq!(count(&events, "completed"), 1);
    assert_no_more_job_events(&mut second, Duration::from_millis(500)).await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_gap_the_trimmed_stream_cannot_fill_is_answered_from_the_database() {
    let all = texts(30);
    let script = all.clone();
    // The stream keeps only the newest three events: a tab that joins on the other replica
    // mid-job cannot be given the beginning.
    let cluster = Cluster::start(2, &[("JOB_STREAM_MAX_EVENTS", "3")], move |_| {
        Script::paced(&script, Duration::from_millis(40))
    })
    .await;
    let user = cluster.user().await;
    let mut owner = cluster.replicas[0].client(user).await;
    let project = owner.create_project("切り詰めのゲーム").await;
    owner.select(project).await;
    owner
        .send(json!({"type":"message","content":"作って"}))
        .await;
    skip_streams(&mut owner, 10).await;

    let mut late = cluster.replicas[1].client(user).await;
    late.select(project).await;
    let events = job_events_until(&mut late, "completed").await;
    // The job's row stands in for what is gone, then the events follow in order.
    assert_eq!(events[0]["type"], "progress", "{:?}", events[0]);
    assert_eq!(events[0]["job"]["status"], "processing");
    let text = stream_text(&events);
    assert!(
        all.concat().ends_with(&text) && text.len() < all.concat().len(),
        "a gap-free suffix, got {text:?}"
    );
    assert!(text.ends_with(all.last().unwrap()), "{text:?}");
    assert_eq!(count(&events, "completed"), 1);
    assert_no_more_job_events(&mut late, Duration::from_millis(500)).await;
    // The owner's tab was never short of anything.
    let rest = job_events_until(&mut owner, "completed").await;
    assert_eq!(count(&rest, "completed"), 1);
    cluster.finish().await;
}

#[tokio::test]
async fn two_tabs_on_two_replicas_see_the_same_job() {
    let all = texts(15);
    let script = all.clone();
    let cluster = Cluster::start(2, &[], move |_| {
        Script::paced(&script, Duration::from_millis(40))
    })
    .await;
    two_tabs_see_the_same_job(cluster, all).await;
}

/// Managed Redis speaks TLS (`rediss://`): the replicas verify its certificate against the
/// trust store, here a test CA named by `SSL_CERT_FILE`.
#[tokio::test]
async fn two_tabs_on_two_replicas_see_the_same_job_through_a_tls_redis() {
    let all = texts(15);
    let script = all.clone();
    let redis = Redis::start_tls().await;
    let ca_file = redis.ca_file().display().to_string();
    let env = [("SSL_CERT_FILE", ca_file.as_str())];
    let cluster = Cluster::start_on(redis, 2, &env, move |_| {
        Script::paced(&script, Duration::from_millis(40))
    })
    .await;
    for replica in &cluster.replicas {
        let ready = replica.ready().await;
        assert_eq!(ready["cluster"]["degraded"], Value::Null, "{ready}");
    }
    two_tabs_see_the_same_job(cluster, all).await;
}

async fn two_tabs_see_the_same_job(cluster: Cluster, all: Vec<String>) {
    let user = cluster.user().await;
    let mut owner = cluster.replicas[0].client(user).await;
    let project = owner.create_project("二つのタブ").await;
    owner.select(project).await;
    owner
        .send(json!({"type":"message","content":"作って"}))
        .await;
    let mut seen_by_owner = job_events_until(&mut owner, "stream").await;

    let mut other = cluster.replicas[1].client(user).await;
    other.select(project).await;
    let (rest, seen_elsewhere) = tokio::join!(
        job_events_until(&mut owner, "gameUpdated"),
        job_events_until(&mut other, "completed"),
    );
    seen_by_owner.extend(rest);
    assert_eq!(stream_text(&seen_by_owner), all.concat());
    assert_eq!(stream_text(&seen_elsewhere), all.concat());
    let completed = |frames: &[Value]| frames.iter().find(|f| f["type"] == "completed").cloned();
    assert_eq!(
        completed(&seen_by_owner).map(|c| c["job"]["id"].clone()),
        completed(&seen_elsewhere).map(|c| c["job"]["id"].clone())
    );
    assert_no_more_job_events(&mut other, Duration::from_millis(500)).await;
    cluster.finish().await;
}

#[tokio::test]
async fn cancel_from_the_other_replica_stops_the_run_for_every_watcher() {
    let cluster = Cluster::start(2, &[], hang_once()).await;
    let user = cluster.user().await;
    let mut owner = cluster.replicas[0].client(user).await;
    let project = owner.create_project("止めるゲーム").await;
    owner.select(project).await;
    owner
        .send(json!({"type":"message","content":"作って"}))
        .await;
    let started = owner.recv_until("jobStarted").await.pop().unwrap();
    let job_id = started["job"]["id"].as_str().unwrap().to_string();
    until_streams_open(&cluster.fake).await;

    let mut other = cluster.replicas[1].client(user).await;
    other.select(project).await;
    other.send(json!({"type":"cancelJob","jobId":job_id})).await;
    let mut replies = Vec::new();
    while count(&replies, "jobCancelled") == 0 || count(&replies, "cancelled") == 0 {
        replies.push(other.recv().await);
    }
    let seen_by_owner = job_events_until(&mut owner, "cancelled").await;
    assert_eq!(count(&seen_by_owner, "cancelled"), 1);
    assert_eq!(count(&seen_by_owner, "completed"), 0);
    until_streams_closed(&cluster.fake).await;
    assert_eq!(cluster.job_status(&job_id).await, "cancelled");
    assert_no_more_job_events(&mut owner, Duration::from_millis(300)).await;
    assert_no_more_job_events(&mut other, Duration::from_millis(300)).await;

    // The project is free again: the next prompt starts a new job, not a second one
    // beside a run that never stopped.
    other
        .send(json!({"type":"message","content":"もう一度"}))
        .await;
    let next = other.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(next["isExisting"], false);
    assert_ne!(next["job"]["id"], json!(job_id));
    job_events_until(&mut other, "gameUpdated").await;
    assert_eq!(cluster.fake.requests().len(), 2);
    cluster.finish().await;
}

#[tokio::test]
async fn racing_tabs_on_two_replicas_start_one_job_and_pay_once() {
    const RACES: usize = 50;
    let all = texts(4);
    let script = all.clone();
    // 250 messages in a few seconds: rate limits are not what this test is about.
    let unlimited = [
        ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
        ("RATE_LIMIT_MESSAGES_PER_MIN", "0"),
    ];
    let cluster = Cluster::start(2, &unlimited, move |_| {
        Script::paced(&script, Duration::from_millis(30))
    })
    .await;
    let nginx =
        Nginx::start_round_robin(&[cluster.replicas[0].addr(), cluster.replicas[1].addr()]).await;
    let user = cluster.user().await;
    // A plan whose daily limits the 50 races stay under.
    cluster
        .pg()
        .admin
        .execute(
            "INSERT INTO subscriptions (user_id, plan, status) VALUES ($1, 'pro', 'active')",
            &[&user],
        )
        .await
        .unwrap();
    // Round-robin: consecutive connections land on different replicas.
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut tab = Client::connect(&nginx.ws_url()).await;
        assert_eq!(tab.init(&token(user, 3600)).await["type"], "init");
        tabs.push(tab);
    }
    let [mut a, mut b] = <[Client; 2]>::try_from(tabs).ok().unwrap();

    for race in 0..RACES {
        let project = a.create_project(&format!("競争 {race}")).await;
        a.select(project).await;
        b.select(project).await;
        let prompt = json!({"type":"message","content":format!("作って {race}")});
        a.send(prompt.clone()).await;
        b.send(prompt).await;
        let (seen_a, seen_b) = tokio::join!(
            async {
                let mut frames = a.recv_until("jobStarted").await;
                frames.retain(|f| f["type"] == "jobStarted");
                frames.extend(job_events_until(&mut a, "gameUpdated").await);
                frames
            },
            async {
                let mut frames = b.recv_until("jobStarted").await;
                frames.retain(|f| f["type"] == "jobStarted");
                frames.extend(job_events_until(&mut b, "gameUpdated").await);
                frames
            },
        );
        let mut existing = [&seen_a[0]["isExisting"], &seen_b[0]["isExisting"]];
        existing.sort_by_key(|v| v.as_bool());
        assert_eq!(
            existing,
            [&json!(false), &json!(true)],
            "race {race}: one new job"
        );
        assert_eq!(
            seen_a[0]["job"]["id"], seen_b[0]["job"]["id"],
            "race {race}"
        );
        for seen in [&seen_a, &seen_b] {
            assert_eq!(stream_text(seen), all.concat(), "race {race}: {seen:?}");
            assert_eq!(count(seen, "completed"), 1, "race {race}");
        }
    }
    assert_eq!(
        cluster.fake.requests().len(),
        RACES,
        "one Modal run per race"
    );
    let db = &cluster.pg().admin;
    let jobs: i64 = db
        .query_one("SELECT count(*) FROM jobs WHERE user_id = $1", &[&user])
        .await
        .unwrap()
        .get(0);
    let prompts: i64 = db
        .query_one(
            "SELECT count(*) FROM chat_history h JOIN projects p ON p.id = h.project_id
             WHERE p.user_id = $1 AND h.role = 'user'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let charged: i32 = db
        .query_one(
            "SELECT messages_sent FROM usage_quotas WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (jobs, prompts, charged),
        (RACES as i64, RACES as i64, RACES as i32),
        "jobs, stored prompts and quota charged once per race"
    );
    drop(nginx);
    cluster.finish().await;
}

#[tokio::test]
async fn user_slot_total_and_generation_rate_hold_across_replicas() {
    let cluster = Cluster::start(
        2,
        &[
            ("MAX_JOBS_PER_USER", "1"),
            ("MAX_JOBS_TOTAL", "2"),
            ("RATE_LIMIT_GENERATIONS_PER_MIN", "3"),
        ],
        |_| {
            Script::Stream(vec![
                fake_modal::status("Sandbox connected (warm)"),
                Step::Hang,
            ])
        },
    )
    .await;
    let user = cluster.user().await;
    let mut left = cluster.replicas[0].client(user).await;
    let mut right = cluster.replicas[1].client(user).await;
    let first_project = left.create_project("一つ目").await;
    let second_project = right.create_project("二つ目").await;
    left.select(first_project).await;
    right.select(second_project).await;

    left.send(json!({"type":"message","content":"一つ目"}))
        .await;
    let started = left.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(started["isExisting"], false);
    right
        .send(json!({"type":"message","content":"二つ目"}))
        .await;
    let refused = right.recv_until("limitExceeded").await.pop().unwrap();
    assert_eq!(
        (refused["limit"].clone(), refused["inProgress"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(refused["jobs"][0]["jobId"], started["job"]["id"]);

    // The third generation of the minute (attaching to the running job), then the fourth:
    // refused whichever replica it reaches.
    left.send(json!({"type":"message","content":"もう一度"}))
        .await;
    let attached = left.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(attached["isExisting"], true);
    right
        .send(json!({"type":"message","content":"四回目"}))
        .await;
    let limited = right.recv_until("error").await.pop().unwrap();
    assert_eq!(limited["error"]["code"], "RATE_LIMITED", "{limited}");
    until_streams_open(&cluster.fake).await;
    assert_eq!(cluster.fake.requests().len(), 1);

    // MAX_JOBS_TOTAL counts the jobs of every replica: a second user's job fills it, a
    // third user is refused on the replica that runs neither.
    let (second, third) = (cluster.user().await, cluster.user().await);
    let mut second = cluster.replicas[1].client(second).await;
    let project = second.create_project("二人目").await;
    second.select(project).await;
    second
        .send(json!({"type":"message","content":"作って"}))
        .await;
    assert_eq!(
        second.recv_until("jobStarted").await.pop().unwrap()["isExisting"],
        false
    );
    let mut third = cluster.replicas[1].client(third).await;
    let project = third.create_project("三人目").await;
    third.select(project).await;
    third
        .send(json!({"type":"message","content":"作って"}))
        .await;
    let busy = third.recv_until("error").await.pop().unwrap();
    assert_eq!(busy["error"]["code"], "SYSTEM_LIMIT_EXCEEDED", "{busy}");
    cluster.finish().await;
}

#[tokio::test]
async fn sigkill_of_the_owner_fails_its_job_for_watchers_elsewhere_and_frees_the_project() {
    let mut cluster = Cluster::start(2, &[], hang_once()).await;
    let user = cluster.user().await;
    let mut owner = cluster.replicas[0].client(user).await;
    let project = owner.create_project("落ちるゲーム").await;
    owner.select(project).await;
    owner
        .send(json!({"type":"message","content":"作って"}))
        .await;
    let started = owner.recv_until("jobStarted").await.pop().unwrap();
    let job_id = started["job"]["id"].as_str().unwrap().to_string();
    until_streams_open(&cluster.fake).await;
    let mut watcher = cluster.replicas[1].client(user).await;
    watcher.select(project).await;

    let killed_at = tokio::time::Instant::now();
    cluster.replicas[0].kill();
    let events = tokio::time::timeout(
        Duration::from_secs(30),
        job_events_until(&mut watcher, "failed"),
    )
    .await
    .expect("the watcher sees the job fail within 30 s");
    let failed = events.last().unwrap();
    assert_eq!(failed["recoverable"], true, "{failed}");
    assert_eq!(failed["job"]["id"], json!(job_id));
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    assert_eq!(cluster.job_status(&job_id).await, "failed");
    // What an operator's alert counts: the survivor failed one job of a lost replica.
    let metrics = relay::metrics(([127, 0, 0, 1], cluster.replicas[1].port).into()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "relay_jobs_lease_swept_total 1"),
        "{metrics}"
    );

    // Project and slot are free: the next prompt runs on a surviving replica.
    watcher
        .send(json!({"type":"message","content":"もう一度"}))
        .await;
    let next = watcher.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(next["isExisting"], false, "{next}");
    job_events_until(&mut watcher, "gameUpdated").await;
    cluster.finish().await;
}

#[tokio::test]
async fn a_replica_starting_touches_no_running_job() {
    let all = texts(30);
    let script = all.clone();
    let mut cluster = Cluster::start(1, &[], move |_| {
        Script::paced(&script, Duration::from_millis(100))
    })
    .await;
    let user = cluster.user().await;
    let mut tab = cluster.replicas[0].client(user).await;
    let project = tab.create_project("続くゲーム").await;
    tab.select(project).await;
    tab.send(json!({"type":"message","content":"作って"})).await;
    let started = tab.recv_until("jobStarted").await.pop().unwrap();
    tab.recv_until("stream").await;

    // A new replica (a rolling update) comes up and runs its start-up sweep while the job runs.
    cluster.add_replica().await;
    let events = job_events_until(&mut tab, "gameUpdated").await;
    assert_eq!(count(&events, "failed"), 0, "{events:?}");
    assert_eq!(count(&events, "completed"), 1);
    let job_id = started["job"]["id"].as_str().unwrap();
    assert_eq!(cluster.job_status(job_id).await, "completed");
    cluster.finish().await;
}

#[tokio::test]
async fn without_redis_a_second_instance_on_the_same_sqlite_file_touches_no_running_job() {
    // A rolling update of the embedded default: the new process starts on the old one's data
    // while the old one still runs a job.
    let all = texts(20);
    let script = all.clone();
    let fake = FakeModal::start(move |_| Script::paced(&script, Duration::from_millis(100))).await;
    let shared = tempfile::tempdir().expect("temp dir");
    let env = [("DATA_DIR".to_string(), shared.path().display().to_string())];
    let old = Replica::spawn(&fake, &env).await;
    let user = Uuid::new_v4();
    let mut tab = old.client(user).await;
    let project = tab.create_project("更新中").await;
    tab.select(project).await;
    tab.send(json!({"type":"message","content":"作って"})).await;
    let started = tab.recv_until("jobStarted").await.pop().unwrap();
    tab.recv_until("stream").await;

    let new = Replica::spawn(&fake, &env).await;
    assert_eq!(new.ready().await["cluster"]["mode"], "embedded");
    let events = job_events_until(&mut tab, "gameUpdated").await;
    assert_eq!(count(&events, "failed"), 0, "{events:?}");
    assert_eq!(count(&events, "completed"), 1);
    // The row agrees with what the tab saw: the new instance never marked it failed.
    tab.send(json!({"type":"getJobStatus","jobId":started["job"]["id"]}))
        .await;
    let status = tab.recv_until("jobStatus").await.pop().unwrap();
    assert_eq!(status["job"]["status"], "completed", "{status}");
    drop((old, new));
}

#[tokio::test]
async fn redis_restart_mid_job_loses_nothing_a_tab_can_see() {
    let all = texts(40);
    let script = all.clone();
    let mut cluster = Cluster::start(2, &[], move |_| {
        Script::paced(&script, Duration::from_millis(100))
    })
    .await;
    let user = cluster.user().await;
    let mut owner = cluster.replicas[0].client(user).await;
    let project = owner.create_project("再起動").await;
    owner.select(project).await;
    owner
        .send(json!({"type":"message","content":"作って"}))
        .await;
    let mut seen_by_owner = job_events_until(&mut owner, "stream").await;
    let mut other = cluster.replicas[1].client(user).await;
    other.select(project).await;

    let owner_side = tokio::spawn(async move {
        seen_by_owner.extend(job_events_until(&mut owner, "gameUpdated").await);
        (owner, seen_by_owner)
    });
    let other_side = tokio::spawn(async move {
        let events = job_events_until(&mut other, "completed").await;
        (other, events)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.redis.kill();
    // The owner notices as soon as it publishes, and says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = cluster.replicas[0].ready().await;
        if ready["cluster"]["degraded"].is_string() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.redis.resume().await;

    let (_owner, seen_by_owner) = owner_side.await.unwrap();
    assert_eq!(
        stream_text(&seen_by_owner),
        all.concat(),
        "the owner's tab lost nothing"
    );
    assert_eq!(count(&seen_by_owner, "completed"), 1);
    let (mut other, seen_elsewhere) = other_side.await.unwrap();
    assert_eq!(count(&seen_elsewhere, "completed"), 1);
    // Across the outage the other tab may miss events (answered by the job's state from the
    // database), but never gets one twice or out of order. (A replay hands over consecutive
    // stream texts merged, so the texts are read back event by event: `<n>` each.)
    let received = stream_text(&seen_elsewhere);
    let positions: Vec<usize> = received
        .split_inclusive('>')
        .map(|text| all.iter().position(|t| t == text).expect("a real event"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order, nothing twice: {received:?}"
    );

    // Delivery across replicas comes back by itself: the next job is followed completely.
    other
        .send(json!({"type":"message","content":"もう一度"}))
        .await;
    let next = other.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(next["isExisting"], false);
    let mut third = cluster.replicas[0].client(user).await;
    third.select(project).await;
    let followed = job_events_until(&mut third, "completed").await;
    assert_eq!(stream_text(&followed), all.concat());
    job_events_until(&mut other, "gameUpdated").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for replica in &cluster.replicas {
        loop {
            let ready = replica.ready().await;
            if ready["cluster"]["degraded"].is_null() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.finish().await;
}
