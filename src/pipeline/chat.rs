//! Chat answers (docs/protocol.md §4.3 step 5): the reply with its suggestion buttons, and the
//! history entry the frontend turns back into buttons on reload (`提案: ` + items joined by `、`).

use serde::Deserialize;

use crate::store::models::{ChatRole, HistoryItem};

/// History turns given to the model, and how much of each.
const HISTORY_TURNS: usize = 10;
const HISTORY_TURN_CHARS: usize = 500;
/// Suggestion buttons kept, and their length.
const MAX_SUGGESTIONS: usize = 5;
const SUGGESTION_CHARS: usize = 200;

/// A chat answer ready for `geminiChat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    /// The answer text.
    pub message: String,
    /// Follow-up prompts offered to the user.
    pub suggestions: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    message: String,
    #[serde(default)]
    suggestions: Vec<serde_json::Value>,
}

impl ChatAnswer {
    /// Bounded: the message to `max_chars`, at most five non-empty suggestions.
    pub fn new(message: &str, suggestions: Vec<String>, max_chars: usize) -> Self {
        Self {
            message: message.trim().chars().take(max_chars).collect(),
            suggestions: suggestions
                .into_iter()
                .map(|s| s.trim().chars().take(SUGGESTION_CHARS).collect::<String>())
                .filter(|s| !s.is_empty())
                .take(MAX_SUGGESTIONS)
                .collect(),
        }
    }

    /// The model's printed answer: the first JSON object with a `message` in it, else the
    /// whole text as the message with no suggestions (as Modal's `chat_haiku` reads it).
    /// `None` when there is nothing to say.
    pub fn parse(text: &str, max_chars: usize) -> Option<Self> {
        let found = text.match_indices('{').find_map(|(at, _)| {
            let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Raw>();
            values.next()?.ok()
        });
        let answer = match found {
            Some(raw) => Self::new(
                &raw.message,
                raw.suggestions
                    .into_iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
                max_chars,
            ),
            None => Self::new(text, Vec::new(), max_chars),
        };
        (!answer.message.is_empty()).then_some(answer)
    }

    /// The assistant history entry.
    pub fn history_entry(&self) -> String {
        if self.suggestions.is_empty() {
            self.message.clone()
        } else {
            format!("{}\n\n提案: {}", self.message, self.suggestions.join("、"))
        }
    }
}

/// The last turns, each cut short, as `(role, content)`.
pub fn recent_turns(history: &[HistoryItem]) -> Vec<(&'static str, String)> {
    let skip = history.len().saturating_sub(HISTORY_TURNS);
    history[skip..]
        .iter()
        .map(|item| {
            let role = match item.role {
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            };
            (
                role,
                item.content.chars().take(HISTORY_TURN_CHARS).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_json_answer_inside_other_text() {
        let text = "Sure!\n{\"message\": \"ジャンプ力を上げましょう\", \"suggestions\": [\"ジャンプを高くして\", \"\", 3, \"二段ジャンプを追加して\"]}\nbye";
        let answer = ChatAnswer::parse(text, 1000).unwrap();
        assert_eq!(answer.message, "ジャンプ力を上げましょう");
        assert_eq!(
            answer.suggestions,
            vec!["ジャンプを高くして", "二段ジャンプを追加して"]
        );
        assert_eq!(
            answer.history_entry(),
            "ジャンプ力を上げましょう\n\n提案: ジャンプを高くして、二段ジャンプを追加して"
        );
    }

    #[test]
    fn plain_text_is_the_message_and_nothing_is_no_answer() {
        let answer = ChatAnswer::parse("  just words {not json ", 5).unwrap();
        assert_eq!(answer.message, "just ");
        assert!(answer.suggestions.is_empty());
        assert_eq!(answer.history_entry(), "just ");
        assert_eq!(ChatAnswer::parse("  ", 100), None);
    }
}
