//! `loadgen floor-cluster-jobs` / `loadgen floor-cluster-latency`: the floor under the
//! cluster scenarios' cross-replica figures. The same streams as `cluster-*`, each with an
//! owner's client and a follower's client, pass through two byte forwarders and a real
//! `redis-server` — the parts the job bus is built of — and nothing else.
//!
//! - The *owner* forwarder relays a job from the fake upstream to the owner's client as
//!   `floor-forward` does (pre-job calls, then the stream's bytes as they come), and hands
//!   every chunk it read to one writer task. Per batch of chunks the writer sends one
//!   pipeline: per job one `XADD` to the job's stream (capped) and one `PUBLISH` on the job's
//!   channel, as the relay's bus writer does.
//! - The *follower* forwarder holds one subscription for all its clients and copies each
//!   job's messages to the client following it; an empty message ends the job.
//!
//! No WebSocket, no JSON, no sequence numbers, no database, no replay (a follower subscribes
//! before its job starts): what the relay does beyond this is its own cost. The figures are
//! the followers' (event sent upstream → received by the follower's client), beside the
//! owners'.

use std::collections::HashMap;

use bytes::BytesMut;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::cluster_services::RedisServer;
use super::floor::{open_stream, read_job, start_upstream, stream_request, Forwarder, Seen};
use super::*;

/// The environment variable that makes `floor-forward` one of this floor's forwarders.
pub(super) const ROLE_ENV: &str = "LOADGEN_FLOOR_ROLE";
/// Its value for the forwarder that runs the jobs and writes them to Redis.
pub(super) const OWNER: &str = "owner";
/// Its value for the forwarder that follows jobs through Redis.
pub(super) const FOLLOWER: &str = "follower";
/// The environment variable that tells both forwarders where Redis is.
const REDIS_ENV: &str = "LOADGEN_FLOOR_REDIS";
/// Chunks the writer takes at most into one pipeline.
const WRITE_BATCH: usize = 1024;
/// Bytes the owner reads from its upstream at most at once.
const READ_BYTES: usize = 16 * 1024;
/// Entries a job's stream keeps, about (`MAXLEN ~`).
const STREAM_MAX_ENTRIES: usize = 1000;
/// How long an ended job's stream stays.
const STREAM_EXPIRE_SECS: u64 = 60;

/// A chunk of a job's stream on its way to Redis; an empty chunk ends the job.
type Chunk = (Arc<str>, Bytes);

fn stream_key(job: &str) -> String {
    format!("floor:events:{job}")
}

fn live_channel(job: &str) -> String {
    format!("floor:live:{job}")
}

fn redis_client() -> Result<redis::Client> {
    let url = std::env::var(REDIS_ENV)
        .map_err(|_| BenchError::Usage(format!("{REDIS_ENV} is not set")))?;
    Ok(redis::Client::open(url)?)
}

/// The owner forwarder: relay each client's job from `upstream`, and write it to Redis.
pub(super) async fn own(listener: TcpListener, upstream: SocketAddr) -> Result<Value> {
    let conn = redis_client()?.get_multiplexed_async_connection().await?;
    let (chunks, queue) = mpsc::unbounded_channel();
    tokio::spawn(write_chunks(conn, queue));
    loop {
        let (client, _) = listener.accept().await?;
        let chunks = chunks.clone();
        tokio::spawn(async move {
            let _ = own_job(client, upstream, chunks).await;
        });
    }
}

/// `JOB <name>`, then the stream's request: the client gets the stream, Redis gets it too.
async fn own_job(
    client: TcpStream,
    upstream: SocketAddr,
    chunks: mpsc::UnboundedSender<Chunk>,
) -> Result<()> {
    client.set_nodelay(true)?;
    let mut client = BufReader::new(client);
    let job: Arc<str> = job_name(&mut client, "JOB ").await?.into();
    let (mut client, mut up, early) = open_stream(client, upstream).await?;
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    buf.extend_from_slice(&early);
    loop {
        if !buf.is_empty() {
            // The client first, as the relay writes its own sockets before the bus.
            client.write_all(&buf).await?;
            let _ = chunks.send((job.clone(), buf.split().freeze()));
        }
        buf.reserve(READ_BYTES);
        if up.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    let _ = chunks.send((job, Bytes::new()));
    Ok(())
}

/// The client's first line, `<prefix><name>`: the job's name.
async fn job_name(client: &mut BufReader<TcpStream>, prefix: &str) -> Result<String> {
    let mut line = String::new();
    client.read_line(&mut line).await?;
    line.strip_prefix(prefix)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .ok_or_else(|| BenchError::Protocol(format!("expected {prefix:?}, got {line:?}")))
}

/// Write queued chunks to Redis, one pipeline at a time, each job's chunks of a batch as
/// one stream entry and one message, jobs in the order their chunks came.
async fn write_chunks(mut conn: MultiplexedConnection, mut queue: mpsc::UnboundedReceiver<Chunk>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut runs: Vec<(Arc<str>, Vec<u8>, bool)> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        for (job, chunk) in batch.drain(..) {
            let i = *index.entry(job.clone()).or_insert_with(|| {
                runs.push((job, Vec::new(), false));
                runs.len() - 1
            });
            if chunk.is_empty() {
                runs[i].2 = true;
            } else {
                runs[i].1.extend_from_slice(&chunk);
            }
        }
        let mut pipe = redis::pipe();
        for (job, data, ends) in runs {
            let (key, channel) = (stream_key(&job), live_channel(&job));
            if !data.is_empty() {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAX_ENTRIES)
                    .arg("*")
                    .arg("b")
                    .arg(&data)
                    .ignore();
                pipe.cmd("PUBLISH").arg(&channel).arg(&data).ignore();
            }
            if ends {
                pipe.cmd("PUBLISH").arg(&channel).arg("").ignore();
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(STREAM_EXPIRE_SECS)
                    .ignore();
            }
        }
        if pipe.query_async::<()>(&mut conn).await.is_err() {
            // The scenario sees the followers' missing events.
            return;
        }
    }
}

/// A client asking to follow a job.
struct Registration {
    job: String,
    /// Where the job's messages go; dropped at the job's end, which closes the client.
    to_client: mpsc::UnboundedSender<Bytes>,
    /// Answered once the subscription is in place.
    subscribed: oneshot::Sender<()>,
}

/// The follower forwarder: one subscription carries every followed job to its client.
pub(super) async fn follow(listener: TcpListener) -> Result<Value> {
    let (mut sink, mut messages) = redis_client()?.get_async_pubsub().await?.split();
    let (register, mut registrations) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let register = register.clone();
            tokio::spawn(async move {
                let _ = follow_job(client, register).await;
            });
        }
    });
    let mut followers: HashMap<String, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    loop {
        tokio::select! {
            Some(Registration { job, to_client, subscribed }) = registrations.recv() => {
                let channel = live_channel(&job);
                sink.subscribe(&channel).await?;
                followers.insert(channel, to_client);
                let _ = subscribed.send(());
            }
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(BenchError::Protocol("the subscription was lost".into()));
                };
                let payload = message.get_payload_bytes();
                let channel = message.get_channel_name();
                // An ended job's channel is never published on again: it stays subscribed
                // rather than cost a round trip here.
                if payload.is_empty() {
                    followers.remove(channel);
                } else if let Some(to_client) = followers.get(channel) {
                    let _ = to_client.send(Bytes::copy_from_slice(payload));
                }
            }
        }
    }
}

/// `FOLLOW <name>`: answered `OK` once subscribed, then the job's bytes until it ends.
async fn follow_job(
    client: TcpStream,
    register: mpsc::UnboundedSender<Registration>,
) -> Result<()> {
    client.set_nodelay(true)?;
    let mut client = BufReader::new(client);
    let job = job_name(&mut client, "FOLLOW ").await?;
    let (to_client, mut from_bus) = mpsc::unbounded_channel();
    let (subscribed, confirmed) = oneshot::channel();
    let closed = || BenchError::Protocol("the follower's subscription task is gone".into());
    register
        .send(Registration {
            job,
            to_client,
            subscribed,
        })
        .map_err(|_| closed())?;
    confirmed.await.map_err(|_| closed())?;
    let mut client = client.into_inner();
    client.write_all(b"OK\n").await?;
    while let Some(chunk) = from_bus.recv().await {
        client.write_all(&chunk).await?;
    }
    Ok(())
}

/// Run `jobs` streams, each with an owner and a follower, through the two forwarders and Redis.
pub(super) async fn scenario_floor_bus(
    label: &str,
    common: &Common,
    load: Load,
    deadline: TokioInstant,
) -> Result<Value> {
    let Load { jobs, events, gap } = load;
    let redis = RedisServer::start()?;
    let url = redis.url();
    let upstream = start_upstream(common.aligned).await?;
    let owner = Forwarder::spawn(
        upstream,
        common.timeout,
        &[(ROLE_ENV, OWNER), (REDIS_ENV, &url)],
    )?;
    let follower = Forwarder::spawn(
        upstream,
        common.timeout,
        &[(ROLE_ENV, FOLLOWER), (REDIS_ENV, &url)],
    )?;
    // Every follower is subscribed before any job starts.
    let mut pairs = Vec::with_capacity(jobs);
    for job in 0..jobs {
        let mut follows = TcpStream::connect(follower.addr()).await?;
        follows.set_nodelay(true)?;
        follows
            .write_all(format!("FOLLOW {job}\n").as_bytes())
            .await?;
        let mut ok = [0u8; 3];
        follows.read_exact(&mut ok).await?;
        if &ok != b"OK\n" {
            return Err(BenchError::Protocol(format!("follower answered {ok:?}")));
        }
        let owns = TcpStream::connect(owner.addr()).await?;
        owns.set_nodelay(true)?;
        pairs.push((job, owns, follows));
    }
    // As `cluster-*` counts them: each process, and this one (upstream and clients).
    let cpu = || -> Result<[f64; 4]> {
        Ok([
            owner.stats()?.cpu_secs,
            proc_stats(redis.pid())?.cpu_secs,
            follower.stats()?.cpu_secs,
            proc_stats(std::process::id())?.cpu_secs,
        ])
    };
    let before = cpu()?;
    let machine_start = MachineCpu::read();
    let started = Instant::now();
    let (mut owners, mut followers) = (JoinSet::new(), JoinSet::new());
    for (job, owns, follows) in pairs {
        let request = format!("JOB {job}\n{}", stream_request(events, gap));
        let events = u64::from(events);
        owners.spawn(tokio::time::timeout_at(
            deadline,
            read_job(owns, request, events),
        ));
        followers.spawn(tokio::time::timeout_at(
            deadline,
            read_job(follows, String::new(), events),
        ));
    }
    let (owners, followers) = tokio::join!(Seen::gather(owners), Seen::gather(followers));
    let wall = started.elapsed().as_secs_f64();
    let machine_end = MachineCpu::read();
    let steal_share = machine_start.steal_share_until(machine_end);
    let machine_busy = machine_end.busy_secs() - machine_start.busy_secs();
    let after = cpu()?;
    let [owner_cpu, redis_cpu, follower_cpu, loadgen_cpu] =
        [0, 1, 2, 3].map(|i| after[i] - before[i]);
    let received = followers.samples.len();
    let (latency, steady, steady_secs) = Latency::split(&followers.samples, &followers.windows);
    let (_, owner_steady, _) = Latency::split(&owners.samples, &owners.windows);
    let per_event = |secs: f64| secs * 1e6 / received.max(1) as f64;
    println!(
        "== {label}: {jobs} jobs x {events} events, owner and follower each, through a forwarder, Redis and a forwarder, gap {:.1} ms ==",
        gap.as_secs_f64() * 1e3
    );
    println!("integrity    followers: {}", followers.integrity());
    println!("integrity    owners:    {}", owners.integrity());
    println!(
        "throughput   wall {wall:.3} s  {:.0} events/s to followers; {:.0} while all {jobs} jobs stream",
        received as f64 / wall.max(1e-9),
        steady.samples as f64 / steady_secs.max(1e-9)
    );
    println!(
        "latency      {}  (follower, every event)",
        latency.describe()
    );
    println!(
        "latency      {}  (follower, the {steady_secs:.2} s while all {jobs} jobs stream)",
        steady.describe()
    );
    println!(
        "latency      {}  (owner, while all jobs stream)",
        owner_steady.describe()
    );
    println!(
        "cpu          owner forwarder {owner_cpu:.2} s ({:.2} µs/event)  redis {redis_cpu:.2} s ({:.2})  follower forwarder {follower_cpu:.2} s ({:.2})",
        per_event(owner_cpu),
        per_event(redis_cpu),
        per_event(follower_cpu)
    );
    println!("cpu          loadgen {loadgen_cpu:.2} s  machine busy {machine_busy:.2} s (in the job phase)");
    println!(
        "machine      {:.1}% of CPU time stolen by the hypervisor during jobs",
        steal_share * 100.0
    );
    Ok(json!({
        "scenario": label,
        "params": {"jobs": jobs, "events": events, "gap_ms": gap.as_secs_f64() * 1e3, "aligned": common.aligned, "event_bytes": super::floor::EVENT_BYTES},
        "integrity": {
            "followers": {"received": received, "lost": followers.lost, "reordered": followers.reordered, "failed_jobs": followers.failed},
            "owners": {"received": owners.samples.len(), "lost": owners.lost, "reordered": owners.reordered, "failed_jobs": owners.failed},
        },
        "wall_secs": wall,
        "follower_latency": latency,
        "follower_latency_all_jobs_streaming": steady,
        "owner_latency_all_jobs_streaming": owner_steady,
        "cpu_secs_job_phase": {"owner_forwarder": owner_cpu, "redis": redis_cpu, "follower_forwarder": follower_cpu, "loadgen": loadgen_cpu, "machine_busy": machine_busy},
        "machine_steal_share_job_phase": steal_share,
    }))
}
