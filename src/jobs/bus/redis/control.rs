//! Requests to the instance running a job (a cancel, a sweep of its lease): the control
//! channel's messages, and its subscription, renewed whenever Redis drops it. Every instance
//! gets every message; only the one running the job acts on it.

use futures::StreamExt;
use redis::RedisResult;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::shared::{Part, Shared, CONTROL_CHANNEL, RETRY};
use crate::jobs::bus::ControlRequest;

const CANCEL: &str = "cancel:";
const LEASE_SWEPT: &str = "swept:";

/// The control channel's message for `request`.
pub(super) fn encode(request: ControlRequest) -> String {
    match request {
        ControlRequest::Cancel(job_id) => format!("{CANCEL}{job_id}"),
        ControlRequest::LeaseSwept(job_id) => format!("{LEASE_SWEPT}{job_id}"),
    }
}

/// The request a control message carries; `None` for one this build does not know (a newer
/// instance's, during a rolling deploy).
fn decode(payload: &str) -> Option<ControlRequest> {
    let job_id = |rest: &str| Uuid::parse_str(rest).ok();
    if let Some(rest) = payload.strip_prefix(CANCEL) {
        job_id(rest).map(ControlRequest::Cancel)
    } else if let Some(rest) = payload.strip_prefix(LEASE_SWEPT) {
        job_id(rest).map(ControlRequest::LeaseSwept)
    } else {
        None
    }
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
                    let Some(request) = decode(&payload) else {
                        continue;
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
            assert_eq!(decode(&encode(request)), Some(request));
        }
        assert_eq!(
            encode(ControlRequest::Cancel(job_id)),
            format!("cancel:{job_id}"),
            "what older instances send and read"
        );
        assert_eq!(decode(&format!("pause:{job_id}")), None);
        assert_eq!(decode("cancel:not-a-uuid"), None);
    }
}
