//! The style gate before a job (docs/protocol.md §4.2 steps 3, 4 and 6) and the picker offered
//! again on `selectProject` (§2.5 step 6).

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::files::ProjectFiles;
use super::style::{self, Dimension, PendingFile, PendingStyle, StyleCatalog};
use crate::backend::BackendKind;
use crate::metrics::METRICS;
use crate::wire::protocol::{GenerationRequest, ServerMessage};

/// What the style gate decided for one `message`.
#[derive(Debug)]
pub enum Gate {
    /// Answer the socket (`styleOptions` or the `info` reminder); no job, no quota.
    Reply(ServerMessage),
    /// Start the job with `message` (the request plus a picked style's guide); `style_file`
    /// is the `STYLE.md` the job writes first.
    Proceed {
        message: String,
        style_file: Option<String>,
    },
}

/// The presets, the project files and how long a picker stays open.
pub struct StyleGate {
    /// Reads and writes project files.
    pub files: Arc<ProjectFiles>,
    /// The style presets.
    pub styles: StyleCatalog,
    /// How long a style question waits for an answer.
    pub pending_ttl: Duration,
}

impl StyleGate {
    /// Whether the project's style is decided (`STYLE.md` has content). When the file cannot
    /// be read, the gate steps aside rather than block the request.
    async fn style_decided(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
    ) -> bool {
        match self
            .files
            .read(backend, user_id, project_id, style::STYLE_FILE)
            .await
        {
            Ok(content) => content.is_some_and(|c| !c.trim().is_empty()),
            Err(e) => {
                tracing::warn!(%project_id, error = %e, "cannot read STYLE.md; no style picker");
                METRICS.pipeline_fallbacks.inc(&["style"]);
                true
            }
        }
    }

    /// Steps 3, 4 and 6 of docs/protocol.md §4.2. `flag` is the socket's open question;
    /// the second value is what the socket keeps afterwards.
    pub async fn decide(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        request: &GenerationRequest,
        flag: Option<PendingStyle>,
    ) -> (Gate, Option<PendingStyle>) {
        let content = request.content.clone().unwrap_or_default();
        let ttl = self.pending_ttl;
        let open = flag
            .as_ref()
            .is_some_and(|f| f.is_open_for(project_id, ttl));
        let selected = request.selected_style();
        if selected.is_none() && !request.skip_style_selection() {
            if open {
                let reminder = ServerMessage::Info {
                    message: style::CHOOSE_REMINDER.to_string(),
                };
                return (Gate::Reply(reminder), flag);
            }
            if let Some(dimension) = style::requested_dimension(&content) {
                if !self.style_decided(backend, user_id, project_id).await {
                    let pending = PendingFile {
                        dimension: dimension.as_str().to_string(),
                        original_message: content.clone(),
                    };
                    if let Ok(json) = serde_json::to_string(&pending) {
                        self.files.write_detached(
                            backend,
                            user_id,
                            project_id,
                            style::PENDING_FILE,
                            json,
                        );
                    }
                    let reply = self.style_options(dimension, content.clone());
                    let flag = PendingStyle::new(project_id);
                    return (Gate::Reply(reply), Some(flag));
                }
            }
            let proceed = Gate::Proceed {
                message: content,
                style_file: None,
            };
            return (proceed, flag);
        }
        // A pick or a skip closes the question, valid or not (upstream only logs which).
        self.files.write_detached(
            backend,
            user_id,
            project_id,
            style::PENDING_FILE,
            String::new(),
        );
        let Some(selected) = selected else {
            if open {
                self.files.write_detached(
                    backend,
                    user_id,
                    project_id,
                    style::STYLE_FILE,
                    style::SKIPPED_MARKER.to_string(),
                );
            }
            let proceed = Gate::Proceed {
                message: content,
                style_file: None,
            };
            return (proceed, None);
        };
        let dimension = Dimension::from_wire(&selected.dimension);
        let gate = match self.styles.find(dimension, &selected.style_id) {
            Some(preset) => Gate::Proceed {
                message: format!("{content}\n\n{}", preset.guide.trim()),
                style_file: Some(style::style_file(preset, dimension)),
            },
            None => Gate::Proceed {
                message: content,
                style_file: None,
            },
        };
        (gate, None)
    }

    fn style_options(&self, dimension: Dimension, original_message: String) -> ServerMessage {
        ServerMessage::StyleOptions {
            dimension: dimension.as_str().to_string(),
            styles: self.styles.cards(dimension),
            original_message,
        }
    }

    /// On `selectProject` (docs/protocol.md §2.5 step 6): the picker again, and the socket's
    /// new open question, when the project still waits for a style. Errors mean no picker.
    pub async fn reoffer(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
    ) -> Option<(ServerMessage, PendingStyle)> {
        if self.style_decided(backend, user_id, project_id).await {
            return None;
        }
        let raw = self
            .files
            .read(backend, user_id, project_id, style::PENDING_FILE)
            .await
            .ok()
            .flatten()?;
        if raw.trim().is_empty() {
            return None;
        }
        let pending: PendingFile = match serde_json::from_str(&raw) {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(%project_id, error = %e, "unreadable .style-pending.json");
                return None;
            }
        };
        let dimension = Dimension::from_wire(&pending.dimension);
        let reply = self.style_options(dimension, pending.original_message.clone());
        Some((reply, PendingStyle::new(project_id)))
    }
}
