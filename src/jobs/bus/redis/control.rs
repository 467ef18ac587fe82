//! Requests to the instance running a job (a cancel, a sweep of its lease, and the bus's own
//! notice that another instance started following it): the control channel's messages, and
//! its subscription, renewed whenever Redis drops it. Every instance gets every message; only
//! the one running the job acts on it.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use redis::RedisResult;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::shared::{Part, Shared, CONTROL_CHANNEL, RETRY};
use crate::jobs::bus::ControlRequest;

const CANCEL: &str = "cancel:";
const LEASE_SWEPT: &str = "swept:";
const FOLLOWING: &str = "following:";

/// A control-channel message.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// For the job engine.
    Request(ControlRequest),
    /// An instance subscribed to the job's live channel: the owner stops holding its events
    /// ([`super::outbox`]), so the follower's first live events need not wait out the hold.
    Following(Uuid),
}

/// The control channel's message for `request`.
pub(super) fn encode(request: ControlRequest) -> String {
    match request {
        ControlRequest::Cancel(job_id) => format!("{CANCEL}{job_id}"),
        ControlRequest::LeaseSwept(job_id) => format!("{LEASE_SWEPT}{job_id}"),
    }
}

/// The control channel's message that this instance now follows `job_id`.
pub(super) fn following(job_id: Uuid) -> String {
    format!("{FOLLOWING}{job_id}")
}

/// What a control message carries; `None` for one this build does not know (a newer
/// instance's, during a rolling deploy).
fn decode(payload: &str) -> Option<Control> {
    let job_id = |rest: &str| Uuid::parse_str(rest).ok();
    if let Some(rest) = payload.strip_prefix(CANCEL) {
        job_id(rest).map(|id| Control::Request(ControlRequest::Cancel(id)))
    } else if let Some(rest) = payload.strip_prefix(LEASE_SWEPT) {
        job_id(rest).map(|id| Control::Request(ControlRequest::LeaseSwept(id)))
    } else if let Some(rest) = payload.strip_prefix(FOLLOWING) {
        job_id(rest).map(Control::Following)
    } else {
        None
    }
}

/// Another instance follows `job_id`: if it runs here, what it holds is written now.
fn followed_elsewhere(shared: &Shared, job_id: Uuid) {
    let dropped = shared.outbox.lock().followed_elsewhere(job_id);
    shared.queued_bytes.fetch_sub(dropped, Ordering::AcqRel);
}

/// Forward the control channel's requests, resubscribing whenever Redis drops.
pub(super) async fn listen_for_control(
    shared: std::sync::Weak<Shared>,
    requests: mpsc::UnboundedSender<ControlRequest>,
) {
    loop {
        let Some(client) = shared.upgrade().map(|s| s.client.clone()) else {
            return;
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CONTROL_CHANNEL).await?;
            RedisResult::Ok(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                if let Some(s) = shared.upgrade() {
                    s.health.clear(Part::Control);
                }
                let mut messages = pubsub.on_message();
                loop {
                    // The jobs that take the requests are gone: so is the need to listen.
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = requests.closed() => return,
                    };
                    let Some(message) = message else {
                        break;
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let request = match decode(&payload) {
                        Some(Control::Request(request)) => request,
                        Some(Control::Following(job_id)) => {
                            if let Some(s) = shared.upgrade() {
                                followed_elsewhere(&s, job_id);
                            }
                            continue;
                        }
                        None => continue,
                    };
                    if requests.send(request).is_err() {
                        return;
                    }
                }
                if let Some(s) = shared.upgrade() {
                    s.health.set(Part::Control, "the subscription was lost");
                }
            }
            Err(e) => {
                if let Some(s) = shared.upgrade() {
                    s.health.set(Part::Control, e);
                }
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_survive_the_channel_and_unknown_ones_are_ignored() {
        let job_id = Uuid::new_v4();
        for request in [
            ControlRequest::Cancel(job_id),
            ControlRequest::LeaseSwept(job_id),
        ] {
            assert_eq!(decode(&encode(request)), Some(Control::Request(request)));
        }
        assert_eq!(decode(&following(job_id)), Some(Control::Following(job_id)));
        assert_eq!(
            encode(ControlRequest::Cancel(job_id)),
            format!("cancel:{job_id}"),
            "what older instances send and read"
        );
        assert_eq!(decode(&format!("pause:{job_id}")), None);
        assert_eq!(decode("cancel:not-a-uuid"), None);
    }
}
