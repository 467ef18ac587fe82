//! The pre-job pipeline (docs/protocol.md §4.2–§4.3, docs/decisions.md decision 1), between
//! the socket handlers and the jobs: the style gate before a job starts, then inside the job
//! the intent (restore → the restore confirmation, chat → a chat answer, edit → generation)
//! and the skills of the generation prompt; and the sandbox prewarm after `init`.
//!
//! Every step asks the backend the job runs on: Modal's endpoints when it is Modal, the small
//! local model through the Claude CLI otherwise. Every failure has a fallback (intent → edit,
//! chat → generation, skills → upstream's keyword rules, files → the gate steps aside), so
//! nothing here can fail or stall a job.

mod chat;
mod intent;
mod prewarm;
pub mod skills;
pub mod style;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::auth::Identity;
use crate::backend::local_cli::{AskError, LocalCliBackend, Question};
use crate::backend::modal::pipeline::{ChatTurn, ModalCallError, ModalPipeline};
use crate::backend::BackendKind;
use crate::jobs::plan::{Plan, Prepare, Progress};
use crate::metrics::METRICS;
use crate::store::Store;
use crate::wire::protocol::{GenerationRequest, JobResult, ServerMessage};
use chat::ChatAnswer;
pub use intent::Intent;
use prewarm::Prewarmer;
use style::{Dimension, PendingFile, PendingStyle, StyleCatalog};
pub use templates::{fill, Prompts, PromptsError};

/// Exact progress texts and fixed replies (docs/protocol.md §4.3).
mod texts {
    pub const DETECTING_INTENT: &str = "意図を判定中...";
    pub const RESTORE_CONFIRM: &str = "リストア確認";
    pub const RESTORE_QUESTION: &str = "直前の変更を取り消して、前の状態に戻しますか？";
    pub const RESTORE_CONFIRM_LABEL: &str = "戻す";
    pub const RESTORE_CANCEL_LABEL: &str = "キャンセル";
    pub const ANSWERING: &str = "Claude Haikuで回答中...";
    pub const ANSWERED: &str = "回答完了";
}

/// How much of the game's code goes to Modal's `detect_skills` (it only checks for presence).
const EXISTING_CODE_CHARS: usize = 2000;
/// Output kept from the small model: a word, a list, or a short answer.
const MAX_CLI_OUTPUT_BYTES: usize = 64 * 1024;

/// Operator settings of the pipeline (`PIPELINE_*`, `PREWARM_*`, `STYLE_PENDING_TTL_SECS`).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Model of the local CLI's short questions (`claude -p --model <this>`).
    pub small_model: String,
    pub intent_timeout: Duration,
    pub chat_timeout: Duration,
    pub skills_timeout: Duration,
    /// How long an open style question is remembered per socket.
    pub pending_style_ttl: Duration,
    /// Largest project file read (STYLE.md, SPEC.md, index.html).
    pub max_file_bytes: usize,
    /// Longest chat answer kept (characters).
    pub max_answer_chars: usize,
}

/// A project file could not be read or written; the caller steps aside.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Modal(#[from] ModalCallError),
    #[error("workspace file: {0}")]
    Local(#[from] std::io::Error),
    #[error("no {0} backend is configured")]
    NotConfigured(&'static str),
}

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

/// The pipeline, shared by every socket and job.
pub struct Pipeline {
    settings: PipelineSettings,
    prompts: Prompts,
    styles: StyleCatalog,
    store: Arc<dyn Store>,
    modal: Option<Arc<ModalPipeline>>,
    local: Option<LocalCliBackend>,
    prewarmer: Option<Arc<Prewarmer>>,
}

impl Pipeline {
    pub fn new(
        settings: PipelineSettings,
        prompts: Prompts,
        styles: StyleCatalog,
        store: Arc<dyn Store>,
        modal: Option<Arc<ModalPipeline>>,
        local: Option<LocalCliBackend>,
        prewarm_dedup: Duration,
    ) -> Arc<Self> {
        let prewarmer = modal
            .as_ref()
            .map(|m| Prewarmer::new(Arc::clone(m), prewarm_dedup));
        Arc::new(Self {
            settings,
            prompts,
            styles,
            store,
            modal,
            local,
            prewarmer,
        })
    }

    /// After a successful `init` on Modal: warm the user's sandbox in the background.
    pub fn prewarm(&self, user_id: Uuid) {
        if let Some(prewarmer) = &self.prewarmer {
            prewarmer.trigger(user_id);
        }
    }

    // --- project files ---------------------------------------------------------------------

    async fn read_file(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
    ) -> Result<Option<String>, FileError> {
        match backend {
            Some(BackendKind::Modal) => {
                let modal = self
                    .modal
                    .as_ref()
                    .ok_or(FileError::NotConfigured("Modal"))?;
                Ok(modal.get_file(user_id, project_id, name).await?)
            }
            Some(BackendKind::Local) => {
                let local = self
                    .local
                    .as_ref()
                    .ok_or(FileError::NotConfigured("local"))?;
                Ok(local
                    .read_project_file(user_id, project_id, name, self.settings.max_file_bytes)
                    .await?)
            }
            None => Err(FileError::NotConfigured("job")),
        }
    }

    async fn write_file(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
        content: String,
    ) -> Result<(), FileError> {
        match backend {
            Some(BackendKind::Modal) => {
                let modal = self
                    .modal
                    .as_ref()
                    .ok_or(FileError::NotConfigured("Modal"))?;
                let commit = format!("Update {name}");
                Ok(modal
                    .put_files(user_id, project_id, &[(name, &content)], &commit)
                    .await?)
            }
            Some(BackendKind::Local) => {
                let local = self
                    .local
                    .as_ref()
                    .ok_or(FileError::NotConfigured("local"))?;
                Ok(local
                    .write_project_file(user_id, project_id, name, content)
                    .await?)
            }
            None => Err(FileError::NotConfigured("job")),
        }
    }

    /// Write without waiting (the gate's bookkeeping files); failures are logged.
    fn write_file_detached(
        self: &Arc<Self>,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
        content: String,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this
                .write_file(backend, user_id, project_id, name, content)
                .await
            {
                tracing::warn!(%user_id, %project_id, file = name, error = %e, "could not write the style file");
            }
        });
    }

    /// Whether the project's style is decided (`STYLE.md` has content). When the file cannot
    /// be read, the gate steps aside rather than block the request.
    async fn style_decided(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
    ) -> bool {
        match self
            .read_file(backend, user_id, project_id, style::STYLE_FILE)
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

    // --- the style gate (before the job) ---------------------------------------------------

    /// Steps 3, 4 and 6 of docs/protocol.md §4.2. `flag` is the socket's open question;
    /// the second value is what the socket keeps afterwards.
    pub async fn style_gate(
        self: &Arc<Self>,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        request: &GenerationRequest,
        flag: Option<PendingStyle>,
    ) -> (Gate, Option<PendingStyle>) {
        let content = request.content.clone().unwrap_or_default();
        let ttl = self.settings.pending_style_ttl;
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
                        self.write_file_detached(
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
        self.write_file_detached(
            backend,
            user_id,
            project_id,
            style::PENDING_FILE,
            String::new(),
        );
        let Some(selected) = selected else {
            if open {
                self.write_file_detached(
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
    pub async fn reoffer_style(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
    ) -> Option<(ServerMessage, PendingStyle)> {
        if self.style_decided(backend, user_id, project_id).await {
            return None;
        }
        let raw = self
            .read_file(backend, user_id, project_id, style::PENDING_FILE)
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

    // --- inside the job ----------------------------------------------------------------------

    /// The preparation of one job (intent, chat, skills), handed to `Jobs::start`.
    pub fn preparation(
        self: &Arc<Self>,
        who: Identity,
        project_id: Uuid,
        message: String,
        disable_skills: bool,
        style_file: Option<String>,
    ) -> Box<dyn Prepare> {
        Box::new(Preparation {
            pipeline: Arc::clone(self),
            who,
            project_id,
            message,
            disable_skills,
            style_file,
        })
    }

    async fn ask_local(
        &self,
        purpose: &'static str,
        user_id: Uuid,
        prompt: &str,
        timeout: Duration,
    ) -> Result<String, AskError> {
        let local = self
            .local
            .as_ref()
            .ok_or_else(|| AskError::Unavailable("no local backend is configured".into()))?;
        local
            .ask(Question {
                purpose,
                user_id,
                model: &self.settings.small_model,
                prompt,
                timeout,
                max_output_bytes: MAX_CLI_OUTPUT_BYTES,
            })
            .await
    }

    async fn intent(&self, backend: BackendKind, user_id: Uuid, message: &str) -> Intent {
        let answer = match backend {
            BackendKind::Modal => match &self.modal {
                Some(modal) => modal
                    .detect_intent(message)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("no Modal client".to_string()),
            },
            BackendKind::Local => {
                let prompt = fill(&self.prompts.intent, &[("message", message)]);
                self.ask_local("intent", user_id, &prompt, self.settings.intent_timeout)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match answer {
            Ok(answer) => Intent::from_answer(&answer),
            Err(error) => {
                tracing::warn!(%error, "intent detection failed; treating the request as an edit");
                METRICS.pipeline_fallbacks.inc(&["intent"]);
                Intent::Edit
            }
        }
    }

    async fn chat(
        &self,
        backend: BackendKind,
        who: &Identity,
        project_id: Uuid,
        message: &str,
    ) -> Result<ChatAnswer, String> {
        let user_id = who.user_id;
        let spec = self
            .read_file(Some(backend), user_id, project_id, "SPEC.md")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let history = self
            .store
            .history(who, project_id, 10)
            .await
            .unwrap_or_default();
        let turns = chat::recent_turns(&history);
        let max_chars = self.settings.max_answer_chars;
        match backend {
            BackendKind::Modal => {
                let modal = self.modal.as_ref().ok_or("no Modal client")?;
                let turns: Vec<ChatTurn> = turns
                    .into_iter()
                    .map(|(role, content)| ChatTurn {
                        role: role.to_string(),
                        content,
                    })
                    .collect();
                let reply = modal
                    .chat(message, &spec, &turns)
                    .await
                    .map_err(|e| e.to_string())?;
                let answer = ChatAnswer::new(&reply.message, reply.suggestions, max_chars);
                if answer.message.is_empty() {
                    return Err("empty answer".into());
                }
                Ok(answer)
            }
            BackendKind::Local => {
                let history_text = turns
                    .iter()
                    .map(|(role, content)| format!("{role}: {content}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let prompt = fill(
                    &self.prompts.chat,
                    &[
                        ("spec", spec.as_str()),
                        ("history", history_text.as_str()),
                        ("message", message),
                    ],
                );
                let text = self
                    .ask_local("chat", user_id, &prompt, self.settings.chat_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                ChatAnswer::parse(&text, max_chars).ok_or_else(|| "empty answer".to_string())
            }
        }
    }

    /// The skills for this request: a model's pick, else the keyword rules; only skills the
    /// backend has.
    async fn skills(
        &self,
        backend: BackendKind,
        user_id: Uuid,
        message: &str,
        existing_code: &str,
    ) -> Vec<String> {
        let available: Vec<String> = match backend {
            BackendKind::Modal => skills::CATALOGUE.iter().map(|s| s.to_string()).collect(),
            BackendKind::Local => self
                .local
                .as_ref()
                .map(|l| l.available_skills())
                .unwrap_or_default()
                .into_iter()
                .filter(|name| skills::CATALOGUE.contains(&name.as_str()))
                .collect(),
        };
        if available.is_empty() {
            return Vec::new();
        }
        let dimension = skills::dimension_of(message, existing_code);
        let picked = match backend {
            BackendKind::Modal => match &self.modal {
                Some(modal) => {
                    let code: String = existing_code.chars().take(EXISTING_CODE_CHARS).collect();
                    modal
                        .detect_skills(message, dimension.as_str(), &code)
                        .await
                        .map(|names| skills::finish(names, dimension, &available))
                        .map_err(|e| e.to_string())
                }
                None => Err("no Modal client".to_string()),
            },
            BackendKind::Local => {
                let list = available
                    .iter()
                    .map(|name| format!("- {name}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let has_code = if existing_code.trim().is_empty() {
                    "none"
                } else {
                    "present"
                };
                let prompt = fill(
                    &self.prompts.skills,
                    &[
                        ("skills", list.as_str()),
                        ("message", message),
                        ("dimension", dimension.as_str()),
                        ("existing_code", has_code),
                    ],
                );
                match self
                    .ask_local("skills", user_id, &prompt, self.settings.skills_timeout)
                    .await
                {
                    Ok(answer) => skills::from_answer(&answer, dimension, &available)
                        .ok_or_else(|| "no JSON array in the answer".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match picked {
            Ok(picked) => picked,
            Err(error) => {
                tracing::warn!(%error, "skill selection failed; using the keyword rules");
                METRICS.pipeline_fallbacks.inc(&["skills"]);
                skills::by_keywords(message, &available)
            }
        }
    }
}

/// One job's preparation.
struct Preparation {
    pipeline: Arc<Pipeline>,
    who: Identity,
    project_id: Uuid,
    message: String,
    disable_skills: bool,
    style_file: Option<String>,
}

#[async_trait]
impl Prepare for Preparation {
    async fn prepare(self: Box<Self>, backend: BackendKind, progress: Progress<'_>) -> Plan {
        let pipeline = &self.pipeline;
        let (user_id, project_id) = (self.who.user_id, self.project_id);
        let job_backend = backend;
        let backend = Some(backend);
        if let Some(content) = self.style_file.clone() {
            // Awaited, so the agent finds it when it starts.
            if let Err(e) = pipeline
                .write_file(backend, user_id, project_id, style::STYLE_FILE, content)
                .await
            {
                tracing::warn!(error = %e, "could not write STYLE.md");
            }
        }
        progress(5, texts::DETECTING_INTENT);
        let intent = pipeline.intent(job_backend, user_id, &self.message).await;
        tracing::info!(intent = intent.as_str(), "intent detected");
        if intent == Intent::Restore {
            progress(100, texts::RESTORE_CONFIRM);
            return Plan::Answer {
                frames: vec![ServerMessage::GeminiRestore {
                    mode: "restore".into(),
                    message: texts::RESTORE_QUESTION.into(),
                    confirm_label: texts::RESTORE_CONFIRM_LABEL.into(),
                    cancel_label: texts::RESTORE_CANCEL_LABEL.into(),
                }],
                history: None,
                result: JobResult {
                    message: texts::RESTORE_CONFIRM.into(),
                    mode: Some("restore".into()),
                    generator: Some("claude".into()),
                    html: None,
                },
            };
        }
        let code = match pipeline
            .read_file(backend, user_id, project_id, "index.html")
            .await
        {
            Ok(code) => code,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read index.html");
                None
            }
        };
        if intent == Intent::Chat {
            // A question about a game that does not exist yet is answered by making it.
            if code.is_some() {
                progress(10, texts::ANSWERING);
                match pipeline
                    .chat(job_backend, &self.who, project_id, &self.message)
                    .await
                {
                    Ok(answer) => {
                        progress(100, texts::ANSWERED);
                        return Plan::Answer {
                            frames: vec![ServerMessage::GeminiChat {
                                mode: "chat".into(),
                                message: answer.message.clone(),
                                suggestions: answer.suggestions.clone(),
                            }],
                            history: Some(answer.history_entry()),
                            result: JobResult {
                                message: answer.message,
                                mode: Some("chat".into()),
                                generator: Some("haiku".into()),
                                html: None,
                            },
                        };
                    }
                    Err(error) => {
                        tracing::warn!(%error, "chat answer failed; generating instead");
                        METRICS.pipeline_fallbacks.inc(&["chat"]);
                    }
                }
            } else {
                tracing::info!("question about a project without a game; generating");
            }
        }
        if self.disable_skills {
            return Plan::Generate {
                skills: pipeline.prompts.skills_disabled.clone(),
            };
        }
        let picked = pipeline
            .skills(
                job_backend,
                user_id,
                &self.message,
                code.as_deref().unwrap_or_default(),
            )
            .await;
        if picked.is_empty() {
            return Plan::Generate {
                skills: String::new(),
            };
        }
        progress(10, &skills::progress_line(&picked));
        let paths = skills::skill_paths(&picked);
        Plan::Generate {
            skills: fill(&pipeline.prompts.skill_list, &[("skill_paths", &paths)]),
        }
    }
}
