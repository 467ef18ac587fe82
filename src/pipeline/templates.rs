//! The pipeline's prompts (`config/pipeline/prompts.toml`, operator-editable) and the one-pass
//! placeholder filling they share with the generation prompt.

use std::path::Path;

use serde::Deserialize;

const EMBEDDED: &str = include_str!("../../config/pipeline/prompts.toml");
const DEFAULT_PATH: &str = "config/pipeline/prompts.toml";

/// The prompts, each with its placeholders.
#[derive(Debug, Clone, Deserialize)]
pub struct Prompts {
    /// `{{message}}`.
    pub intent: String,
    /// `{{spec}}`, `{{history}}`, `{{message}}`.
    pub chat: String,
    /// `{{skills}}`, `{{message}}`, `{{dimension}}`, `{{existing_code}}`.
    pub skills: String,
    /// `{{skill_paths}}`.
    pub skill_list: String,
    /// Prompt text used when skills are turned off.
    pub skills_disabled: String,
}

/// Why the prompt templates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("PIPELINE_PROMPTS {path}: {reason}")]
pub struct PromptsError {
    path: String,
    reason: String,
}

impl Prompts {
    /// Read the file; the embedded copy serves when the default path does not exist (the
    /// binary runs outside the checkout). A prompt missing its `{{message}}` is refused.
    pub fn load(path: &Path) -> Result<Self, PromptsError> {
        let fail = |reason: String| PromptsError {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                EMBEDDED.to_string()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let prompts: Prompts = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        for (name, prompt) in [
            ("intent", &prompts.intent),
            ("chat", &prompts.chat),
            ("skills", &prompts.skills),
        ] {
            if !prompt.contains("{{message}}") {
                return Err(fail(format!("`{name}` has no {{{{message}}}} placeholder")));
            }
        }
        Ok(prompts)
    }
}

/// Replace each `{{name}}` of `values` in one pass; unknown placeholders stay as written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let extra: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut out = String::with_capacity(template.len() + extra);
    let mut rest = template;
    'outer: while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        for (name, value) in values {
            if let Some(tail) = after.strip_prefix(*name).and_then(|t| t.strip_prefix("}}")) {
                out.push_str(value);
                rest = tail;
                continue 'outer;
            }
        }
        out.push_str("{{");
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_once_without_reinterpreting_values() {
        assert_eq!(
            fill("a={{a}} b={{b}} {{c}}", &[("a", "{{b}}"), ("b", "x")]),
            "a={{b}} b=x {{c}}"
        );
    }

    #[test]
    fn embedded_prompts_load() {
        let prompts: Prompts = toml::from_str(EMBEDDED).unwrap();
        assert!(prompts.intent.contains("{{message}}"));
        assert!(prompts.chat.contains("{{history}}"));
        assert!(prompts.skill_list.contains("{{skill_paths}}"));
        assert!(Prompts::load(Path::new(DEFAULT_PATH)).is_ok());
    }
}
