//! Intent of a generation request (docs/protocol.md §4.3 step 3): undo, a question, or a
//! change. Whatever goes wrong while asking, the answer is `Edit`: a generation runs, as the
//! user asked for something, and the job never waits on a failed classifier.

/// What the user wants from this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Go back to the previous version (the restore confirmation).
    Restore,
    /// A question or a request for ideas (a chat answer).
    Chat,
    /// Create or change the game (a generation).
    Edit,
}

impl Intent {
    /// Read a classifier's answer the way upstream does: `restore` anywhere wins, then `chat`;
    /// anything else is an edit.
    pub fn from_answer(answer: &str) -> Self {
        let answer = answer.to_lowercase();
        if answer.contains("restore") {
            Self::Restore
        } else if answer.contains("chat") {
            Self::Chat
        } else {
            Self::Edit
        }
    }

    /// The intent's name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restore => "restore",
            Self::Chat => "chat",
            Self::Edit => "edit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_like_upstream() {
        assert_eq!(Intent::from_answer("restore"), Intent::Restore);
        assert_eq!(Intent::from_answer(" Chat\n"), Intent::Chat);
        assert_eq!(Intent::from_answer("edit"), Intent::Edit);
        assert_eq!(Intent::from_answer(""), Intent::Edit);
        assert_eq!(Intent::from_answer("I cannot tell"), Intent::Edit);
    }
}
