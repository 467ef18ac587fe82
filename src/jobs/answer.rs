//! The assistant's answer as a job accumulates it: the text stored in the chat history and
//! sent with `completed`. Bounded in bytes; past the budget the rest of the output is left
//! out and a visible marker says so (docs/decisions.md, decision 14).

/// Appended to an answer that outgrew its budget ("the rest was left out because it was long").
pub const TRUNCATED_MARKER: &str = "\n…（長いため以降は省略されました）";

/// Assistant text up to `max_bytes`.
pub struct Answer {
    text: String,
    max_bytes: usize,
    truncated: bool,
}

impl Answer {
    /// An empty answer that keeps at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            text: String::new(),
            max_bytes,
            truncated: false,
        }
    }

    /// Appends text, stopping once the size limit is reached.
    pub fn push(&mut self, more: &str) {
        if self.truncated {
            return;
        }
        let room = self.max_bytes - self.text.len();
        if more.len() <= room {
            self.text.push_str(more);
            return;
        }
        let mut cut = room;
        while !more.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&more[..cut]);
        self.truncated = true;
    }

    /// The trimmed answer, marked when it was cut; `None` when the agent wrote no text.
    pub fn finish(self) -> Option<String> {
        let text = self.text.trim();
        match (text.is_empty(), self.truncated) {
            (true, _) => None,
            (false, false) => Some(text.to_string()),
            (false, true) => Some(format!("{text}{TRUNCATED_MARKER}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_pass_through_trimmed() {
        let mut answer = Answer::new(64);
        answer.push("  ジャンプ力を");
        answer.push("上げました\n");
        assert_eq!(answer.finish().as_deref(), Some("ジャンプ力を上げました"));
        assert_eq!(Answer::new(64).finish(), None);
    }

    #[test]
    fn long_answers_stop_at_the_budget_with_a_marker() {
        let mut answer = Answer::new(1000);
        for _ in 0..10_000 {
            answer.push("あいう");
        }
        let text = answer.finish().unwrap();
        let kept = text.strip_suffix(TRUNCATED_MARKER).expect("marker");
        assert!(kept.len() <= 1000 && kept.len() > 990, "{}", kept.len());
        assert!(kept.chars().all(|c| "あいう".contains(c)));
    }
}
