//! The single embedded instance: no other instance exists, so a job's in-process channel is
//! the whole bus — nothing to forward, mirror or ask, and the process's own locks and
//! buckets decide every limit.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{BusHealth, ControlRequest, EventKind, JobBus};
use crate::jobs::channel::{EventForward, JobChannel};
use crate::store::models::JobRow;
use crate::wire::protocol::ServerMessage;

/// The bus of a relay without `REDIS_URL`.
#[derive(Debug, Default)]
pub struct MemoryBus;

impl EventForward for MemoryBus {
    fn forward(&self, _job_id: Uuid, _first_seq: u64, _events: &[(Utf8Bytes, EventKind)]) {}
}

#[async_trait]
impl JobBus for MemoryBus {
    fn follow(&self, _row: &JobRow) -> Option<Arc<JobChannel>> {
        None
    }

    async fn end_orphan(&self, _row: &JobRow, _message: &ServerMessage) {}

    /// One instance: a job of its own that ended unwritten is in its kept ends, not here.
    async fn published_ends(&self, _job_ids: &[Uuid]) -> HashMap<Uuid, Utf8Bytes> {
        HashMap::new()
    }

    async fn request_cancel(&self, _job_id: Uuid) -> bool {
        false
    }

    fn take_control_requests(&self) -> Option<mpsc::UnboundedReceiver<ControlRequest>> {
        None
    }

    async fn take_generation(&self, _user_id: Uuid, _per_minute: u32) -> Option<bool> {
        None
    }

    async fn probe(&self) {}

    fn is_clustered(&self) -> bool {
        false
    }

    fn health(&self) -> BusHealth {
        BusHealth {
            mode: "embedded",
            degraded: None,
        }
    }
}
