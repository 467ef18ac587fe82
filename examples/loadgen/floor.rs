//! `loadgen floor-jobs` / `loadgen floor-latency`: the floor under the relay's figures on this
//! machine. The same streams, on the same schedule, pass through a process that does nothing
//! but copy bytes: no WebSocket, no JSON, no job, no database — only what any relay must do
//! (read each event from its upstream socket, write it to its browser's socket), on a tokio
//! runtime of the relay's shape. Its CPU per event and its latency are the least a relay of
//! these streams can cost here, so the relay's own figures read against them.
//!
//! The forwarder is this program started again (`floor-forward`, a separate process like the
//! relay). Per job it opens one connection to the fake upstream, makes three small
//! request/response calls on it (the pre-job pipeline's calls, on one reused connection: the
//! cheapest they can be), then asks for the stream and copies it to its client until the
//! upstream closes. Events are 200-byte lines carrying their send time, read by clients in
//! this process, timed as the `jobs` and `latency` scenarios time theirs.
//!
//! `--hops N` puts N forwarders in a row. A cross-replica event passes three processes (the
//! owning replica, Redis, the follower's replica); three hops are the least that path costs.
//! `LOADGEN_FLOOR_WORKERS` sets the forwarders' runtime workers (default: one per CPU).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::floor_bus;
use super::*;

/// Bytes of one event line, newline included: about a relayed `stream` frame.
pub(super) const EVENT_BYTES: usize = 200;
/// Calls made before the stream, as the pre-job pipeline makes (intent, file, skills).
const CALLS: usize = 3;
/// The environment variable that tells `floor-forward` where the upstream listens.
const UPSTREAM_ENV: &str = "LOADGEN_FLOOR_UPSTREAM";
/// Set, the forwarder's runtime has this many workers instead of one per CPU.
const WORKERS_ENV: &str = "LOADGEN_FLOOR_WORKERS";

/// `floor-forward`: accept clients, relay each one's job from the upstream, until killed.
/// With `LOADGEN_FLOOR_ROLE` set it is one of the bus floor's two forwarders instead
/// (`floor_bus.rs`).
pub(super) async fn forward() -> Result<Value> {
    let role = std::env::var(floor_bus::ROLE_ENV).unwrap_or_default();
    // The follower has no upstream but Redis; the others fail before they announce a port.
    let upstream = match role.as_str() {
        floor_bus::FOLLOWER => None,
        _ => Some(upstream_addr()?),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    let Some(upstream) = upstream else {
        return floor_bus::follow(listener).await;
    };
    if role == floor_bus::OWNER {
        return floor_bus::own(listener, upstream).await;
    }
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = forward_job(client, upstream).await;
        });
    }
}

/// Where the fake upstream listens, from the environment the scenario set.
fn upstream_addr() -> Result<SocketAddr> {
    std::env::var(UPSTREAM_ENV)
        .map_err(|_| BenchError::Usage(format!("{UPSTREAM_ENV} is not set")))?
        .parse()
        .map_err(|_| BenchError::Usage(format!("{UPSTREAM_ENV} is not an address")))
}

async fn forward_job(client: TcpStream, upstream: SocketAddr) -> Result<()> {
    client.set_nodelay(true)?;
    let (mut client, mut up, early) = open_stream(BufReader::new(client), upstream).await?;
    client.write_all(&early).await?;
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}

/// Read the client's request, make the pre-job calls upstream, pass the request on. Returns
/// both sockets and the stream's first bytes, read along with the last call's answer.
pub(super) async fn open_stream(
    mut client: BufReader<TcpStream>,
    upstream: SocketAddr,
) -> Result<(TcpStream, TcpStream, Vec<u8>)> {
    let mut request = String::new();
    client.read_line(&mut request).await?;
    let mut up = BufReader::new(TcpStream::connect(upstream).await?);
    up.get_ref().set_nodelay(true)?;
    let mut reply = String::new();
    for _ in 0..CALLS {
        up.get_mut().write_all(b"CALL\n").await?;
        reply.clear();
        up.read_line(&mut reply).await?;
    }
    // Whatever the client sent after its request goes on with it (a forwarder in front of
    // this one sends its own calls before the stream's request).
    let mut onward = request.into_bytes();
    onward.extend_from_slice(client.buffer());
    up.get_mut().write_all(&onward).await?;
    let early = up.buffer().to_vec();
    Ok((client.into_inner(), up.into_inner(), early))
}

/// The fake upstream: `CALL` gets a one-line answer; `STREAM <events> <gap_ns>` gets that many
/// timed event lines, then the connection closes.
pub(super) async fn start_upstream(aligned: bool) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let streams = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let streams = streams.clone();
            tokio::spawn(async move {
                let _ = serve_upstream(conn, &streams, aligned).await;
            });
        }
    });
    Ok(addr)
}

async fn serve_upstream(conn: TcpStream, streams: &AtomicU64, aligned: bool) -> Result<()> {
    conn.set_nodelay(true)?;
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    let answer = format!("OK {}\n", "x".repeat(EVENT_BYTES - 4));
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("CALL") => write.write_all(answer.as_bytes()).await?,
            Some("STREAM") => {
                let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
                let (Some(events), Some(gap_ns)) = (number(), number()) else {
                    return Err(BenchError::Protocol(format!("bad request {line:?}")));
                };
                let gap = Duration::from_nanos(gap_ns);
                let start = stream_start(streams, gap, aligned);
                for seq in 0..events {
                    if !gap.is_zero() {
                        tokio::time::sleep_until(start + gap * (seq as u32 + 1)).await;
                    }
                    let head = format!("{seq} {} ", now_ns());
                    let pad = "x".repeat(EVENT_BYTES - 1 - head.len());
                    write.write_all(format!("{head}{pad}\n").as_bytes()).await?;
                }
                return Ok(());
            }
            _ => return Err(BenchError::Protocol(format!("bad request {line:?}"))),
        }
    }
}

/// The forwarder child; killed when dropped.
pub(super) struct Forwarder {
    child: Child,
    port: u16,
}

impl Forwarder {
    /// Start a forwarder of `upstream`; `env` tells the bus floor's forwarders their role.
    pub(super) fn spawn(
        upstream: SocketAddr,
        timeout: Duration,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("floor-forward")
            // It outlives the scenario's deadline; the scenario kills it when done.
            .args(["--timeout-secs", &(timeout.as_secs() + 60).to_string()])
            .env(UPSTREAM_ENV, upstream.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The forwarder's runtime workers (tokio's default: one per CPU, as the relay).
        if let Ok(workers) = std::env::var(WORKERS_ENV) {
            command.env("TOKIO_WORKER_THREADS", workers);
        }
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Relay("forwarder has no stdout".into()))?;
        let port = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(std::result::Result::ok)
            .find_map(|l| l.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()));
        match port {
            Some(port) => Ok(Self { child, port }),
            None => {
                let _ = child.kill();
                Err(BenchError::Relay(
                    "forwarder did not report its port".into(),
                ))
            }
        }
    }

    /// Where its clients connect.
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(super) fn stats(&self) -> Result<ProcStats> {
        proc_stats(self.child.id())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client saw of its job.
#[derive(Default)]
pub(super) struct FloorOutcome {
    samples: Vec<Sample>,
    lost: u64,
    reordered: u64,
}

/// Send `request` (if any), then read the job's event lines until the connection closes.
pub(super) async fn read_job(
    conn: TcpStream,
    request: String,
    events: u64,
) -> Result<FloorOutcome> {
    let (read, mut write) = conn.into_split();
    if !request.is_empty() {
        write.write_all(request.as_bytes()).await?;
    }
    let mut read = BufReader::new(read);
    let mut out = FloorOutcome {
        samples: Vec::with_capacity(usize::try_from(events).unwrap_or(0)),
        ..FloorOutcome::default()
    };
    let mut line = String::new();
    let mut next = 0u64;
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            break;
        }
        let received = now_ns();
        let mut words = line.split_whitespace();
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        let (Some(seq), Some(sent_ns)) = (number(), number()) else {
            return Err(BenchError::Protocol(format!("bad event {line:?}")));
        };
        if seq != next {
            out.reordered += 1;
        }
        next = seq + 1;
        out.samples.push(Sample {
            sent_ns,
            latency_ns: received.saturating_sub(sent_ns),
        });
    }
    out.lost = events.saturating_sub(out.samples.len() as u64);
    Ok(out)
}

/// The request that starts a stream of `events` events `gap` apart.
pub(super) fn stream_request(events: u32, gap: Duration) -> String {
    let gap_ns = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
    format!("STREAM {events} {gap_ns}\n")
}

/// What a set of clients saw, put together.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) samples: Vec<Sample>,
    /// Per job: the send times of its first and last events.
    pub(super) windows: Vec<(u64, u64)>,
    pub(super) lost: u64,
    pub(super) reordered: u64,
    pub(super) failed: usize,
}

impl Seen {
    /// Wait for every client of `set` and put together what each saw.
    pub(super) async fn gather(
        mut set: JoinSet<std::result::Result<Result<FloorOutcome>, tokio::time::error::Elapsed>>,
    ) -> Self {
        let mut seen = Self::default();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(Ok(out))) => {
                    if let (Some(first), Some(last)) = (out.samples.first(), out.samples.last()) {
                        seen.windows.push((first.sent_ns, last.sent_ns));
                    }
                    seen.lost += out.lost;
                    seen.reordered += out.reordered;
                    seen.samples.extend_from_slice(&out.samples);
                }
                _ => seen.failed += 1,
            }
        }
        seen
    }

    /// The integrity line of the report.
    pub(super) fn integrity(&self) -> String {
        format!(
            "received {}  lost {}  reordered {}  failed jobs {}",
            self.samples.len(),
            self.lost,
            self.reordered,
            self.failed
        )
    }
}

/// Run `jobs` streams of `events` events `gap` apart through the byte forwarder.
pub(super) async fn scenario_floor(
    label: &str,
    common: &Common,
    load: Load,
    deadline: TokioInstant,
) -> Result<Value> {
    let Load { jobs, events, gap } = load;
    let mut addr = start_upstream(common.aligned).await?;
    // Each forwarder's upstream is the one before it; clients connect to the last.
    let mut forwarders = Vec::with_capacity(common.hops);
    for _ in 0..common.hops {
        let forwarder = Forwarder::spawn(addr, common.timeout, &[])?;
        addr = forwarder.addr();
        forwarders.push(forwarder);
    }
    let cpu_secs = |forwarders: &[Forwarder]| -> Result<f64> {
        forwarders
            .iter()
            .map(|f| f.stats().map(|s| s.cpu_secs))
            .sum()
    };
    let mut conns = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        conns.push(conn);
    }
    let before = cpu_secs(&forwarders)?;
    let machine_cpu_start = MachineCpu::read();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for conn in conns {
        let request = stream_request(events, gap);
        set.spawn(tokio::time::timeout_at(
            deadline,
            read_job(conn, request, u64::from(events)),
        ));
    }
    let seen = Seen::gather(set).await;
    let wall = started.elapsed().as_secs_f64();
    let steal_share = machine_cpu_start.steal_share_until(MachineCpu::read());
    let cpu = cpu_secs(&forwarders)? - before;
    let received = seen.samples.len();
    let (latency, steady, steady_secs) = Latency::split(&seen.samples, &seen.windows);
    // Per hop: what one relaying process spends on an event.
    let cpu_us_per_event = cpu * 1e6 / received.max(1) as f64 / common.hops as f64;
    println!(
        "== {label}: {jobs} jobs x {events} events through {} byte forwarder(s), gap {:.1} ms ==",
        common.hops,
        gap.as_secs_f64() * 1e3
    );
    println!("integrity    {}", seen.integrity());
    println!("throughput   wall {wall:.3} s  {:.0} events/s; {:.0} events/s while all {jobs} jobs stream", received as f64 / wall.max(1e-9), steady.samples as f64 / steady_secs.max(1e-9));
    println!("latency      {}  (every event)", latency.describe());
    println!(
        "latency      {}  (the {steady_secs:.2} s while all {jobs} jobs stream)",
        steady.describe()
    );
    println!(
        "forwarder    {cpu:.2} s CPU during jobs, {cpu_us_per_event:.2} µs per event and forwarder"
    );
    println!(
        "machine      {:.1}% of CPU time stolen by the hypervisor during jobs",
        steal_share * 100.0
    );
    Ok(json!({
        "scenario": label,
        "params": {"jobs": jobs, "events": events, "gap_ms": gap.as_secs_f64() * 1e3, "aligned": common.aligned, "calls_per_job": CALLS, "hops": common.hops, "event_bytes": EVENT_BYTES},
        "integrity": {"received": received, "lost": seen.lost, "reordered": seen.reordered, "failed_jobs": seen.failed},
        "wall_secs": wall,
        "latency": latency,
        "latency_all_jobs_streaming": steady,
        "forwarder": {"cpu_secs_job_phase": cpu, "cpu_us_per_event": cpu_us_per_event},
        "machine_steal_share_job_phase": steal_share,
    }))
}
