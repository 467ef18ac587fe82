//! The pipeline's part inside a job (docs/protocol.md §4.3): `STYLE.md`, the intent, then a
//! chat answer, the restore confirmation, or the skills of the generation.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::ask::Asker;
use super::files::ProjectFiles;
use super::intent::Intent;
use super::{skills, style};
use crate::auth::Identity;
use crate::backend::BackendKind;
use crate::jobs::plan::{Plan, Prepare, Progress};
use crate::metrics::METRICS;
use crate::wire::protocol::{JobResult, ServerMessage};

/// Exact progress texts and fixed replies (docs/protocol.md §4.3).
mod texts {
    /// Shown while the message's intent is detected.
    pub const DETECTING_INTENT: &str = "意図を判定中...";
    /// Title of the restore confirmation.
    pub const RESTORE_CONFIRM: &str = "リストア確認";
    /// Question asked before undoing the last change.
    pub const RESTORE_QUESTION: &str = "直前の変更を取り消して、前の状態に戻しますか？";
    /// Label of the button that restores.
    pub const RESTORE_CONFIRM_LABEL: &str = "戻す";
    /// Label of the button that cancels the restore.
    pub const RESTORE_CANCEL_LABEL: &str = "キャンセル";
    /// Shown while a chat answer is written.
    pub const ANSWERING: &str = "Claude Haikuで回答中...";
    /// Shown when the chat answer is done.
    pub const ANSWERED: &str = "回答完了";
}

/// One job's preparation.
pub struct Preparation {
    /// Asks the model about the message.
    pub asker: Arc<Asker>,
    /// Reads project files.
    pub files: Arc<ProjectFiles>,
    /// Who sent the message.
    pub who: Identity,
    /// The project the message is about.
    pub project_id: Uuid,
    /// The user's message.
    pub message: String,
    /// Whether skills are turned off for this job.
    pub disable_skills: bool,
    /// The chosen style file, if any.
    pub style_file: Option<String>,
}

#[async_trait]
impl Prepare for Preparation {
    async fn prepare(self: Box<Self>, backend: BackendKind, progress: Progress<'_>) -> Plan {
        let asker = &self.asker;
        let (user_id, project_id) = (self.who.user_id, self.project_id);
        let job_backend = backend;
        let backend = Some(backend);
        if let Some(content) = self.style_file.clone() {
            // Awaited, so the agent finds it when it starts.
            if let Err(e) = self
                .files
                .write(backend, user_id, project_id, style::STYLE_FILE, content)
                .await
            {
                tracing::warn!(error = %e, "could not write STYLE.md");
            }
        }
        progress(5, texts::DETECTING_INTENT);
        // Both are round trips to the backend and neither needs the other: the game's code is
        // read while the intent is asked (and goes unused only for a restore).
        let (intent, code) = tokio::join!(
            asker.intent(job_backend, user_id, &self.message),
            self.files.read(backend, user_id, project_id, "index.html"),
        );
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
        let code = match code {
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
                match asker
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
                skills_block: asker.prompts.skills_disabled.clone(),
                skills: Vec::new(),
            };
        }
        let picked = asker
            .skills(
                job_backend,
                user_id,
                &self.message,
                code.as_deref().unwrap_or_default(),
            )
            .await;
        if picked.is_empty() {
            return Plan::Generate {
                skills_block: String::new(),
                skills: Vec::new(),
            };
        }
        progress(10, &skills::progress_line(&picked));
        Plan::Generate {
            skills_block: asker.skill_block(&picked),
            skills: picked,
        }
    }
}
