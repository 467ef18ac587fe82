//! PostgreSQL stopped under a running relay, then started again: `/ready` says so while it is
//! down, a job that ends meanwhile still ends for its watchers and its row ends the same way
//! once the database is back (not `failed` by the sweep of its expired lease), and new jobs
//! run again without a restart of the relay. With two replicas, the other replica does not
//! take the outage's lapsed leases for a dead owner; a replica that loses the database alone
//! ends the job another replica's sweep failed as the row says. The cluster is one of the
//! test's own: stopping the shared one would take the other tests' databases with it.

use crate::support::fake_modal;
use crate::support::own_postgres::OwnPostgres;
use crate::support::redis::Redis;
use crate::support::relay::{eventually, ready};
use crate::support::relay_process::RelayProcess;
use crate::support::socket_link::SocketLink;

use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use serde_json::json;
use uuid::Uuid;

async fn register(pg: &OwnPostgres, user: Uuid) {
    pg.admin()
        .await
        .execute(
            "INSERT INTO auth.users (id, email) VALUES ($1, $2)",
            &[&user, &format!("{user}@example.com")],
        )
        .await
        .unwrap();
}

/// A generation that answers `text` after `wait`.
fn answer_after(text: &str, wait: Duration) -> Script {
    match Script::success(&[text]) {
        Script::Stream(mut steps) => {
            steps.insert(1, Step::Sleep(wait));
            Script::Stream(steps)
        }
        other => other,
    }
}

async fn job_status(admin: &tokio_postgres::Client, job_id: Uuid) -> String {
    admin
        .query_one("SELECT status FROM public.jobs WHERE id = $1", &[&job_id])
        .await
        .expect("the job's row")
        .get(0)
}

#[tokio::test]
async fn a_database_outage_is_reported_and_a_job_ending_in_it_ends_the_same_in_its_row() {
    // Time to stop the database while the generation runs.
    let fake = FakeModal::start(|_| answer_after("できました。", Duration::from_secs(2))).await;
    let pg = OwnPostgres::start().await;
    let user = Uuid::new_v4();
    register(&pg, user).await;
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::on_fake_modal(data.path(), &fake, &pg.relay_url()).await;
    let (status, body) = ready(relay.addr).await;
    assert_eq!(
        (status, &body["storeReachable"]),
        (200, &json!(true)),
        "{body}"
    );

    let (mut c, _) = relay.user(user).await;
    let project = c.create_project("停電ゲーム").await;
    c.send(json!({"type":"message","content":"作って"})).await;
    let started = c.recv_until("jobStarted").await.pop().unwrap();
    let job_id: Uuid = serde_json::from_value(started["job"]["id"].clone()).unwrap();
    eventually("generate_game called", || !fake.requests().is_empty()).await;

    pg.run("pause").await;
    let frames = c.recv_until("completed").await;
    let completed = frames.last().unwrap();
    assert_eq!(
        completed["result"]["message"], "できました。",
        "{completed}"
    );
    let (status, body) = ready(relay.addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "store unreachable", "{body}");
    assert_eq!(body["storeReachable"], false, "{body}");
    // A new message cannot start a job, and says so instead of hanging.
    c.send(json!({"type":"message","content":"もう一度"})).await;
    let refused = c.recv_until("error").await.pop().unwrap();
    assert_eq!(refused["error"]["code"], "OPERATION_FAILED", "{refused}");
    // Longer than the job's lease (2 s in these relays), which nobody renews any more.
    tokio::time::sleep(Duration::from_secs(3)).await;

    pg.run("resume").await;
    // At once: the old job's row must not pass for the project's running job.
    c.send(json!({"type":"message","content":"もう一度"})).await;
    let frames = c.recv_until("completed").await;
    let started = frames.iter().find(|f| f["type"] == "jobStarted").unwrap();
    assert_eq!(started["isExisting"], false, "{started}");

    let admin = pg.admin().await;
    assert_eq!(
        job_status(&admin, job_id).await,
        "completed",
        "the row ends as the tab saw the job end"
    );
    // Stays so: the sweep of expired leases runs every second here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job_status(&admin, job_id).await, "completed");
    let answers: Vec<String> = admin
        .query(
            "SELECT message FROM public.chat_history WHERE project_id = $1 AND role = 'assistant' ORDER BY created_at",
            &[&project],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        answers,
        ["できました。", "できました。"],
        "both jobs' answers, the first recorded with its kept end"
    );

    let (status, body) = ready(relay.addr).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
}

/// Two replicas; the owner runs one job that goes on through the outage and one that ends
/// in it. After the database comes back, the other replica's sweep and a third replica
/// starting see both leases lapsed, but the owner (held back here a moment) is alive: the
/// running job must go on to its `completed` and the ended one keep the end its tab saw, not
/// be failed as orphans.
#[tokio::test]
async fn after_a_database_outage_no_replica_fails_a_live_owners_jobs() {
    let fake = FakeModal::start(|request| {
        if request.prompt.contains("長く") {
            answer_after("長い仕事", Duration::from_secs(10))
        } else {
            answer_after("短い仕事", Duration::from_secs(2))
        }
    })
    .await;
    let pg = OwnPostgres::start().await;
    let redis = Redis::start().await;
    let data_a = tempfile::tempdir().unwrap();
    let data_b = tempfile::tempdir().unwrap();
    let url = pg.relay_url();
    let clustered = [
        ("REDIS_URL", redis.url()),
        ("JOB_LEASE_TTL_SECS", "3".into()),
    ];
    let clustered: Vec<(&str, &str)> = clustered.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let owner = RelayProcess::on_fake_modal_with(data_a.path(), &fake, &url, &clustered).await;
    let _other = RelayProcess::on_fake_modal_with(data_b.path(), &fake, &url, &clustered).await;

    let mut tabs = Vec::new();
    let mut jobs = Vec::new();
    for prompt in ["長く作って", "すぐ作って"] {
        let user = Uuid::new_v4();
        register(&pg, user).await;
        let (mut tab, _) = owner.user(user).await;
        tab.create_project("停電").await;
        tab.send(json!({"type":"message","content":prompt})).await;
        let started = tab.recv_until("jobStarted").await.pop().unwrap();
        jobs.push(serde_json::from_value::<Uuid>(started["job"]["id"].clone()).unwrap());
        tabs.push(tab);
    }
    eventually("both generations called", || fake.requests().len() == 2).await;

    pg.run("pause").await;
    let short = tabs[1].recv_until("completed").await;
    assert_eq!(short.last().unwrap()["result"]["message"], "短い仕事");
    // Past the 3 s leases, which nobody could renew.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The owner comes back a moment after the database, and a third replica starts in
    // between: the other replica's sweep runs every second and the new one's at its start,
    // so without the wait after an outage (and at a start) either takes both for orphans.
    owner.signal("STOP");
    pg.run("resume").await;
    let back = tokio::time::Instant::now();
    let data_c = tempfile::tempdir().unwrap();
    let _started = RelayProcess::on_fake_modal_with(data_c.path(), &fake, &url, &clustered).await;
    tokio::time::sleep_until(back + Duration::from_millis(1500)).await;
    owner.signal("CONT");

    let mut frames = tabs[0]
        .recv_until_any(&["completed", "failed", "cancelled"])
        .await;
    let end = frames.pop().unwrap();
    assert_eq!(end["type"], "completed", "the running job goes on: {end}");
    assert_eq!(end["result"]["message"], "長い仕事");
    let admin = pg.admin().await;
    for job_id in jobs {
        assert_eq!(job_status(&admin, job_id).await, "completed", "{job_id}");
    }
}

/// Two clustered replicas (3 s leases) on one database; the owner reaches it through a link
/// the test can cut, the other directly. A user's tab on the owner has started a job, whose
/// generation streams.
struct CutOffOwner {
    fake: FakeModal,
    pg: OwnPostgres,
    link: SocketLink,
    other: RelayProcess,
    _owner: RelayProcess,
    user: Uuid,
    tab: crate::support::relay::Client,
    project: Uuid,
    job_id: Uuid,
    _redis: Redis,
    _data: [tempfile::TempDir; 2],
}

impl CutOffOwner {
    /// `answer` after `wait`, for every generation.
    async fn start(answer: &'static str, wait: Duration) -> Self {
        let fake = FakeModal::start(move |_| answer_after(answer, wait)).await;
        let pg = OwnPostgres::start().await;
        let redis = Redis::start().await;
        let link = SocketLink::start(pg.socket());
        let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let clustered = [
            ("REDIS_URL", redis.url()),
            ("JOB_LEASE_TTL_SECS", "3".into()),
        ];
        let clustered: Vec<(&str, &str)> =
            clustered.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let owner_url = pg.relay_url_in(link.dir());
        let owner =
            RelayProcess::on_fake_modal_with(data[0].path(), &fake, &owner_url, &clustered).await;
        let other =
            RelayProcess::on_fake_modal_with(data[1].path(), &fake, &pg.relay_url(), &clustered)
                .await;

        let user = Uuid::new_v4();
        register(&pg, user).await;
        let (mut tab, _) = owner.user(user).await;
        let project = tab.create_project("孤立").await;
        tab.send(json!({"type":"message","content":"作って"})).await;
        let started = tab.recv_until("jobStarted").await.pop().unwrap();
        let job_id: Uuid = serde_json::from_value(started["job"]["id"].clone()).unwrap();
        eventually("the generation streams", || fake.open_streams() == 1).await;
        Self {
            fake,
            pg,
            link,
            other,
            _owner: owner,
            user,
            tab,
            project,
            job_id,
            _redis: redis,
            _data: data,
        }
    }
}

/// The owner loses the database alone (its socket to it is cut; Redis still answers): it can
/// renew no lease, and the other replica fails its running job once the lease expires. The
/// owner's own tab must get that `failed` too, and the generation stop, rather than the job
/// running on to a `completed` that neither the row nor the other replicas' watchers show.
#[tokio::test]
async fn a_replica_cut_off_from_the_database_alone_ends_its_swept_job_as_the_row_says() {
    // Bound by reference: the relays, Redis and the data directories live to the test's end.
    let mut cut_off = CutOffOwner::start("長い仕事", Duration::from_secs(20)).await;
    let CutOffOwner {
        ref fake,
        ref pg,
        ref mut link,
        ref mut tab,
        job_id,
        ..
    } = cut_off;

    link.cut().await;
    let cut_at = tokio::time::Instant::now();
    let mut frames = tab
        .recv_until_any(&["completed", "failed", "cancelled"])
        .await;
    let end = frames.pop().unwrap();
    assert_eq!(
        end["type"], "failed",
        "the row's end, not the stream's: {end}"
    );
    assert_eq!(end["recoverable"], true, "{end}");
    // Lease (3 s) plus the other replica's next sweep, well before the stream's 20 s.
    assert!(
        cut_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        cut_at.elapsed()
    );
    eventually("the generation is dropped", || fake.open_streams() == 0).await;
    assert_eq!(job_status(&pg.admin().await, job_id).await, "failed");
}

/// The owner loses the database alone and its job ends before its lease expires: its tab
/// and a tab following on the other replica both see `completed`, and the other replica's
/// sweep, finding that end on the bus, ends the row `completed` too rather than `failed`.
#[tokio::test]
async fn a_job_that_ended_on_a_replica_cut_off_from_the_database_ends_its_row_as_seen() {
    let mut cut_off = CutOffOwner::start("できました。", Duration::from_secs(1)).await;
    let CutOffOwner {
        ref pg,
        ref mut link,
        ref other,
        user,
        ref mut tab,
        project,
        job_id,
        ..
    } = cut_off;
    let (mut follower, _) = other.user(user).await;
    let selected = follower.select(project).await;
    assert_eq!(
        selected["activeJob"]["id"],
        job_id.to_string(),
        "{selected}"
    );

    link.cut().await;
    for watcher in [tab, &mut follower] {
        let end = watcher
            .recv_until_any(&["completed", "failed", "cancelled"])
            .await
            .pop()
            .unwrap();
        assert_eq!(end["type"], "completed", "{end}");
    }
    // The lease (3 s) expires, then the other replica sweeps every second or so.
    let admin = pg.admin().await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = job_status(&admin, job_id).await;
            if status != "processing" && status != "pending" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the expired job's row ends");
    assert_eq!(
        ended, "completed",
        "the end its watchers saw, not the sweep's"
    );
    let row = admin
        .query_one(
            "SELECT progress, error, result FROM public.jobs WHERE id = $1",
            &[&job_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 100);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert!(
        row.get::<_, Option<String>>(2).is_some(),
        "the job's result"
    );
    // The project is free: a new message on the other replica starts a new job.
    follower
        .send(json!({"type":"message","content":"もう一度"}))
        .await;
    let next = follower.recv_until("jobStarted").await.pop().unwrap();
    assert_ne!(next["job"]["id"], job_id.to_string(), "{next}");
    assert_eq!(next["isExisting"], false, "{next}");
}
