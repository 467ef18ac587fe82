//! The tasks that run beside the listener for as long as the relay serves its sockets.

use std::time::Duration;

use crate::backend::selector::probe_modal;
use crate::state::AppState;

/// In `USE_MODAL=auto`, probe Modal while it is considered down.
pub(super) fn spawn_modal_prober(app: &AppState, http: reqwest::Client) {
    if app.config.modal.endpoint.is_empty() {
        return;
    }
    let app = app.clone();
    let url = app.config.modal.endpoint_for("list_files");
    let every = Duration::from_secs(app.config.backend.auto_probe_interval_secs.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = app.close_sockets.cancelled() => break,
                _ = tick.tick() => {
                    if app.selector.needs_probe() && probe_modal(&http, &url, app.config.modal.secret.expose()).await {
                        app.selector.record_modal_healthy();
                    }
                }
            }
        }
    });
}

/// The sockets' shared clock (authentication deadlines, token expiries, pings), until the
/// drain closes the sockets.
pub(super) fn spawn_socket_clock(app: &AppState) {
    let app = app.clone();
    let ping_every = Duration::from_secs(app.config.limits.ws_ping_interval_secs.max(1));
    tokio::spawn(async move {
        let stop = app.close_sockets.clone();
        app.sockets.run_clock(ping_every, stop).await;
    });
}
