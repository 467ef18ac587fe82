//! `loadgen cluster-latency` / `loadgen cluster-jobs`: the relay as two replicas sharing one
//! PostgreSQL database and one Redis (a `redis-server` this process starts), beside the same
//! load on one replica without Redis, all in one run so the figures share the machine's mood.
//!
//! Every job has two browsers of the same user: the *owner* sends `message` on replica A (so
//! the job runs there) and the *follower* sends `subscribeJob` once `jobStarted` names the job.
//! Three set-ups are measured in turn, each on a fresh database:
//!
//! | set-up          | replicas | Redis | follower on |
//! |-----------------|----------|-------|-------------|
//! | `single-node`   | A        | no    | A           |
//! | `same-replica`  | A, B     | yes   | A           |
//! | `cross-replica` | A, B     | yes   | B           |
//!
//! The figures are the follower's: latency of events sent after it subscribed (upstream write
//! → follower receive), events/s over the job phase, and integrity of everything it received
//! (replay and live: nothing lost, nothing twice, in order). Redis memory per active job is
//! `used_memory` in the middle of the job phase minus before it, over the jobs.
//!
//! The replicas run with `DATABASE_PREPARED_STATEMENTS=true` (a direct connection) unless
//! this process's environment sets it.
//!
//! `--rounds N` runs the three set-ups in turn N times; the ratios to single-node are taken
//! within each round (same minutes of the machine) and their medians reported.
//!
//! PostgreSQL comes from `scripts/test-postgres.sh` (the socket directory in
//! `target/test-postgres/socket_dir`, or `LOADGEN_PG_SOCKET_DIR`); `redis-server` from
//! `LOADGEN_REDIS_SERVER` (default `/usr/bin/redis-server`).

use super::cluster_services::{spawn_replica, used_memory, Postgres, RedisServer};
use super::probe::Probe;
use super::*;

/// Where the followers sit, and whether the replicas share a Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    SingleNode,
    SameReplica,
    CrossReplica,
}

impl Setup {
    /// Every set-up, in the order a round runs them.
    const ALL: [Setup; 3] = [Self::SingleNode, Self::SameReplica, Self::CrossReplica];

    fn label(self) -> &'static str {
        match self {
            Self::SingleNode => "single-node",
            Self::SameReplica => "same-replica",
            Self::CrossReplica => "cross-replica",
        }
    }
}

/// Run the three set-ups with the load's jobs.
pub(super) async fn scenario_cluster(
    label: &str,
    common: &Common,
    load: Load,
    deadline: TokioInstant,
) -> Result<Value> {
    let Load { jobs, events, gap } = load;
    let setups: Vec<Setup> = match &common.setup {
        None => Setup::ALL.to_vec(),
        Some(named) => named
            .split(',')
            .map(|name| {
                Setup::ALL
                    .into_iter()
                    .find(|s| s.label() == name)
                    .ok_or_else(|| BenchError::Usage(format!("no set-up named {name}")))
            })
            .collect::<Result<_>>()?,
    };
    let modal_secret = format!("bench-modal-{}", Uuid::new_v4().simple());
    let stop_upstream = CancellationToken::new();
    let _stop_on_exit = stop_upstream.clone().drop_guard();
    let (upstream, _) = start_upstream(
        modal_secret.clone(),
        events,
        0,
        gap,
        common.aligned,
        stop_upstream,
    )
    .await?;
    let postgres = Postgres::locate()?;
    println!(
        "== {label}: {jobs} jobs x {events} events, gap {:.1} ms, two replicas on PostgreSQL, {} round(s) ==",
        gap.as_secs_f64() * 1e3,
        common.rounds
    );
    let mut rounds = Vec::with_capacity(common.rounds);
    for round in 1..=common.rounds {
        if common.rounds > 1 {
            println!("== round {round} of {} ==", common.rounds);
        }
        let mut reports = serde_json::Map::new();
        for &setup in &setups {
            let report = run_setup(
                setup,
                common,
                &postgres,
                upstream,
                &modal_secret,
                jobs,
                events,
                deadline,
            )
            .await?;
            reports.insert(setup.label().to_string(), report);
        }
        rounds.push(Value::Object(reports));
    }
    // Each round's set-ups share a minute of the machine's mood; the ratios are taken within
    // a round and their median reported, so a slow minute moves both sides of a ratio.
    let figure = |round: &Value, setup: &str, path: &str| {
        round
            .pointer(&format!("/{setup}/{path}"))
            .and_then(Value::as_f64)
    };
    // A set-up's figure in each round that ran it.
    let figures = |setup: &str, path: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|round| figure(round, setup, path))
            .collect()
    };
    // `a`'s figure over `b`'s, within each round that ran both.
    let ratio = |path: &str, a: &str, b: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|round| {
                let (x, y) = (figure(round, a, path)?, figure(round, b, path)?);
                (y > 0.0).then(|| x / y)
            })
            .collect()
    };
    const EVENTS_PER_SEC: &str = "events_per_sec";
    // The follower's latency while all jobs stream.
    const P50: &str = "follower_latency_all_jobs_streaming/p50_ms";
    const P99: &str = "follower_latency_all_jobs_streaming/p99_ms";
    const SAMPLES: &str = "follower_latency_all_jobs_streaming/samples";
    let events_per_sec = |setup: &'static str| figures(setup, EVENTS_PER_SEC);
    let p50 = |setup: &'static str| figures(setup, P50);
    let p99 = |setup: &'static str| figures(setup, P99);
    let cross_ratios = ratio(EVENTS_PER_SEC, "cross-replica", "single-node");
    let same_ratios = ratio(EVENTS_PER_SEC, "same-replica", "single-node");
    let same_p50_ratios = ratio(P50, "same-replica", "single-node");
    let same_p99_ratios = ratio(P99, "same-replica", "single-node");
    let ran: Vec<&'static str> = Setup::ALL
        .into_iter()
        .map(Setup::label)
        .filter(|setup| !events_per_sec(setup).is_empty())
        .collect();
    let medians = |of: &dyn Fn(&'static str) -> Vec<f64>| -> BTreeMap<&str, f64> {
        ran.iter()
            .map(|&setup| (setup, median(&of(setup))))
            .collect()
    };
    let summary = json!({
        "cross_over_single_events_per_sec": median(&cross_ratios),
        "same_over_single_events_per_sec": median(&same_ratios),
        "cross_over_single_each_round": cross_ratios,
        "same_over_single_each_round": same_ratios,
        "same_over_single_p50_each_round": same_p50_ratios,
        "same_over_single_p99_each_round": same_p99_ratios,
        "median_events_per_sec": medians(&events_per_sec),
        "median_p50_ms_all_jobs_streaming": medians(&p50),
        "median_p99_ms_all_jobs_streaming": medians(&p99),
    });
    // Each round's figure, for the summary lines.
    let each = |values: &[f64], show: fn(f64) -> String| {
        values
            .iter()
            .map(|&v| show(v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let percents = |ratios: &[f64]| each(ratios, |r| format!("{:.0}", 100.0 * r));
    let ms = |values: &[f64]| each(values, |v| format!("{v:.2}"));
    let compared = |ratios: &[f64], name: &str| {
        (!ratios.is_empty()).then(|| {
            format!(
                "{name} {:.0}% ({})",
                100.0 * median(ratios),
                percents(ratios)
            )
        })
    };
    let throughput: Vec<String> = [
        compared(&cross_ratios, "cross-replica"),
        compared(&same_ratios, "same-replica"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !throughput.is_empty() {
        println!(
            "summary      events/s of single-node's, median (rounds): {}",
            throughput.join(", ")
        );
    }
    // `cluster-jobs` measures no latency while all jobs stream (its window is empty).
    let latencies: Vec<String> = ran
        .iter()
        .filter(|&&setup| figures(setup, SAMPLES).iter().any(|&n| n > 0.0))
        .map(|&setup| {
            format!(
                "{setup} p50 {:.2} ms, p99 {:.2} ms ({})",
                median(&p50(setup)),
                median(&p99(setup)),
                ms(&p99(setup))
            )
        })
        .collect();
    if !latencies.is_empty() {
        println!(
            "summary      follower while all stream, median (p99 rounds): {}",
            latencies.join("; ")
        );
    }
    if !same_p99_ratios.is_empty() {
        println!(
            "summary      same-replica / single-node, median (rounds): p50 {:.2} ({}), p99 {:.2} ({})",
            median(&same_p50_ratios),
            ms(&same_p50_ratios),
            median(&same_p99_ratios),
            ms(&same_p99_ratios),
        );
    }
    let last = rounds.last().cloned().unwrap_or(Value::Null);
    Ok(json!({
        "scenario": label,
        "params": {"jobs": jobs, "events": events, "gap_ms": gap.as_secs_f64() * 1e3, "aligned": common.aligned, "rounds": common.rounds},
        "setups": last,
        "rounds": rounds,
        "summary": summary,
    }))
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_setup(
    setup: Setup,
    common: &Common,
    postgres: &Postgres,
    upstream: SocketAddr,
    modal_secret: &str,
    jobs: usize,
    events: u32,
    deadline: TokioInstant,
) -> Result<Value> {
    let users: Vec<Uuid> = (0..jobs).map(|_| Uuid::new_v4()).collect();
    let database = postgres.create_database(&users).await?;
    let redis = match setup {
        Setup::SingleNode => None,
        _ => Some(RedisServer::start()?),
    };
    let jwt_secret = format!("bench-jwt-{}", Uuid::new_v4().simple());
    let spawn = |name| {
        spawn_replica(
            &common.relay_bin,
            upstream,
            modal_secret,
            &jwt_secret,
            &database.url,
            redis.as_ref().map(RedisServer::url),
            name,
        )
    };
    let a = spawn("a").await?;
    let b = match setup {
        Setup::SingleNode => None,
        _ => Some(spawn("b").await?),
    };
    let follower_url = match (&b, setup) {
        (Some(b), Setup::CrossReplica) => b.ws_url(),
        _ => a.ws_url(),
    };
    let tokens = users
        .iter()
        .enumerate()
        .map(|(i, user)| token_for(&jwt_secret, *user, i))
        .collect::<Result<Vec<_>>>()?;

    // Set-up: owner with a project on A, follower authenticated on its replica.
    let permits = Arc::new(Semaphore::new(common.concurrency));
    let mut set = JoinSet::new();
    for token in tokens {
        let (a_url, f_url, permits) = (a.ws_url(), follower_url.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            tokio::time::timeout_at(deadline, open_pair(&a_url, &f_url, &token))
                .await
                .unwrap_or(Err(BenchError::Timeout("pair set-up")))
        });
    }
    let mut pairs = Vec::with_capacity(jobs);
    let mut setup_errors: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(pair)) => pairs.push(pair),
            Ok(Err(e)) => {
                *setup_errors
                    .entry(truncate(&e.to_string(), 160))
                    .or_default() += 1
            }
            Err(e) => *setup_errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }

    let redis_before = redis
        .as_ref()
        .map(|r| used_memory(&r.socket()))
        .transpose()?;
    // Subscribed before the first job starts, so it misses none of their events; a probe
    // that cannot subscribe stops the set-up before any job runs.
    let probe = match (&redis, common.probe) {
        (Some(redis), true) => Some(Probe::start(&redis.socket())?),
        _ => None,
    };
    let machine_cpu_start = MachineCpu::read();
    let cpu_start = CpuShares::read(&a, b.as_ref());
    let started = Instant::now();
    let mut set = JoinSet::new();
    for pair in pairs {
        set.spawn(async move {
            tokio::time::timeout_at(deadline, pair.run())
                .await
                .unwrap_or_else(|_| JobOutcome {
                    failure: Some("timed out waiting for the job to finish".into()),
                    ..JobOutcome::default()
                })
        });
    }
    // Redis memory: the peak of `used_memory` while the jobs run, sampled every 100 ms, on a
    // thread of its own: the query blocks, and on a runtime worker it would hold back the
    // followers' reads (and their latency figures) of the set-ups with Redis.
    let stop_sampling = CancellationToken::new();
    let sampler = redis.as_ref().map(|redis| {
        let (socket, stop) = (redis.socket(), stop_sampling.clone());
        tokio::task::spawn_blocking(move || {
            let mut peak = 0u64;
            while !stop.is_cancelled() {
                if let Ok(bytes) = used_memory(&socket) {
                    peak = peak.max(bytes);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    });
    let mut integrity = Integrity::default();
    let mut samples = Vec::new();
    let mut windows = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(out) => {
                integrity.add(&out, events);
                if let (Some(first), Some(last)) = (out.samples.first(), out.samples.last()) {
                    windows.push((first.sent_ns, last.sent_ns));
                }
                samples.extend_from_slice(&out.samples);
            }
            Err(e) => *integrity.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_job_phase = CpuShares::read(&a, b.as_ref()).since(&cpu_start);
    stop_sampling.cancel();
    let at_redis = probe.map(Probe::finish);
    let redis_peak = match sampler {
        Some(task) => task.await.ok(),
        None => None,
    };
    let steal = machine_cpu_start.steal_share_until(MachineCpu::read());
    let (latency, latency_steady, _) = Latency::split(&samples, &windows);
    if let Some(path) = &common.timeline {
        // One file per set-up: FILE.single-node, FILE.same-replica, FILE.cross-replica.
        let mut name = path.clone().into_os_string();
        name.push(format!(".{}", setup.label()));
        write_timeline(Path::new(&name), &samples)?;
    }
    // The ramps: events sent before every job was streaming (starts still going on) and
    // after the first job ended (ends going on), apart, to show which one a tail belongs to.
    let steady = steady_window(&windows);
    let latency_ramp_up =
        Latency::of_sent(&samples, |sent| steady.is_some_and(|(from, _)| sent < from));
    let latency_ramp_down =
        Latency::of_sent(&samples, |sent| steady.is_some_and(|(_, to)| sent > to));
    let at_redis_steady = at_redis.as_ref().map(|seen| Latency::within(seen, steady));
    let events_per_sec = integrity.events_received as f64 / wall.max(1e-9);
    let redis_per_job = match (redis_before, redis_peak) {
        (Some(before), Some(peak)) => Some(peak.saturating_sub(before) as f64 / jobs.max(1) as f64),
        _ => None,
    };
    let cpu = |relay: &Relay| relay.stats().map(|s| s.cpu_secs).unwrap_or(0.0);
    let report = json!({
        "setup_errors": setup_errors,
        "wall_secs": wall,
        "events_per_sec": events_per_sec,
        "integrity": integrity,
        "follower_latency_live": latency,
        "follower_latency_all_jobs_streaming": latency_steady,
        "follower_latency_while_jobs_start": latency_ramp_up,
        "follower_latency_while_jobs_end": latency_ramp_down,
        "redis_subscriber_latency_all_jobs_streaming": at_redis_steady,
        "redis_peak_used_memory_per_job_bytes": redis_per_job,
        "relay_cpu_secs": {"a": cpu(&a), "b": b.as_ref().map(cpu)},
        "job_phase_cpu_secs": cpu_job_phase,
        "machine_steal_share": steal,
        "relay_log": {"a": a.log_summary(), "b": b.as_ref().map(Relay::log_summary)},
    });
    let i = &report["integrity"];
    println!("-- {} --", setup.label());
    println!(
        "jobs         ok {}/{}  set-up errors {}  failures {}",
        i["jobs_ok"], i["jobs"], report["setup_errors"], i["failures"]
    );
    println!(
        "integrity    expected {} received {}  lost {} duplicated {} reordered {}",
        i["events_expected"], i["events_received"], i["lost"], i["duplicated"], i["reordered"]
    );
    println!("throughput   wall {wall:.3} s  {events_per_sec:.0} events/s to followers");
    println!(
        "latency      {}  (follower, live events)",
        latency.describe()
    );
    println!(
        "latency      {}  (while all jobs stream)",
        latency_steady.describe()
    );
    println!(
        "latency      {}  (while jobs start)",
        latency_ramp_up.describe()
    );
    println!(
        "latency      {}  (while jobs end)",
        latency_ramp_down.describe()
    );
    if let Some(at_redis) = &at_redis_steady {
        println!(
            "latency      {}  (a plain subscriber on Redis, while all jobs stream)",
            at_redis.describe()
        );
    }
    if let Some(bytes) = redis_per_job {
        println!(
            "redis        {bytes:.0} bytes of peak used_memory per job (above the idle server)"
        );
    }
    println!(
        "cpu          {} (seconds in the job phase)",
        cpu_job_phase.describe()
    );
    println!(
        "machine      {:.1}% of CPU time stolen by the hypervisor",
        100.0 * steal
    );
    drop((a, b, redis));
    database.drop().await;
    Ok(report)
}

/// CPU time spent so far by each party of a run, to show where a set-up's extra time goes:
/// the replicas, every PostgreSQL process, the Redis server, this load generator, and the
/// whole machine (busy time of all CPUs).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct CpuShares {
    relay_a: f64,
    relay_b: f64,
    postgres: f64,
    redis: f64,
    loadgen: f64,
    machine_busy: f64,
}

impl CpuShares {
    fn read(a: &Relay, b: Option<&Relay>) -> Self {
        let relay = |r: &Relay| r.stats().map(|s| s.cpu_secs).unwrap_or(0.0);
        Self {
            relay_a: relay(a),
            relay_b: b.map(relay).unwrap_or(0.0),
            postgres: cpu_of_command("postgres"),
            redis: cpu_of_command("redis-server"),
            loadgen: proc_stats(std::process::id())
                .map(|s| s.cpu_secs)
                .unwrap_or(0.0),
            machine_busy: MachineCpu::read().busy_secs(),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            relay_a: self.relay_a - before.relay_a,
            relay_b: self.relay_b - before.relay_b,
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
            loadgen: self.loadgen - before.loadgen,
            machine_busy: self.machine_busy - before.machine_busy,
        }
    }

    fn describe(&self) -> String {
        format!(
            "relay A {:.2}  relay B {:.2}  postgres {:.2}  redis {:.2}  loadgen {:.2}  machine busy {:.2}",
            self.relay_a, self.relay_b, self.postgres, self.redis, self.loadgen, self.machine_busy
        )
    }
}

/// CPU seconds of every live process whose command name is `name`.
fn cpu_of_command(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|pid| proc_stats(pid).ok())
        .map(|s| s.cpu_secs)
        .sum()
}

// ---------------------------------------------------------------------------------------
// One job's two browsers

struct Pair {
    owner: Ws,
    follower: Ws,
}

/// Owner on A with a fresh project; follower authenticated as the same user on `follower_url`.
async fn open_pair(owner_url: &str, follower_url: &str, token: &str) -> Result<Pair> {
    let mut owner = connect(owner_url, token).await?;
    send_json(
        &mut owner,
        json!({"type": "createProject", "name": "bench"}),
    )
    .await?;
    expect_frame(&mut owner, "projectCreated").await?;
    let follower = connect(follower_url, token).await?;
    Ok(Pair { owner, follower })
}

async fn connect(url: &str, token: &str) -> Result<Ws> {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| BenchError::Ws(e.to_string()))?;
    send_json(&mut ws, json!({"type": "init", "access_token": token})).await?;
    expect_frame(&mut ws, "init").await?;
    Ok(ws)
}

impl Pair {
    /// Start the job from the owner, follow it from the follower; the follower's outcome.
    async fn run(mut self) -> JobOutcome {
        let mut out = JobOutcome::default();
        let job_id = match self.start().await {
            Ok(id) => id,
            Err(e) => {
                out.failure = Some(e.to_string());
                return out;
            }
        };
        // The owner's frames are not measured; read them so its queue never fills.
        let mut owner = self.owner;
        let drain_owner = tokio::spawn(async move {
            while let Some(Ok(message)) = owner.next().await {
                if let Message::Text(text) = message {
                    if text.contains("\"type\":\"completed\"")
                        || text.contains("\"type\":\"failed\"")
                    {
                        break;
                    }
                }
            }
            owner
        });
        out.job_started = true;
        let subscribed_ns = now_ns();
        if let Err(e) = send_json(
            &mut self.follower,
            json!({"type": "subscribeJob", "jobId": job_id}),
        )
        .await
        {
            out.failure = Some(e.to_string());
            return out;
        }
        follow(&mut self.follower, &mut out, subscribed_ns).await;
        let _ = drain_owner.await;
        out
    }

    async fn start(&mut self) -> Result<String> {
        send_json(&mut self.owner, json!({"type": "message", "content": "go"})).await?;
        loop {
            let text = next_text(&mut self.owner).await?;
            let frame: Value = serde_json::from_str(text.as_str())
                .map_err(|e| BenchError::Protocol(e.to_string()))?;
            match frame["type"].as_str() {
                Some("jobStarted") => {
                    return frame["job"]["id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| BenchError::Protocol("jobStarted without jobId".into()))
                }
                Some("error" | "limitExceeded" | "failed") => {
                    return Err(BenchError::Protocol(truncate(text.as_str(), 200)))
                }
                _ => {}
            }
        }
    }
}

/// Read the follower's frames to the job's end. Every stream token counts for integrity;
/// latency only for events the upstream wrote after the follower subscribed (the earlier
/// ones come from the replay, and their age is not the relay's doing).
async fn follow(ws: &mut Ws, out: &mut JobOutcome, subscribed_ns: u64) {
    let mut pending = String::new();
    loop {
        let text = match next_text(ws).await {
            Ok(text) => text,
            Err(e) => {
                out.failure = Some(e.to_string());
                break;
            }
        };
        let received_ns = now_ns();
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            out.unparsed_tokens += 1;
            continue;
        };
        match frame.kind.as_str() {
            "started" => out.started = true,
            "progress" => out.progress_frames += 1,
            "stream" => {
                out.stream_frames += 1;
                let content = frame.content.unwrap_or_default();
                out.take_tokens(&mut pending, &content, received_ns);
            }
            "completed" => {
                out.completed = true;
                // A follower gets no `gameUpdated`; the terminal event ends its job.
                out.game_updated = true;
                break;
            }
            "failed" | "error" | "cancelled" => {
                out.failure = Some(truncate(text.as_str(), 200));
                break;
            }
            _ => {}
        }
    }
    out.samples.retain(|s| s.sent_ns >= subscribed_ns);
}

fn token_for(secret: &str, user: Uuid, index: usize) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        iss: DEV_ISSUER,
        aud: "authenticated",
        role: "authenticated",
        sub: user.to_string(),
        email: format!("bench-{index}@example.test"),
        exp: now + 3600,
        iat: now,
        session_id: Uuid::new_v4().to_string(),
        is_anonymous: false,
        aal: "aal1",
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
