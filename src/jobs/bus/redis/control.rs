//! Cancel requests from other instances: the control channel's subscription, renewed
//! whenever Redis drops it.

use futures::StreamExt;
use redis::RedisResult;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::shared::{Part, Shared, CONTROL_CHANNEL, RETRY};

/// Forward cancel requests from the control channel, resubscribing whenever Redis drops.
pub(super) async fn listen_for_control(
    shared: std::sync::Weak<Shared>,
    requests: mpsc::UnboundedSender<Uuid>,
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
                    let Some(job_id) = payload
                        .strip_prefix("cancel:")
                        .and_then(|id| Uuid::parse_str(id).ok())
                    else {
                        continue;
                    };
                    if requests.send(job_id).is_err() {
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
