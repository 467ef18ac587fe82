//! The prompt sent to the agent, built from an operator-editable template
//! (`config/prompt.txt`) with `{{workspace}}`, `{{skills}}` (the required-reading block the
//! pipeline chose, or nothing) and `{{message}}` placeholders.

use std::path::Path;

const EMBEDDED: &str = include_str!("../../config/prompt.txt");

/// The prompt template a job's message is filled into.
#[derive(Debug, Clone)]
pub struct PromptTemplate {
    text: String,
}

/// Why the prompt template could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("PROMPT_TEMPLATE {path}: {reason}")]
pub struct TemplateError {
    path: String,
    reason: String,
}

impl PromptTemplate {
    /// Read the template file; the embedded copy serves when the default path does not exist
    /// (the binary runs outside the checkout). A template without `{{message}}` is refused.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new("config/prompt.txt") =>
            {
                EMBEDDED.to_string()
            }
            Err(e) => {
                return Err(TemplateError {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Self::from_text(text).map_err(|reason| TemplateError {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Checks and wraps a template text; it must contain `{{message}}`.
    pub fn from_text(text: String) -> Result<Self, String> {
        if !text.contains("{{message}}") {
            return Err("the template has no {{message}} placeholder".into());
        }
        Ok(Self { text })
    }

    /// Substitute in one pass, so text inside the user's message is never re-interpreted.
    pub fn render(&self, workspace: &str, skills: &str, message: &str) -> String {
        let mut out =
            String::with_capacity(self.text.len() + message.len() + workspace.len() + skills.len());
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(tail) = after.strip_prefix("{{message}}") {
                out.push_str(message);
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("{{workspace}}") {
                out.push_str(workspace);
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("{{skills}}") {
                out.push_str(skills.trim());
                rest = tail;
            } else {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_without_reinterpreting_the_message() {
        let t = PromptTemplate::from_text(
            "dir={{workspace}} {{other}}\n<user>{{message}}</user>".into(),
        )
        .unwrap();
        assert_eq!(
            t.render("/w", "", "hi {{workspace}} $(rm -rf) `x`"),
            "dir=/w {{other}}\n<user>hi {{workspace}} $(rm -rf) `x`</user>"
        );
    }

    #[test]
    fn embedded_template_is_valid() {
        let t = PromptTemplate::from_text(EMBEDDED.to_string()).unwrap();
        let p = t.render(
            "/data/users/u/projects/p",
            "Required reading:\n- .claude/skills/p5js-setup/SKILL.md",
            "make a cat game",
        );
        assert!(p.contains("make a cat game") && p.contains("/data/users/u/projects/p"));
        assert!(p.contains("- .claude/skills/p5js-setup/SKILL.md\n</system>"));
    }

    #[test]
    fn template_without_message_is_refused() {
        assert!(PromptTemplate::from_text("no placeholder".into()).is_err());
    }
}
