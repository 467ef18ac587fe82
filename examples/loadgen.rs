//! Load generator for dreamcore-relay (a benchmark that reports figures, not a test).
//!
//! The relay runs as a separate child process, so the CPU and memory figures are the relay's
//! alone; this process holds the simulated browsers (one user per WebSocket) and a fake Modal
//! `generate_game` that streams raw Claude CLI `assistant` events over SSE.
//!
//! ```text
//! cargo build --release && cargo build --release --example loadgen
//! target/release/examples/loadgen jobs --jobs 1000 --events 100 [--gap-ms 0]
//! target/release/examples/loadgen idle --sockets 10000
//! target/release/examples/loadgen latency --jobs 200 --rate 50 --seconds 10
//! target/release/examples/loadgen big --jobs 4 --events 3000 --event-bytes 8192
//! target/release/examples/loadgen cluster-latency --jobs 200 --rate 50 --seconds 10
//! target/release/examples/loadgen cluster-jobs --jobs 1000 --events 100
//! ```
//! The `cluster-*` scenarios (examples/loadgen/cluster.rs) run two replicas with Redis and
//! PostgreSQL beside one replica without Redis.
//! Common flags: `--relay-bin PATH` (default `target/release/dreamcore-relay`),
//! `--timeout-secs N` (whole scenario, default 300), `--concurrency N` (connects in flight,
//! default 200), `--metrics` (print the relay's `relay_events_relayed_total` at the end).
//!
//! Latency: every assistant text is `<seq>:<t_ns>;`, `t_ns` read from the process-wide
//! monotonic clock just before the fake writes the event into its response body; a client
//! computes `now - t_ns` when the `stream` frame arrives. Same process, same clock: this is
//! upstream write → browser receive through the relay, on loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "loadgen/cluster.rs"]
mod cluster;
#[path = "loadgen/cluster_services.rs"]
mod cluster_services;
#[path = "loadgen/floor.rs"]
mod floor;
#[path = "loadgen/floor_bus.rs"]
mod floor_bus;
#[path = "loadgen/probe.rs"]
mod probe;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DEFAULT_RELAY_BIN: &str = "target/release/dreamcore-relay";
const DEV_ISSUER: &str = "dreamcore-relay-dev";
/// Idle baseline: RSS with this many authenticated sockets is subtracted from the full count.
const IDLE_BASELINE_SOCKETS: usize = 100;
/// Let fire-and-forget work after `init` (prewarm calls) finish before sampling RSS.
const SETTLE: Duration = Duration::from_secs(2);
/// After the browsers leave: longer than tokio's 10 s keep-alive of idle blocking threads, so
/// the figure shows what the relay retains rather than threads about to retire.
const AFTER_CLOSE_SETTLE: Duration = Duration::from_secs(12);
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("jwt: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("relay: {0}")]
    Relay(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

type Result<T> = std::result::Result<T, BenchError>;

// ---------------------------------------------------------------------------------------
// Clock

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(clock_base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Command line

const USAGE: &str =
    "loadgen <jobs|idle|latency|big|cluster-jobs|cluster-latency|floor-jobs|floor-latency|
                floor-cluster-jobs|floor-cluster-latency> [options]
  jobs    --jobs N (1000) --events M (100) --gap-ms G (0)
  idle    --sockets N (10000)
  latency --jobs N (200) --rate R events/s (50) --seconds S (10)
  big     --jobs N (4) --events M (3000) --event-bytes B (8192): large outputs, reading
          clients; peak RSS growth, projectSelected size after them, RSS 12 s later
  cluster-jobs, cluster-latency: as jobs and latency, on one replica without Redis, then two
          replicas with Redis (follower on the job's replica, then on the other one);
          --rounds N (1) runs the three in turn N times and reports the medians;
          --setup single-node|same-replica|cross-replica[,…] runs those only, in that order;
          --probe also times each event where a plain subscriber on Redis reads it (splits
          a cross-replica event's latency into the owner's side and the follower's)
  floor-jobs, floor-latency: as jobs and latency, through a process that only copies bytes
          (no relay): the least relaying these streams costs on this machine; --hops N (1)
          forwarders in a row (3: the least a cross-replica event costs: owning replica,
          Redis, follower's replica)
  floor-cluster-jobs, floor-cluster-latency: as cluster-*, cross-replica: an owner and a
          follower per job, through a byte forwarder, a redis-server (XADD and PUBLISH per
          batch, one subscription) and a byte forwarder: the least the job bus costs here
  common  --relay-bin PATH --timeout-secs T (300) --concurrency C (200) --metrics
          --aligned (all streams tick in phase: the worst case; default spreads their phases)
          --pin (relay on CPU 0 with one runtime worker, load generator on CPU 1)
          --timeline FILE (jobs/latency: every event's send time and latency, in ms;
                           cluster-*: the followers', in FILE.<set-up>)
          --baseline (then the same streams read straight from the fake upstream, no relay:
                      the floor that loopback and this machine's scheduling set)";

#[derive(Debug, Clone)]
struct Common {
    relay_bin: PathBuf,
    timeout: Duration,
    concurrency: usize,
    metrics: bool,
    /// Every stream ticks in phase (worst case); by default each starts at its own offset
    /// within one gap, as independent jobs do.
    aligned: bool,
    /// Relay on CPU 0 with one runtime worker, load generator on CPU 1: the relay's figures
    /// are then its own, not the kernel's time-slicing between the two processes.
    pin: bool,
    /// Write every event's send time and latency here, for plotting where slow events fall.
    timeline: Option<PathBuf>,
    /// After the relay run, read the same streams straight from the fake upstream.
    baseline: bool,
    /// Cluster scenarios: how many times the three set-ups run, in turn.
    rounds: usize,
    /// Floor scenarios: forwarders in a row between the upstream and the clients.
    hops: usize,
    /// Cluster scenarios: run only the set-up of this name.
    setup: Option<String>,
    /// Cluster scenarios with Redis: also time each event where it leaves Redis.
    probe: bool,
}

/// Jobs streamed together: how many, how many assistant events each, and how far apart.
#[derive(Debug, Clone, Copy)]
struct Load {
    jobs: usize,
    events: u32,
    gap: Duration,
}

/// Who carries a load's events from the fake upstream to the browsers.
#[derive(Debug, Clone, Copy)]
enum Through {
    /// One relay, no Redis.
    Relay,
    /// One relay alone, then two replicas with Redis (`cluster.rs`).
    Cluster,
    /// Byte forwarders only, no relay (`floor.rs`).
    Floor,
    /// Two byte forwarders and Redis, owner and follower per job, no relay (`floor_bus.rs`).
    FloorBus,
}

/// How a streaming scenario's load is given: a burst (`--jobs --events --gap-ms`) or a
/// steady rate (`--jobs --rate --seconds`).
#[derive(Debug, Clone, Copy)]
enum Shape {
    Burst,
    Paced,
}

/// The streaming scenarios: name, who relays, how the load is given.
const STREAMING: [(&str, Through, Shape); 8] = [
    ("jobs", Through::Relay, Shape::Burst),
    ("latency", Through::Relay, Shape::Paced),
    ("cluster-jobs", Through::Cluster, Shape::Burst),
    ("cluster-latency", Through::Cluster, Shape::Paced),
    ("floor-jobs", Through::Floor, Shape::Burst),
    ("floor-latency", Through::Floor, Shape::Paced),
    ("floor-cluster-jobs", Through::FloorBus, Shape::Burst),
    ("floor-cluster-latency", Through::FloorBus, Shape::Paced),
];

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Streaming {
        label: &'static str,
        through: Through,
        load: Load,
    },
    Idle {
        sockets: usize,
    },
    Big {
        jobs: usize,
        events: u32,
        event_bytes: usize,
    },
    /// The floor scenarios' forwarder process.
    FloorForward,
}

fn parse_args(args: &[String]) -> Result<(Scenario, Common)> {
    let (name, rest) = args
        .split_first()
        .ok_or_else(|| BenchError::Usage(USAGE.to_string()))?;
    let mut common = Common {
        relay_bin: PathBuf::from(DEFAULT_RELAY_BIN),
        timeout: Duration::from_secs(300),
        concurrency: 200,
        metrics: false,
        aligned: false,
        pin: false,
        timeline: None,
        baseline: false,
        rounds: 1,
        hops: 1,
        setup: None,
        probe: false,
    };
    let mut values: BTreeMap<String, u64> = BTreeMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value\n{USAGE}")))
        };
        match flag.as_str() {
            "--metrics" => common.metrics = true,
            "--aligned" => common.aligned = true,
            "--pin" => common.pin = true,
            "--baseline" => common.baseline = true,
            "--probe" => common.probe = true,
            "--relay-bin" => common.relay_bin = PathBuf::from(value()?),
            "--timeline" => common.timeline = Some(PathBuf::from(value()?)),
            "--setup" => common.setup = Some(value()?),
            "--jobs" | "--events" | "--gap-ms" | "--sockets" | "--rate" | "--seconds"
            | "--event-bytes" | "--timeout-secs" | "--concurrency" | "--rounds" | "--hops" => {
                let raw = value()?;
                let n = raw
                    .parse::<u64>()
                    .map_err(|_| BenchError::Usage(format!("{flag}: not a number: {raw}")))?;
                values.insert(flag.trim_start_matches("--").to_string(), n);
            }
            other => return Err(BenchError::Usage(format!("unknown flag {other}\n{USAGE}"))),
        }
    }
    let get = |key: &str, default: u64| values.get(key).copied().unwrap_or(default);
    let positive = |key: &str, default: u64| -> Result<u64> {
        match get(key, default) {
            0 => Err(BenchError::Usage(format!("--{key} must be at least 1"))),
            n => Ok(n),
        }
    };
    common.timeout = Duration::from_secs(positive("timeout-secs", 300)?);
    common.concurrency = usize_of(positive("concurrency", 200)?)?;
    common.rounds = usize_of(positive("rounds", 1)?)?;
    common.hops = usize_of(positive("hops", 1)?)?;
    let load = |shape: Shape| -> Result<Load> {
        Ok(match shape {
            Shape::Burst => Load {
                jobs: usize_of(positive("jobs", 1000)?)?,
                events: u32_of(positive("events", 100)?)?,
                gap: Duration::from_millis(get("gap-ms", 0)),
            },
            Shape::Paced => {
                let rate = u32_of(positive("rate", 50)?)?;
                Load {
                    jobs: usize_of(positive("jobs", 200)?)?,
                    events: rate.saturating_mul(u32_of(positive("seconds", 10)?)?),
                    gap: Duration::from_secs_f64(1.0 / f64::from(rate)),
                }
            }
        })
    };
    let streaming = STREAMING.iter().find(|(label, ..)| *label == name.as_str());
    let scenario = match (name.as_str(), streaming) {
        (_, Some(&(label, through, shape))) => Scenario::Streaming {
            label,
            through,
            load: load(shape)?,
        },
        ("idle", None) => Scenario::Idle {
            sockets: usize_of(positive("sockets", 10_000)?)?,
        },
        ("big", None) => Scenario::Big {
            jobs: usize_of(positive("jobs", 4)?)?,
            events: u32_of(positive("events", 3000)?)?,
            event_bytes: usize_of(positive("event-bytes", 8192)?)?,
        },
        ("floor-forward", None) => Scenario::FloorForward,
        (other, None) => {
            return Err(BenchError::Usage(format!(
                "unknown scenario {other}\n{USAGE}"
            )))
        }
    };
    Ok((scenario, common))
}

fn usize_of(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| BenchError::Usage(format!("{n} is too large")))
}

fn u32_of(n: u64) -> Result<u32> {
    u32::try_from(n).map_err(|_| BenchError::Usage(format!("{n} is too large")))
}

// ---------------------------------------------------------------------------------------
// Machine and process figures from /proc

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu_model: String,
    mem_total_kib: u64,
    loadavg_at_start: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_total_kib: kib_field(&meminfo, "MemTotal:").unwrap_or(0),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "machine: nproc={} cpu=\"{}\" mem_total={} MiB loadavg(1/5/15)={}",
            self.nproc,
            self.cpu_model,
            self.mem_total_kib / 1024,
            self.loadavg_at_start
        )
    }
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[derive(Debug, Clone, Copy, Serialize)]
struct ProcStats {
    cpu_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| BenchError::Relay("unreadable /proc/<pid>/stat".into()))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_secs = (tick(11) + tick(12)) as f64 / clock_ticks_per_sec();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(ProcStats {
        cpu_secs,
        rss_kib: kib_field(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: kib_field(&status, "VmHWM:").unwrap_or(0),
        threads: kib_field(&status, "Threads:").unwrap_or(0),
    })
}

/// Machine-wide CPU time (all CPUs) and the part of it the hypervisor gave to other guests
/// ("steal"): on a shared VM, steal arrives in slices of milliseconds and shows up as latency
/// tail that no code change moves, so every latency figure is printed beside it.
#[derive(Clone, Copy)]
struct MachineCpu {
    total_ticks: u64,
    steal_ticks: u64,
    /// Busy time: everything but idle, iowait and steal.
    busy_ticks: u64,
}

impl MachineCpu {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let total_ticks = ticks.iter().take(8).sum();
        Self {
            total_ticks,
            steal_ticks: tick(7),
            busy_ticks: total_ticks - tick(3) - tick(4) - tick(7),
        }
    }

    /// Busy CPU seconds of the whole machine since boot (all CPUs).
    fn busy_secs(self) -> f64 {
        self.busy_ticks as f64 / clock_ticks_per_sec()
    }

    /// Share of all CPU time between `self` and `later` that was stolen.
    fn steal_share_until(self, later: Self) -> f64 {
        let total = later.total_ticks.saturating_sub(self.total_ticks);
        let steal = later.steal_ticks.saturating_sub(self.steal_ticks);
        steal as f64 / total.max(1) as f64
    }
}

/// Children inherit the limit; 10 000 sockets need more descriptors than the usual 1024.
fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Restrict the calling process (and its future threads and children) to one CPU.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: the set is a plain bit mask on the stack; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

// ---------------------------------------------------------------------------------------
// Fake Modal upstream

struct Upstream {
    secret: String,
    events: u32,
    /// Assistant text per event is padded to this many bytes (0: just the timing token).
    event_bytes: usize,
    gap: Duration,
    aligned: bool,
    /// Streams started so far; spreads their phases.
    streams: AtomicU64,
    /// Assistant events written into response bodies.
    written: AtomicU64,
    /// Requests by `METHOD path`, to show what the relay calls besides `generate_game`.
    calls: Mutex<BTreeMap<String, u64>>,
    rejected: AtomicU64,
    /// TCP connections the relay opened to it: the calls above less the reused connections.
    connections: AtomicU64,
}

impl Upstream {
    fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

const SSE_STATUS: &str =
    "data: {\"type\": \"status\", \"message\": \"Sandbox connected (warm)\"}\n\n";
const SSE_DEBUG: &str = "data: {\"type\": \"debug\", \"exit_code\": 0}\n\n";
const SSE_DONE: &str = "data: {\"type\": \"done\", \"exit_code\": 0}\n\n";
const PREVIEW_HTML: &str = "<!DOCTYPE html><html><body>bench</body></html>";

async fn start_upstream(
    secret: String,
    events: u32,
    event_bytes: usize,
    gap: Duration,
    aligned: bool,
    stop: CancellationToken,
) -> Result<(SocketAddr, Arc<Upstream>)> {
    let state = Arc::new(Upstream {
        secret,
        events,
        event_bytes,
        gap,
        aligned,
        streams: AtomicU64::new(0),
        written: AtomicU64::new(0),
        calls: Mutex::new(BTreeMap::new()),
        rejected: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/generate_game", post(generate_game))
        .route("/prewarm-sandbox", post(prewarm))
        .route("/list-files", get(list_files))
        .route("/get-file", get(get_file))
        .route("/apply-files", post(apply_files))
        .route("/detect-intent", post(detect_intent))
        .route("/detect-skills", post(detect_skills))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_and_authorize,
        ))
        .with_state(state.clone());
    // Nagle on the fake's side would add delay that belongs to neither the relay nor loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counted = state.clone();
    let listener = listener.tap_io(move |tcp| {
        counted.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok((addr, state))
}

async fn record_and_authorize(
    State(st): State<Arc<Upstream>>,
    req: Request,
    next: Next,
) -> Response {
    let key = format!("{} {}", req.method(), req.uri().path());
    if let Ok(mut calls) = st.calls.lock() {
        *calls.entry(key).or_default() += 1;
    }
    let authorized = req
        .headers()
        .get("x-modal-secret")
        .is_some_and(|v| v.as_bytes() == st.secret.as_bytes());
    if !authorized {
        st.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized"})),
        )
            .into_response();
    }
    next.run(req).await
}

fn bad_request(st: &Upstream, text: &str) -> Response {
    st.rejected.fetch_add(1, Ordering::Relaxed);
    (StatusCode::BAD_REQUEST, Json(json!({"error": text}))).into_response()
}

fn sse(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn generate_game(State(st): State<Arc<Upstream>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(&st, "Invalid JSON");
    };
    for field in ["user_id", "project_id", "prompt"] {
        if req
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad_request(&st, &format!("{field} is required"));
        }
    }
    sse(Body::from_stream(game_events(st)))
}

/// When the next stream's first event is due, counted in `streams`. Independent jobs do not
/// tick in phase: stream k starts at a golden-ratio offset within one gap (evenly spread for
/// any number of streams), unless --aligned asks for lock-step.
fn stream_start(streams: &AtomicU64, gap: Duration, aligned: bool) -> TokioInstant {
    let k = streams.fetch_add(1, Ordering::Relaxed);
    let phase = if aligned {
        Duration::ZERO
    } else {
        gap.mul_f64((k as f64 * 0.618_033_988_75).fract())
    };
    TokioInstant::now() + phase
}

/// status, M assistant events (scheduled `gap` apart from the stream start), debug, done.
fn game_events(st: Arc<Upstream>) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> {
    let start = stream_start(&st.streams, st.gap, st.aligned);
    let last = st.events + 2;
    futures::stream::unfold(0u32, move |i| {
        let st = st.clone();
        async move {
            let chunk = match i {
                0 => Bytes::from_static(SSE_STATUS.as_bytes()),
                i if i <= st.events => {
                    let seq = i - 1;
                    if !st.gap.is_zero() {
                        tokio::time::sleep_until(start + st.gap * (seq + 1)).await;
                    }
                    st.written.fetch_add(1, Ordering::Relaxed);
                    let token = format!("{seq}:{};", now_ns());
                    // Padding comes first, so the timing token still ends the text.
                    let padding = "x".repeat(st.event_bytes.saturating_sub(token.len()));
                    Bytes::from(format!(
                        "data: {{\"type\":\"assistant\",\"message\":{{\"role\":\"assistant\",\"content\":[{{\"type\":\"text\",\"text\":\"{padding}{token}\"}}]}}}}\n\n"
                    ))
                }
                i if i == st.events + 1 => Bytes::from_static(SSE_DEBUG.as_bytes()),
                i if i == last => Bytes::from_static(SSE_DONE.as_bytes()),
                _ => return None,
            };
            Some((Ok(chunk), i + 1))
        }
    })
}

async fn prewarm() -> Json<Value> {
    Json(json!({"status": "warmed", "sandbox_name": "user-bench"}))
}

async fn list_files() -> Json<Value> {
    Json(json!({"files": ["index.html"]}))
}

async fn get_file() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PREVIEW_HTML,
    )
        .into_response()
}

async fn detect_intent() -> Json<Value> {
    Json(json!({"intent": "edit", "raw_response": "edit"}))
}

/// No skills: the relay then names none in the prompt, as for a plain edit.
async fn detect_skills() -> Json<Value> {
    Json(json!({"skills": []}))
}

async fn apply_files(State(st): State<Arc<Upstream>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(&st, "Invalid JSON");
    };
    match req.get("action").and_then(Value::as_str) {
        Some("git_log") => Json(json!({"commits": [], "_v": 2})).into_response(),
        Some(other) => bad_request(&st, &format!("Unknown action: {other}")),
        None => sse(Body::from(
            "data: {\"type\": \"result\", \"files\": []}\n\ndata: {\"type\": \"done\", \"exit_code\": 0, \"duration_ms\": 1}\n\n",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The relay child process

struct Relay {
    child: Child,
    pid: u32,
    port: u16,
    jwt_secret: String,
    log_path: PathBuf,
    // Removed (with the relay's SQLite and log) when the relay is dropped.
    _data_dir: tempfile::TempDir,
}

impl Relay {
    async fn spawn(
        bin: &Path,
        upstream: SocketAddr,
        modal_secret: &str,
        pin: bool,
    ) -> Result<Self> {
        if !bin.is_file() {
            return Err(BenchError::Relay(format!(
                "{} not found (cargo build --release)",
                bin.display()
            )));
        }
        let port = free_port()?;
        let data_dir = tempfile::tempdir()?;
        let log_path = data_dir.path().join("relay.log");
        let log = File::create(&log_path)?;
        let jwt_secret = format!("bench-jwt-{}", Uuid::new_v4().simple());
        let mut command = Command::new(bin);
        if pin {
            command.env("TOKIO_WORKER_THREADS", "1");
            // SAFETY: only sched_setaffinity, async-signal-safe, runs between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    pin_to_cpu(0);
                    Ok(())
                });
            }
        }
        let child = command
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", data_dir.path().join("data"))
            .env("SUPABASE_JWT_SECRET", &jwt_secret)
            .env("USE_MODAL", "true")
            .env("MODAL_ENDPOINT", format!("http://{upstream}/generate_game"))
            .env("MODAL_INTERNAL_SECRET", modal_secret)
            .env("MAX_JOBS_TOTAL", "1000000")
            .env("MAX_JOBS_PER_USER", "1")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env("NO_PROXY", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let pid = child.id();
        let mut relay = Self {
            child,
            pid,
            port,
            jwt_secret,
            log_path,
            _data_dir: data_dir,
        };
        relay.wait_healthy().await?;
        Ok(relay)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let client = http_client()?;
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let deadline = Instant::now() + HEALTH_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(BenchError::Relay(format!(
                    "exited during start-up ({status}); log tail:\n{}",
                    self.log_tail(20)
                )));
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    if body["status"] == "ok" {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(BenchError::Timeout("relay /health"))
    }

    fn stats(&self) -> Result<ProcStats> {
        proc_stats(self.pid)
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines by level, and the last few WARN/ERROR lines, for the "suspicious" section.
    fn log_summary(&self) -> Value {
        let log = self.log();
        let warn: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        let error: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        let mut notable: Vec<&str> = error.iter().chain(warn.iter()).copied().collect();
        notable.truncate(5);
        json!({
            "lines": log.lines().count(),
            "warn": warn.len(),
            "error": error.len(),
            "examples": notable.iter().map(|l| truncate(l, 300)).collect::<Vec<_>>(),
        })
    }

    async fn scrape_metric(&self, name: &str) -> Vec<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let Ok(client) = http_client() else {
            return vec!["(no http client)".into()];
        };
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let text = resp.text().await.unwrap_or_default();
                let found: Vec<String> = text
                    .lines()
                    .filter(|l| l.starts_with(name))
                    .map(str::to_string)
                    .collect();
                if found.is_empty() {
                    vec![format!("(/metrics has no {name} line)")]
                } else {
                    found
                }
            }
            Ok(resp) => vec![format!("(/metrics answered {})", resp.status())],
            Err(e) => vec![format!("(/metrics failed: {e})")],
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

// ---------------------------------------------------------------------------------------
// Tokens (the relay's development HS256 layout)

#[derive(Serialize)]
struct Claims {
    iss: &'static str,
    aud: &'static str,
    role: &'static str,
    sub: String,
    email: String,
    exp: u64,
    iat: u64,
    session_id: String,
    is_anonymous: bool,
    aal: &'static str,
}

fn mint_token(secret: &str, index: usize) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        iss: DEV_ISSUER,
        aud: "authenticated",
        role: "authenticated",
        sub: Uuid::new_v4().to_string(),
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

// ---------------------------------------------------------------------------------------
// Simulated browser

/// Only what the benchmark reads; every other field is ignored.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<String>,
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            None => return Err(BenchError::Protocol("socket ended".into())),
            Some(Err(e)) => return Err(BenchError::Ws(e.to_string())),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::Protocol(format!("closed by relay: {frame:?}")))
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn send_json(ws: &mut Ws, value: Value) -> Result<()> {
    ws.send(Message::text(value.to_string()))
        .await
        .map_err(|e| BenchError::Ws(e.to_string()))
}

/// Reads until a frame of type `want`; an `error`/`limitExceeded` frame fails the step.
async fn expect_frame(ws: &mut Ws, want: &str) -> Result<()> {
    loop {
        let text = next_text(ws).await?;
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        if frame.kind == want {
            return Ok(());
        }
        if matches!(frame.kind.as_str(), "error" | "limitExceeded") {
            return Err(BenchError::Protocol(format!(
                "waiting for {want}: {}",
                truncate(text.as_str(), 200)
            )));
        }
    }
}

/// Connect, authenticate, and (for jobs) create the project that becomes current.
async fn open_session(url: &str, secret: &str, index: usize, with_project: bool) -> Result<Ws> {
    open_session_as(url, &mint_token(secret, index)?, with_project).await
}

/// Connect and authenticate with `token`, and (for jobs) create the project that becomes current.
async fn open_session_as(url: &str, token: &str, with_project: bool) -> Result<Ws> {
    // Small buffers: ten thousand clients at tungstenite's 128 KiB default would be wasteful.
    // Large enough for an unbounded relay's `projectSelected` (24 MB after one big job).
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 30))
        .max_frame_size(Some(1 << 30));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| BenchError::Ws(e.to_string()))?;
    send_json(&mut ws, json!({"type": "init", "access_token": token})).await?;
    expect_frame(&mut ws, "init").await?;
    if with_project {
        send_json(&mut ws, json!({"type": "createProject", "name": "bench"})).await?;
        expect_frame(&mut ws, "projectCreated").await?;
    }
    Ok(ws)
}

/// Opens `count` sessions with at most `concurrency` handshakes in flight.
async fn open_sessions(
    url: &str,
    secret: &str,
    range: std::ops::Range<usize>,
    with_project: bool,
    concurrency: usize,
    deadline: TokioInstant,
) -> (Vec<Ws>, BTreeMap<String, usize>) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for index in range {
        let (url, secret, permits) = (url.to_string(), secret.to_string(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            tokio::time::timeout_at(deadline, open_session(&url, &secret, index, with_project))
                .await
                .unwrap_or(Err(BenchError::Timeout("session set-up")))
        });
    }
    let mut sockets = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => *errors.entry(truncate(&e.to_string(), 160)).or_default() += 1,
            Err(e) => *errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    (sockets, errors)
}

#[derive(Debug, Default)]
struct JobOutcome {
    /// Stream sequence numbers in arrival order.
    seqs: Vec<u32>,
    samples: Vec<Sample>,
    stream_frames: u64,
    unparsed_tokens: u64,
    progress_frames: u64,
    job_started: bool,
    started: bool,
    completed: bool,
    game_updated: bool,
    game_updated_before_completed: bool,
    stream_after_completed: u64,
    failure: Option<String>,
}

impl JobOutcome {
    /// Splits `<seq>:<t_ns>;` tokens, carrying a partial token in case the relay re-chunks text.
    fn take_tokens(&mut self, pending: &mut String, content: &str, received_ns: u64) {
        pending.push_str(content);
        let Some(end) = pending.rfind(';') else {
            return;
        };
        for token in pending[..end].split(';').filter(|t| !t.is_empty()) {
            let parsed = token
                .split_once(':')
                .and_then(|(s, t)| Some((s.parse::<u32>().ok()?, t.parse::<u64>().ok()?)));
            match parsed {
                Some((seq, sent_ns)) => {
                    self.seqs.push(seq);
                    self.samples.push(Sample {
                        sent_ns,
                        latency_ns: received_ns.saturating_sub(sent_ns),
                    });
                }
                None => self.unparsed_tokens += 1,
            }
        }
        pending.drain(..=end);
    }
}

async fn run_job(ws: &mut Ws) -> JobOutcome {
    let mut out = JobOutcome::default();
    if let Err(e) = send_json(ws, json!({"type": "message", "content": "go"})).await {
        out.failure = Some(e.to_string());
        return out;
    }
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
            "jobStarted" => out.job_started = true,
            "started" => out.started = true,
            "progress" => out.progress_frames += 1,
            "stream" => {
                out.stream_frames += 1;
                if out.completed {
                    out.stream_after_completed += 1;
                }
                let content = frame.content.unwrap_or_default();
                out.take_tokens(&mut pending, &content, received_ns);
            }
            "completed" => out.completed = true,
            "gameUpdated" if out.completed => {
                out.game_updated = true;
                break;
            }
            "gameUpdated" => out.game_updated_before_completed = true,
            "failed" | "error" | "limitExceeded" | "cancelled" => {
                out.failure = Some(truncate(text.as_str(), 200));
                break;
            }
            _ => {}
        }
    }
    if !pending.is_empty() {
        out.unparsed_tokens += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Aggregation

#[derive(Debug, Default, Serialize)]
struct Integrity {
    jobs: usize,
    jobs_ok: usize,
    events_expected: u64,
    events_received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    out_of_range: u64,
    unparsed: u64,
    stream_frames: u64,
    progress_frames: u64,
    missing_job_started: usize,
    missing_started: usize,
    missing_completed: usize,
    missing_game_updated: usize,
    game_updated_before_completed: usize,
    stream_after_completed: u64,
    failures: BTreeMap<String, usize>,
}

impl Integrity {
    fn add(&mut self, out: &JobOutcome, events: u32) {
        self.jobs += 1;
        self.events_expected += u64::from(events);
        self.events_received += out.seqs.len() as u64;
        let mut seen = vec![false; events as usize];
        let (mut dup, mut reordered, mut out_of_range) = (0u64, 0u64, 0u64);
        let mut max_seen: Option<u32> = None;
        for &seq in &out.seqs {
            let Some(slot) = seen.get_mut(seq as usize) else {
                out_of_range += 1;
                continue;
            };
            if *slot {
                dup += 1;
                continue;
            }
            *slot = true;
            if max_seen.is_some_and(|m| seq < m) {
                reordered += 1;
            }
            max_seen = Some(max_seen.map_or(seq, |m| m.max(seq)));
        }
        let lost = seen.iter().filter(|s| !**s).count() as u64;
        self.lost += lost;
        self.duplicated += dup;
        self.reordered += reordered;
        self.out_of_range += out_of_range;
        self.unparsed += out.unparsed_tokens;
        self.stream_frames += out.stream_frames;
        self.progress_frames += out.progress_frames;
        self.missing_job_started += usize::from(!out.job_started);
        self.missing_started += usize::from(!out.started);
        self.missing_completed += usize::from(!out.completed);
        self.missing_game_updated += usize::from(!out.game_updated);
        self.game_updated_before_completed += usize::from(out.game_updated_before_completed);
        self.stream_after_completed += out.stream_after_completed;
        if let Some(f) = &out.failure {
            *self.failures.entry(f.clone()).or_default() += 1;
        }
        let clean = lost + dup + reordered + out_of_range + out.unparsed_tokens == 0;
        if clean && out.job_started && out.started && out.game_updated && out.failure.is_none() {
            self.jobs_ok += 1;
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    samples: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Latency {
    /// Every sample, and the samples sent while every job was streaming (with that span's
    /// length in seconds).
    fn split(samples: &[Sample], windows: &[(u64, u64)]) -> (Self, Self, f64) {
        let steady = steady_window(windows);
        let secs = steady.map_or(0.0, |(from, to)| (to - from) as f64 / 1e9);
        (
            Self::of_sent(samples, |_| true),
            Self::within(samples, steady),
            secs,
        )
    }

    /// The latency of the samples sent within `steady` (none when there is no such span).
    fn within(samples: &[Sample], steady: Option<(u64, u64)>) -> Self {
        Self::of_sent(samples, |sent| {
            steady.is_some_and(|(from, to)| (from..=to).contains(&sent))
        })
    }

    /// The latency of the samples whose send time `keep` accepts.
    fn of_sent(samples: &[Sample], keep: impl Fn(u64) -> bool) -> Self {
        Self::from_ns(
            samples
                .iter()
                .filter(|s| keep(s.sent_ns))
                .map(|s| s.latency_ns)
                .collect(),
        )
    }

    fn describe(&self) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.mean_ms, self.samples
        )
    }

    fn from_ns(mut ns: Vec<u64>) -> Self {
        if ns.is_empty() {
            return Self::default();
        }
        ns.sort_unstable();
        let ms = |v: u64| v as f64 / 1e6;
        // Nearest-rank percentile.
        let pick = |p: f64| {
            let rank = ((p / 100.0) * ns.len() as f64).ceil() as usize;
            ms(ns[rank.clamp(1, ns.len()) - 1])
        };
        let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
        Self {
            samples: ns.len(),
            p50_ms: pick(50.0),
            p90_ms: pick(90.0),
            p99_ms: pick(99.0),
            max_ms: ms(ns[ns.len() - 1]),
            mean_ms: sum as f64 / ns.len() as f64 / 1e6,
        }
    }
}

#[derive(Debug, Serialize)]
struct Baseline {
    all_streaming: Latency,
    every_event: Latency,
    lost: u64,
}

/// The same schedule of streams, read by plain HTTP clients straight from the fake upstream:
/// one loopback hop instead of two and no relay, timed the same way. Its tail is what this
/// machine's scheduling and loopback cost any process, so the relay's figures read against it.
async fn direct_baseline(
    harness: &Harness,
    jobs: usize,
    events: u32,
    deadline: TokioInstant,
) -> Result<Baseline> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/generate_game", harness.upstream_addr);
    let mut set = JoinSet::new();
    for index in 0..jobs {
        let request = client
            .post(&url)
            .header("X-Modal-Secret", &harness.modal_secret)
            .json(&json!({"user_id": format!("u{index}"), "project_id": format!("p{index}"), "prompt": "go"}));
        set.spawn(tokio::time::timeout_at(deadline, read_direct(request)));
    }
    let (mut samples, mut windows, mut lost) = (Vec::new(), Vec::new(), 0u64);
    while let Some(joined) = set.join_next().await {
        let out = match joined {
            Ok(Ok(Ok(out))) => out,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(BenchError::Timeout("baseline streams")),
            Err(e) => return Err(BenchError::Protocol(format!("baseline task: {e}"))),
        };
        lost += u64::from(events).saturating_sub(out.samples.len() as u64);
        if let (Some(first), Some(last)) = (out.samples.first(), out.samples.last()) {
            windows.push((first.sent_ns, last.sent_ns));
        }
        samples.extend_from_slice(&out.samples);
    }
    let (every_event, all_streaming, _) = Latency::split(&samples, &windows);
    Ok(Baseline {
        all_streaming,
        every_event,
        lost,
    })
}

/// Reads one SSE response, timing the assistant texts as the relay's clients do.
async fn read_direct(request: reqwest::RequestBuilder) -> Result<JobOutcome> {
    const TEXT_FIELD: &str = "\"text\":\"";
    let mut response = request.send().await?.error_for_status()?;
    let mut out = JobOutcome::default();
    let (mut buffer, mut pending) = (Vec::<u8>::new(), String::new());
    while let Some(chunk) = response.chunk().await? {
        let received_ns = now_ns();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event);
            if let Some(text) = event
                .split_once(TEXT_FIELD)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(text, _)| text)
            {
                out.take_tokens(&mut pending, text, received_ns);
            }
        }
    }
    Ok(out)
}

/// One assistant event: when the fake upstream wrote it, and how long it took to arrive.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent_ns: u64,
    latency_ns: u64,
}

/// The span in which every job was streaming: from the last job's first event to the first
/// job's last event. Ramp-up (sockets sending `message`, jobs being created) and wind-down
/// (jobs completing) fall outside it.
fn steady_window(windows: &[(u64, u64)]) -> Option<(u64, u64)> {
    let from = windows.iter().map(|w| w.0).max()?;
    let to = windows.iter().map(|w| w.1).min()?;
    (from < to).then_some((from, to))
}

/// `sent_ms latency_ms` per event, sent time relative to the first event, in send order.
fn write_timeline(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable_by_key(|s| s.sent_ns);
    let origin = sorted.first().map_or(0, |s| s.sent_ns);
    let mut text = String::from("sent_ms latency_ms\n");
    for s in &sorted {
        text.push_str(&format!(
            "{:.3} {:.3}\n",
            (s.sent_ns - origin) as f64 / 1e6,
            s.latency_ns as f64 / 1e6
        ));
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// Scenarios

struct Harness {
    relay: Relay,
    upstream: Arc<Upstream>,
    upstream_addr: SocketAddr,
    modal_secret: String,
    stop_upstream: CancellationToken,
}

impl Harness {
    async fn start(
        common: &Common,
        events: u32,
        event_bytes: usize,
        gap: Duration,
    ) -> Result<Self> {
        let modal_secret = format!("bench-modal-{}", Uuid::new_v4().simple());
        let stop_upstream = CancellationToken::new();
        let (addr, upstream) = start_upstream(
            modal_secret.clone(),
            events,
            event_bytes,
            gap,
            common.aligned,
            stop_upstream.clone(),
        )
        .await?;
        let relay = Relay::spawn(&common.relay_bin, addr, &modal_secret, common.pin).await?;
        Ok(Self {
            relay,
            upstream,
            upstream_addr: addr,
            modal_secret,
            stop_upstream,
        })
    }

    fn upstream_summary(&self) -> Value {
        json!({
            "assistant_events_written": self.upstream.written.load(Ordering::Relaxed),
            "rejected_requests": self.upstream.rejected.load(Ordering::Relaxed),
            "connections": self.upstream.connections.load(Ordering::Relaxed),
            "calls": self.upstream.calls(),
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_upstream.cancel();
    }
}

/// `jobs` and `latency`: N sockets, each one job of M events.
async fn scenario_jobs(
    label: &str,
    common: &Common,
    load: Load,
    deadline: TokioInstant,
) -> Result<Value> {
    let Load { jobs, events, gap } = load;
    let harness = Harness::start(common, events, 0, gap).await?;
    let relay = &harness.relay;
    let before = relay.stats()?;

    let setup_started = Instant::now();
    let (sockets, setup_errors) = open_sessions(
        &relay.ws_url(),
        &relay.jwt_secret,
        0..jobs,
        true,
        common.concurrency,
        deadline,
    )
    .await;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let after_setup = relay.stats()?;

    let started = Instant::now();
    let loadgen_cpu_start = proc_stats(std::process::id())?.cpu_secs;
    let machine_cpu_start = MachineCpu::read();
    let mut set = JoinSet::new();
    for mut ws in sockets {
        set.spawn(async move {
            let out = tokio::time::timeout_at(deadline, run_job(&mut ws))
                .await
                .unwrap_or_else(|_| JobOutcome {
                    failure: Some("timed out waiting for the job to finish".into()),
                    ..JobOutcome::default()
                });
            (ws, out)
        });
    }
    let mut integrity = Integrity::default();
    let mut samples = Vec::with_capacity(jobs * events as usize);
    let mut windows = Vec::with_capacity(jobs);
    let mut open = Vec::with_capacity(jobs);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((ws, out)) => {
                integrity.add(&out, events);
                if let (Some(first), Some(last)) = (out.samples.first(), out.samples.last()) {
                    windows.push((first.sent_ns, last.sent_ns));
                }
                samples.extend_from_slice(&out.samples);
                open.push(ws);
            }
            Err(e) => *integrity.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let steal_share = machine_cpu_start.steal_share_until(MachineCpu::read());
    let after = relay.stats()?;
    let loadgen_cpu = proc_stats(std::process::id())?.cpu_secs - loadgen_cpu_start;
    let metrics = if common.metrics {
        Some(relay.scrape_metric("relay_event").await)
    } else {
        None
    };
    // What the relay keeps once every browser is gone: finished jobs should not pin memory.
    drop(open);
    tokio::time::sleep(AFTER_CLOSE_SETTLE).await;
    let after_close = relay.stats()?;

    if let Some(path) = &common.timeline {
        write_timeline(path, &samples)?;
    }
    let (latency, latency_steady, steady_secs) = Latency::split(&samples, &windows);
    let baseline = if common.baseline {
        Some(direct_baseline(&harness, jobs, events, deadline).await?)
    } else {
        None
    };
    let job_cpu = after.cpu_secs - after_setup.cpu_secs;
    let events_per_sec = integrity.events_received as f64 / wall.max(1e-9);
    // The rate the relay sustained once every job streamed: the wall figure above also
    // spans the jobs' starts and their spread ends, when fewer streams are offering events.
    let events_per_sec_steady = latency_steady.samples as f64 / steady_secs.max(1e-9);
    // Includes reading upstream, every frame of the job and the sockets' writes: the whole
    // cost of relaying, divided by the assistant events relayed.
    let cpu_us_per_event = job_cpu * 1e6 / (integrity.events_received.max(1) as f64);
    let report = json!({
        "scenario": label,
        "params": {"jobs": jobs, "events": events, "aligned": common.aligned, "pinned": common.pin, "gap_ms": gap.as_secs_f64() * 1e3,
                   "concurrency": common.concurrency},
        "setup": {"sockets_ok": jobs - setup_errors.values().sum::<usize>(),
                  "errors": setup_errors, "secs": setup_secs},
        "wall_secs": wall,
        "events_per_sec": events_per_sec,
        "events_per_sec_all_jobs_streaming": events_per_sec_steady,
        "integrity": integrity,
        "latency": latency,
        "latency_all_jobs_streaming": latency_steady,
        "all_jobs_streaming_secs": steady_secs,
        "baseline_without_relay": baseline,
        "relay": {
            "cpu_secs_job_phase": job_cpu,
            "cpu_secs_total": after.cpu_secs,
            "cpu_util_job_phase": job_cpu / wall.max(1e-9),
            "cpu_us_per_event": cpu_us_per_event,
            "rss_kib_before": before.rss_kib,
            "rss_kib_after_setup": after_setup.rss_kib,
            "rss_kib_after": after.rss_kib,
            "rss_kib_after_sockets_closed": after_close.rss_kib,
            "threads_after_sockets_closed": after_close.threads,
            "peak_rss_kib": after.hwm_kib,
            "threads": after.threads,
            "log": relay.log_summary(),
        },
        "loadgen_cpu_secs_job_phase": loadgen_cpu,
        "machine_steal_share_job_phase": steal_share,
        "upstream": harness.upstream_summary(),
        "metrics": metrics,
    });

    let i = &report["integrity"];
    println!(
        "== {label}: {jobs} jobs x {events} events, gap {:.1} ms ==",
        gap.as_secs_f64() * 1e3
    );
    println!(
        "set-up       {} sockets ok in {setup_secs:.2} s, errors: {}",
        report["setup"]["sockets_ok"], report["setup"]["errors"]
    );
    println!(
        "jobs         ok {}/{}  failures: {}",
        i["jobs_ok"], i["jobs"], i["failures"]
    );
    println!(
        "integrity    expected {} received {}  lost {} duplicated {} reordered {} out-of-range {} unparsed {}",
        i["events_expected"], i["events_received"], i["lost"], i["duplicated"], i["reordered"],
        i["out_of_range"], i["unparsed"]
    );
    println!(
        "frames       stream {} progress {}  missing: jobStarted {} started {} completed {} gameUpdated {}  gameUpdated-before-completed {} stream-after-completed {}",
        i["stream_frames"], i["progress_frames"], i["missing_job_started"], i["missing_started"],
        i["missing_completed"], i["missing_game_updated"], i["game_updated_before_completed"],
        i["stream_after_completed"]
    );
    println!(
        "throughput   wall {wall:.3} s  {events_per_sec:.0} events/s relayed; {events_per_sec_steady:.0} events/s while all {jobs} jobs stream"
    );
    println!("latency      {}  (every event)", latency.describe());
    println!(
        "latency      {}  (the {steady_secs:.2} s while all {jobs} jobs stream)",
        latency_steady.describe()
    );
    if let Some(b) = &baseline {
        println!(
            "baseline     {}  (same streams straight from the fake upstream, no relay; {} lost)",
            b.all_streaming.describe(),
            b.lost
        );
    }
    println!(
        "relay cpu    {job_cpu:.2} s during jobs ({:.0}% of one core), {:.2} s since start; loadgen itself {loadgen_cpu:.2} s",
        100.0 * job_cpu / wall.max(1e-9),
        after.cpu_secs
    );
    println!("relay cpu    {cpu_us_per_event:.2} µs per relayed event");
    println!(
        "machine      {:.1}% of CPU time stolen by the hypervisor during jobs",
        100.0 * steal_share
    );
    println!(
        "relay rss    before {:.1} MiB, after set-up {:.1} MiB, after jobs {:.1} MiB, peak {:.1} MiB, 12 s after sockets closed {:.1} MiB",
        mib(before.rss_kib), mib(after_setup.rss_kib), mib(after.rss_kib), mib(after.hwm_kib), mib(after_close.rss_kib)
    );
    println!(
        "relay thr    {} threads after jobs, {} 12 s after sockets closed",
        after.threads, after_close.threads
    );
    print_common_tail(&report);
    Ok(report)
}

async fn scenario_idle(common: &Common, sockets: usize, deadline: TokioInstant) -> Result<Value> {
    if sockets <= IDLE_BASELINE_SOCKETS {
        return Err(BenchError::Usage(format!(
            "--sockets must exceed the {IDLE_BASELINE_SOCKETS}-socket baseline"
        )));
    }
    let harness = Harness::start(common, 1, 0, Duration::ZERO).await?;
    let relay = &harness.relay;
    let url = relay.ws_url();
    let before = relay.stats()?;
    let stop = CancellationToken::new();
    let closed = Arc::new(AtomicU64::new(0));

    let (first, mut errors) = open_sessions(
        &url,
        &relay.jwt_secret,
        0..IDLE_BASELINE_SOCKETS,
        false,
        common.concurrency,
        deadline,
    )
    .await;
    let mut alive = first.len();
    let mut readers = JoinSet::new();
    hold_idle(&mut readers, first, &stop, &closed);
    tokio::time::sleep(SETTLE).await;
    let baseline = relay.stats()?;

    let connect_started = Instant::now();
    let (rest, more_errors) = open_sessions(
        &url,
        &relay.jwt_secret,
        IDLE_BASELINE_SOCKETS..sockets,
        false,
        common.concurrency,
        deadline,
    )
    .await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let added = rest.len();
    alive += added;
    for (k, v) in more_errors {
        *errors.entry(k).or_default() += v;
    }
    hold_idle(&mut readers, rest, &stop, &closed);
    tokio::time::sleep(SETTLE).await;
    let full = relay.stats()?;
    let closed_by_relay = closed.load(Ordering::Relaxed);
    let metrics = if common.metrics {
        Some(relay.scrape_metric("relay_event").await)
    } else {
        None
    };
    stop.cancel();
    while readers.join_next().await.is_some() {}

    let delta_kib = full.rss_kib.saturating_sub(baseline.rss_kib);
    let per_socket_kib = delta_kib as f64 / added.max(1) as f64;
    let report = json!({
        "scenario": "idle",
        "params": {"sockets": sockets, "baseline_sockets": IDLE_BASELINE_SOCKETS,
                   "concurrency": common.concurrency},
        "sockets_authenticated": alive,
        "errors": errors,
        "closed_by_relay_while_idle": closed_by_relay,
        "connect_secs": connect_secs,
        "connects_per_sec": added as f64 / connect_secs.max(1e-9),
        "per_socket_kib": per_socket_kib,
        "relay": {
            "rss_kib_before": before.rss_kib,
            "rss_kib_baseline": baseline.rss_kib,
            "rss_kib_full": full.rss_kib,
            "peak_rss_kib": full.hwm_kib,
            "cpu_secs_total": full.cpu_secs,
            "threads": full.threads,
            "log": relay.log_summary(),
        },
        "upstream": harness.upstream_summary(),
        "metrics": metrics,
    });
    println!("== idle: {sockets} authenticated sockets ==");
    println!(
        "sockets      {alive} authenticated, errors: {}, closed by relay while idle: {closed_by_relay}",
        report["errors"]
    );
    println!(
        "connect      {added} sockets in {connect_secs:.2} s ({:.0}/s, {} in flight)",
        added as f64 / connect_secs.max(1e-9),
        common.concurrency
    );
    println!(
        "relay rss    before {:.1} MiB, {IDLE_BASELINE_SOCKETS} sockets {:.1} MiB, {alive} sockets {:.1} MiB, peak {:.1} MiB",
        mib(before.rss_kib), mib(baseline.rss_kib), mib(full.rss_kib), mib(full.hwm_kib)
    );
    println!(
        "per socket   {per_socket_kib:.2} KiB  (({} - {}) KiB / {added})",
        full.rss_kib, baseline.rss_kib
    );
    println!(
        "relay cpu    {:.2} s since start, threads {}",
        full.cpu_secs, full.threads
    );
    print_common_tail(&report);
    Ok(report)
}

/// What one reading client saw of a large job.
#[derive(Debug, Default)]
struct BigOutcome {
    stream_frames: u64,
    stream_bytes: u64,
    completed: bool,
    failure: Option<String>,
}

/// Sends the generation message and reads every frame until `gameUpdated` (or a failure).
async fn read_big_job(ws: &mut Ws) -> BigOutcome {
    let mut out = BigOutcome::default();
    if let Err(e) = send_json(ws, json!({"type": "message", "content": "go"})).await {
        out.failure = Some(e.to_string());
        return out;
    }
    loop {
        let text = match next_text(ws).await {
            Ok(text) => text,
            Err(e) => {
                out.failure = Some(e.to_string());
                return out;
            }
        };
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        match frame.kind.as_str() {
            "stream" => {
                out.stream_frames += 1;
                out.stream_bytes += frame.content.map_or(0, |c| c.len() as u64);
            }
            "completed" => out.completed = true,
            "gameUpdated" if out.completed => return out,
            "failed" | "error" | "limitExceeded" | "cancelled" => {
                out.failure = Some(truncate(text.as_str(), 200));
                return out;
            }
            _ => {}
        }
    }
}

/// Connect, authenticate, create a project; returns the socket, the project's id and the
/// token (to open the project again from another socket).
async fn open_project_session(
    url: &str,
    secret: &str,
    index: usize,
) -> Result<(Ws, String, String)> {
    let token = mint_token(secret, index)?;
    let mut ws = open_session_as(url, &token, false).await?;
    send_json(&mut ws, json!({"type": "createProject", "name": "bench"})).await?;
    loop {
        let text = next_text(&mut ws).await?;
        let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        if value["type"] == "projectCreated" {
            let id = value["project"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            return Ok((ws, id, token));
        }
    }
}

/// Byte length of the `projectSelected` frame a new socket of the user receives for `project`.
async fn project_selected_bytes(url: &str, token: &str, project: &str) -> Result<usize> {
    let mut ws = open_session_as(url, token, false).await?;
    send_json(
        &mut ws,
        json!({"type": "selectProject", "projectId": project}),
    )
    .await?;
    loop {
        let text = next_text(&mut ws).await?;
        if text.as_str().starts_with(r#"{"type":"projectSelected""#) {
            return Ok(text.len());
        }
    }
}

/// `big`: N jobs at once, each M assistant events of B bytes, every client reading. What the
/// relay holds while they run (peak RSS growth), what it sends a tab that opens the project
/// afterwards (`projectSelected`), and what it gives back once they are over.
async fn scenario_big(
    common: &Common,
    jobs: usize,
    events: u32,
    event_bytes: usize,
    deadline: TokioInstant,
) -> Result<Value> {
    let harness = Harness::start(common, events, event_bytes, Duration::ZERO).await?;
    let relay = &harness.relay;
    let mut sessions = Vec::with_capacity(jobs);
    for index in 0..jobs {
        sessions.push(open_project_session(&relay.ws_url(), &relay.jwt_secret, index).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let before = relay.stats()?;
    let machine_cpu_start = MachineCpu::read();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (mut ws, project, token) in sessions {
        set.spawn(async move {
            let out = tokio::time::timeout_at(deadline, read_big_job(&mut ws))
                .await
                .unwrap_or_else(|_| BigOutcome {
                    failure: Some("timed out waiting for the job to finish".into()),
                    ..BigOutcome::default()
                });
            (ws, project, token, out)
        });
    }
    let (mut finished, mut failures) = (Vec::new(), BTreeMap::<String, usize>::new());
    let (mut stream_frames, mut stream_bytes, mut completed) = (0u64, 0u64, 0usize);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((ws, project, token, out)) => {
                stream_frames += out.stream_frames;
                stream_bytes += out.stream_bytes;
                completed += usize::from(out.completed && out.failure.is_none());
                if let Some(f) = out.failure {
                    *failures.entry(f).or_default() += 1;
                }
                finished.push((ws, project, token));
            }
            Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let steal_share = machine_cpu_start.steal_share_until(MachineCpu::read());
    let after = relay.stats()?;
    let mut selected_bytes = 0;
    for (_, project, token) in &finished {
        let bytes = project_selected_bytes(&relay.ws_url(), token, project).await?;
        selected_bytes = selected_bytes.max(bytes);
    }
    drop(finished);
    tokio::time::sleep(AFTER_CLOSE_SETTLE).await;
    let later = relay.stats()?;
    let peak_growth_kib = after.hwm_kib.saturating_sub(before.rss_kib);
    let report = json!({
        "scenario": "big",
        "params": {"jobs": jobs, "events": events, "event_bytes": event_bytes},
        "jobs_completed": completed,
        "failures": failures,
        "stream_frames": stream_frames,
        "stream_bytes": stream_bytes,
        "wall_secs": wall,
        "project_selected_bytes": selected_bytes,
        "machine_steal_share_job_phase": steal_share,
        "relay": {
            "rss_kib_before": before.rss_kib,
            "peak_rss_kib": after.hwm_kib,
            "peak_rss_growth_kib": peak_growth_kib,
            "rss_kib_after_jobs": after.rss_kib,
            "rss_kib_12s_later": later.rss_kib,
            "cpu_secs_job_phase": after.cpu_secs - before.cpu_secs,
            "threads": later.threads,
            "log": relay.log_summary(),
        },
        "upstream": harness.upstream_summary(),
    });
    println!(
        "== big: {jobs} jobs x {events} events x {event_bytes} bytes ({:.1} MiB of assistant text each) ==",
        f64::from(events) * event_bytes as f64 / 1048576.0
    );
    println!(
        "jobs         completed {completed}/{jobs} in {wall:.2} s, failures: {}",
        report["failures"]
    );
    println!(
        "clients      {stream_frames} stream frames, {:.1} MiB of stream text received",
        stream_bytes as f64 / 1048576.0
    );
    println!(
        "relay rss    before {:.1} MiB, peak {:.1} MiB (growth {:.1} MiB), after jobs {:.1} MiB, 12 s later {:.1} MiB",
        mib(before.rss_kib),
        mib(after.hwm_kib),
        mib(peak_growth_kib),
        mib(after.rss_kib),
        mib(later.rss_kib)
    );
    println!(
        "selected     projectSelected after the jobs: {selected_bytes} bytes ({:.2} MiB)",
        selected_bytes as f64 / 1048576.0
    );
    println!(
        "machine      {:.1}% of CPU time stolen by the hypervisor during jobs",
        100.0 * steal_share
    );
    print_common_tail(&report);
    Ok(report)
}

/// Keeps each socket read (so pings get their pongs) until `stop`; counts relay closes.
fn hold_idle(
    readers: &mut JoinSet<()>,
    sockets: Vec<Ws>,
    stop: &CancellationToken,
    closed: &Arc<AtomicU64>,
) {
    for mut ws in sockets {
        let (stop, closed) = (stop.clone(), closed.clone());
        readers.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
    }
}

fn print_common_tail(report: &Value) {
    println!("upstream     {}", report["upstream"]);
    println!("relay log    {}", report["relay"]["log"]);
    if let Some(lines) = report["metrics"].as_array() {
        for line in lines {
            println!("metrics      relay: {}", line.as_str().unwrap_or_default());
        }
        // The relay counts every job event it delivers: started, progress, stream and the
        // terminal event (not the jobStarted reply nor gameUpdated).
        let i = &report["integrity"];
        let count = |key: &str| i[key].as_u64().unwrap_or(0);
        let jobs = count("jobs");
        let job_events = count("stream_frames")
            + count("progress_frames")
            + (jobs - count("missing_started"))
            + (jobs - count("missing_completed"))
            + i["failures"]
                .as_object()
                .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
        println!("metrics      loadgen job events received (started+progress+stream+terminal): {job_events}");
    }
}

async fn run(scenario: Scenario, common: Common) -> Result<Value> {
    let deadline = TokioInstant::now() + common.timeout;
    let work = async {
        match scenario {
            Scenario::Streaming {
                label,
                through,
                load,
            } => match through {
                Through::Relay => scenario_jobs(label, &common, load, deadline).await,
                Through::Cluster => cluster::scenario_cluster(label, &common, load, deadline).await,
                Through::Floor => floor::scenario_floor(label, &common, load, deadline).await,
                Through::FloorBus => {
                    floor_bus::scenario_floor_bus(label, &common, load, deadline).await
                }
            },
            Scenario::Idle { sockets } => scenario_idle(&common, sockets, deadline).await,
            Scenario::Big {
                jobs,
                events,
                event_bytes,
            } => scenario_big(&common, jobs, events, event_bytes, deadline).await,
            Scenario::FloorForward => floor::forward().await,
        }
    };
    // A little grace past the deadline so in-flight steps report their own timeouts.
    tokio::time::timeout_at(deadline + Duration::from_secs(10), work)
        .await
        .unwrap_or(Err(BenchError::Timeout("scenario")))
}

fn main() -> std::process::ExitCode {
    clock_base();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (scenario, common) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    if common.pin {
        // Before the runtime exists, so every thread of the load generator inherits it.
        pin_to_cpu(1);
    }
    let (nofile_soft, nofile_hard) = raise_nofile();
    let machine = Machine::read();
    println!("{}", machine.describe());
    println!(
        "relay        {} (separate process), RLIMIT_NOFILE {nofile_soft}/{nofile_hard}",
        common.relay_bin.display()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(scenario, common));
    // Sockets and servers still owned by the runtime close here, before the report line.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(mut report) => {
            report["machine"] = json!(machine);
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen failed: {e}");
            println!("{}", json!({"error": e.to_string(), "machine": machine}));
            std::process::ExitCode::FAILURE
        }
    }
}
