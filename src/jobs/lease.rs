//! The instance's upkeep of job ownership: every `JOB_LEASE_RENEW_SECS` it checks the bus,
//! renews the leases of the jobs it runs and fails the jobs whose lease expired (their
//! instance died); between ticks it acts on cancel requests other instances send over the bus.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;
use uuid::Uuid;

use super::registry::Jobs;

/// Run the upkeep until `jobs` is dropped.
pub fn spawn(jobs: &Arc<Jobs>) {
    let requests = jobs.bus().take_cancel_requests();
    let every = jobs.lease_renew();
    let span = tracing::info_span!("leases", instance = %jobs.instance());
    tokio::spawn(upkeep(Arc::downgrade(jobs), every, requests).instrument(span));
}

async fn upkeep(
    jobs: Weak<Jobs>,
    every: std::time::Duration,
    mut requests: Option<mpsc::UnboundedReceiver<Uuid>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(jobs) = jobs.upgrade() else { return };
                jobs.renew_leases().await;
                if let Err(e) = jobs.sweep_expired().await {
                    tracing::warn!(error = %e, "could not sweep expired job leases");
                }
                jobs.bus().probe().await;
            }
            job_id = next_request(&mut requests) => {
                let Some(jobs) = jobs.upgrade() else { return };
                jobs.cancel_requested(job_id);
            }
        }
    }
}

/// The next cancel request; never resolves on a bus that has none (or no longer has).
async fn next_request(requests: &mut Option<mpsc::UnboundedReceiver<Uuid>>) -> Uuid {
    if let Some(rx) = requests {
        if let Some(job_id) = rx.recv().await {
            return job_id;
        }
        *requests = None;
    }
    std::future::pending().await
}
