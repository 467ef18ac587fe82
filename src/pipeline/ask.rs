//! The questions of the pipeline, asked of the backend the job runs on: Modal's endpoints, or
//! the small local model through the Claude CLI. Each answer has its fallback: intent → edit,
//! chat → `Err` (the caller generates instead), skills → upstream's keyword rules.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::chat::{self, ChatAnswer};
use super::files::ProjectFiles;
use super::intent::Intent;
use super::skills;
use super::templates::{fill, Prompts};
use crate::auth::Identity;
use crate::backend::local_cli::{AskError, LocalCliBackend, Question};
use crate::backend::modal::pipeline::{ChatTurn, ModalPipeline};
use crate::backend::BackendKind;
use crate::metrics::METRICS;
use crate::store::Store;

/// How much of the game's code goes to Modal's `detect_skills` (it only checks for presence).
const EXISTING_CODE_CHARS: usize = 2000;
/// Output kept from the small model: a word, a list, or a short answer.
const MAX_CLI_OUTPUT_BYTES: usize = 64 * 1024;

/// Limits of the questions.
#[derive(Debug, Clone)]
pub struct AskSettings {
    /// Model of the local CLI's short questions (`claude -p --model <this>`).
    pub small_model: String,
    /// Time allowed to detect intent.
    pub intent_timeout: Duration,
    /// Time allowed for a chat answer.
    pub chat_timeout: Duration,
    /// Time allowed to detect skills.
    pub skills_timeout: Duration,
    /// Longest chat answer kept (characters).
    pub max_answer_chars: usize,
}

/// Asks the questions.
pub struct Asker {
    /// Timeouts and other settings.
    pub settings: AskSettings,
    /// The prompt texts.
    pub prompts: Prompts,
    /// Where chat history is kept.
    pub store: Arc<dyn Store>,
    /// Reads project files.
    pub files: Arc<ProjectFiles>,
    /// The Modal pipeline, if configured.
    pub modal: Option<Arc<ModalPipeline>>,
    /// The local CLI, if configured.
    pub local: Option<LocalCliBackend>,
}

impl Asker {
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

    /// Works out what the user's message asks for.
    pub async fn intent(&self, backend: BackendKind, user_id: Uuid, message: &str) -> Intent {
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

    /// Answers a question about the game without changing it.
    pub async fn chat(
        &self,
        backend: BackendKind,
        who: &Identity,
        project_id: Uuid,
        message: &str,
    ) -> Result<ChatAnswer, String> {
        let user_id = who.user_id;
        let spec = self
            .files
            .read(Some(backend), user_id, project_id, "SPEC.md")
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
    pub async fn skills(
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

    /// The generation prompt's required-reading block for `picked`.
    pub fn skill_block(&self, picked: &[String]) -> String {
        let paths = skills::skill_paths(picked);
        fill(&self.prompts.skill_list, &[("skill_paths", &paths)])
    }
}
