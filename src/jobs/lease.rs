//! The instance's upkeep of job ownership: every `JOB_LEASE_RENEW_SECS` it checks the bus,
//! renews the leases of the jobs it runs and fails the jobs whose lease expired (their
//! instance died) — unless the store was just unreachable, which stops every owner's
//! renewals ([`SweepGate`]); between ticks it acts on what other instances ask over the bus:
//! cancel a job, or end one whose lease they swept.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::bus::ControlRequest;
use super::registry::Jobs;
use crate::store::models::JobStatus;
use crate::store::Store;

/// Run the upkeep until `jobs` is dropped. `lease_ttl` is how long a lease outlives its
/// last renewal; `store` is asked each tick whether it answers.
pub fn spawn(jobs: &Arc<Jobs>, store: Arc<dyn Store>, lease_ttl: Duration) {
    let requests = jobs.bus().take_control_requests();
    let every = jobs.lease_renew();
    let span = tracing::info_span!("leases", instance = %jobs.instance());
    let upkeep = Upkeep {
        jobs: Arc::downgrade(jobs),
        store,
        every,
        gate: SweepGate::new(lease_ttl, jobs.bus().is_clustered(), Instant::now()),
    };
    tokio::spawn(upkeep.run(requests).instrument(span));
}

/// What the upkeep task holds between ticks.
struct Upkeep {
    jobs: Weak<Jobs>,
    store: Arc<dyn Store>,
    every: Duration,
    gate: SweepGate,
}

impl Upkeep {
    async fn run(mut self, mut requests: Option<mpsc::UnboundedReceiver<ControlRequest>>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let Some(jobs) = self.jobs.upgrade() else { return };
                    self.tick(&jobs).await;
                }
                request = next_request(&mut requests) => {
                    let Some(jobs) = self.jobs.upgrade() else { return };
                    act_on(&jobs, request);
                }
            }
        }
    }

    async fn tick(&mut self, jobs: &Jobs) {
        // A store that hangs counts as not answering; the next tick asks again.
        let answered = matches!(
            tokio::time::timeout(self.every, self.store.ping()).await,
            Ok(Ok(()))
        );
        let was_down = self.gate.seen == StoreSeen::Down;
        self.gate.observe(answered, Instant::now());
        match (was_down, &self.gate.seen) {
            (false, StoreSeen::Down) => {
                tracing::warn!("store not answering; expired job leases are not swept meanwhile")
            }
            (true, StoreSeen::BackSince(_)) => tracing::info!(
                ttl_secs = self.gate.ttl.as_secs(),
                "store answers again; expired job leases are left to their owners for one lease TTL"
            ),
            _ => {}
        }
        jobs.renew_leases().await;
        // Held back, this instance's own kept ends still go in by their own retries.
        if self.gate.may_sweep(Instant::now()) {
            if let Err(e) = jobs.sweep_expired().await {
                tracing::warn!(error = %e, "could not sweep expired job leases");
            }
        }
        jobs.bus().probe().await;
    }
}

/// Whether this instance may fail other instances' expired leases now. A database outage
/// stops every owner's renewals at once, so right after one an expired lease says nothing
/// about its owner: the sweep waits until the store has answered for a whole lease TTL,
/// time for live owners to renew their leases and write the ends they kept meanwhile.
struct SweepGate {
    ttl: Duration,
    seen: StoreSeen,
}

/// The store as this instance's upkeep last found it.
#[derive(Debug, PartialEq)]
enum StoreSeen {
    /// Answering, and not just back from an outage.
    Steady,
    /// Not answering.
    Down,
    /// Answering again since this instant, after an outage.
    BackSince(Instant),
}

impl SweepGate {
    /// A replica of a cluster starts (at `now`) as if just back from an outage: it cannot
    /// know whether one just ended, and the others sweep meanwhile anyway.
    fn new(ttl: Duration, clustered: bool, now: Instant) -> Self {
        let seen = if clustered {
            StoreSeen::BackSince(now)
        } else {
            StoreSeen::Steady
        };
        Self { ttl, seen }
    }

    /// Record whether the store `answered` at `now`.
    fn observe(&mut self, answered: bool, now: Instant) {
        self.seen = match (answered, &self.seen) {
            (false, _) => StoreSeen::Down,
            (true, StoreSeen::Down) => StoreSeen::BackSince(now),
            (true, StoreSeen::BackSince(since)) if now.duration_since(*since) < self.ttl => {
                StoreSeen::BackSince(*since)
            }
            (true, _) => StoreSeen::Steady,
        };
    }

    /// Whether expired leases may be failed at `now`.
    fn may_sweep(&self, now: Instant) -> bool {
        match self.seen {
            StoreSeen::Steady => true,
            StoreSeen::Down => false,
            StoreSeen::BackSince(since) => now.duration_since(since) >= self.ttl,
        }
    }
}

/// Act on another instance's request if the job runs here (every instance hears it).
fn act_on(jobs: &Jobs, request: ControlRequest) {
    match request {
        ControlRequest::Cancel(job_id) => {
            if let Some(job) = jobs.live(job_id) {
                tracing::info!(%job_id, "cancel requested by another instance");
                job.request_cancel();
            }
        }
        // Cut off from the database, this instance could renew no lease, while another found
        // this one expired and failed the row: end the job now, as the row and the other
        // instances' watchers say, rather than when the database answers here again.
        // The runner ends a job whose row says `failed` with the sweep's own failure.
        ControlRequest::LeaseSwept(job_id) => {
            let Some(job) = jobs.live(job_id) else { return };
            let Some(mut row) = job.row() else { return };
            tracing::warn!(%job_id, "another instance failed this job's expired lease; stopped");
            row.status = JobStatus::Failed;
            job.end_as(row);
        }
    }
}

/// The next request of another instance; never resolves on a bus that has none (or no
/// longer has).
async fn next_request(
    requests: &mut Option<mpsc::UnboundedReceiver<ControlRequest>>,
) -> ControlRequest {
    if let Some(rx) = requests {
        if let Some(request) = rx.recv().await {
            return request;
        }
        *requests = None;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sweep_until_the_store_has_answered_for_a_whole_lease_ttl_after_an_outage() {
        let ttl = Duration::from_secs(15);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let gate = SweepGate::new(ttl, true, at(0));
        assert!(!gate.may_sweep(at(0)), "a replica just started waits");
        assert!(gate.may_sweep(at(15)));
        let mut gate = SweepGate::new(ttl, false, at(0));
        gate.observe(true, at(0));
        assert!(gate.may_sweep(at(0)), "a steady store sweeps");

        gate.observe(false, at(5));
        assert!(!gate.may_sweep(at(5)), "nothing is swept while it is down");
        gate.observe(true, at(40));
        assert!(!gate.may_sweep(at(40)), "back: owners renew first");
        gate.observe(true, at(45));
        assert!(!gate.may_sweep(at(54)));
        assert!(gate.may_sweep(at(55)), "a TTL after it came back");
        gate.observe(true, at(55));
        assert_eq!(gate.seen, StoreSeen::Steady);

        gate.observe(false, at(60));
        gate.observe(true, at(61));
        gate.observe(false, at(70));
        gate.observe(true, at(72));
        assert!(
            !gate.may_sweep(at(80)),
            "a second outage starts the wait again"
        );
        assert!(gate.may_sweep(at(87)));
    }
}
