//! The pipeline as the rest of the relay sees it: one value shared by every socket and job.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::ask::{AskSettings, Asker};
use super::files::ProjectFiles;
use super::gate::{Gate, StyleGate};
use super::prepare::Preparation;
use super::prewarm::Prewarmer;
use super::style::{PendingStyle, StyleCatalog};
use super::templates::Prompts;
use crate::auth::Identity;
use crate::backend::local_cli::LocalCliBackend;
use crate::backend::modal::pipeline::ModalPipeline;
use crate::backend::BackendKind;
use crate::jobs::plan::Prepare;
use crate::store::Store;
use crate::wire::protocol::{GenerationRequest, ServerMessage};

/// What the pipeline is built from.
pub struct PipelineParts {
    /// Timeouts and other settings.
    pub ask: AskSettings,
    /// The prompt texts.
    pub prompts: Prompts,
    /// The style presets.
    pub styles: StyleCatalog,
    /// Where chat history is kept.
    pub store: Arc<dyn Store>,
    /// The Modal pipeline, if configured.
    pub modal: Option<Arc<ModalPipeline>>,
    /// The local CLI, if configured.
    pub local: Option<LocalCliBackend>,
    /// Largest project file read (STYLE.md, SPEC.md, index.html).
    pub max_file_bytes: usize,
    /// How long an open style picker is remembered per socket.
    pub pending_style_ttl: Duration,
    /// A user is prewarmed at most once in this window.
    pub prewarm_dedup: Duration,
}

/// The pipeline, shared by every socket and job.
pub struct Pipeline {
    gate: StyleGate,
    asker: Arc<Asker>,
    files: Arc<ProjectFiles>,
    prewarmer: Option<Arc<Prewarmer>>,
}

impl Pipeline {
    /// Builds the pipeline from its parts.
    pub fn new(parts: PipelineParts) -> Arc<Self> {
        let files = Arc::new(ProjectFiles {
            modal: parts.modal.clone(),
            local: parts.local.clone(),
            max_bytes: parts.max_file_bytes,
        });
        let prewarmer = parts
            .modal
            .as_ref()
            .map(|m| Prewarmer::new(Arc::clone(m), parts.prewarm_dedup));
        let asker = Arc::new(Asker {
            settings: parts.ask,
            prompts: parts.prompts,
            store: parts.store,
            files: Arc::clone(&files),
            modal: parts.modal,
            local: parts.local,
        });
        Arc::new(Self {
            gate: StyleGate {
                files: Arc::clone(&files),
                styles: parts.styles,
                pending_ttl: parts.pending_style_ttl,
            },
            asker,
            files,
            prewarmer,
        })
    }

    /// After a successful `init` on Modal: warm the user's sandbox in the background.
    pub fn prewarm(&self, user_id: Uuid) {
        if let Some(prewarmer) = &self.prewarmer {
            prewarmer.trigger(user_id);
        }
    }

    /// The style gate for one `message`; the second value is the socket's open picker after it.
    pub async fn style_gate(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        request: &GenerationRequest,
        flag: Option<PendingStyle>,
    ) -> (Gate, Option<PendingStyle>) {
        self.gate
            .decide(backend, user_id, project_id, request, flag)
            .await
    }

    /// The picker again on `selectProject`, when the project still waits for a style.
    pub async fn reoffer_style(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
    ) -> Option<(ServerMessage, PendingStyle)> {
        self.gate.reoffer(backend, user_id, project_id).await
    }

    /// The preparation of one job (intent, chat, skills), handed to `Jobs::start`.
    pub fn preparation(
        &self,
        who: Identity,
        project_id: Uuid,
        message: String,
        disable_skills: bool,
        style_file: Option<String>,
    ) -> Box<dyn Prepare> {
        Box::new(Preparation {
            asker: Arc::clone(&self.asker),
            files: Arc::clone(&self.files),
            who,
            project_id,
            message,
            disable_skills,
            style_file,
        })
    }
}
