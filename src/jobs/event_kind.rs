//! What an event of a job means to those who keep and follow it: the replay log merges
//! `stream` text and supersedes `progress`, followers on the message path get `gameUpdated`
//! after `completed`, and the job bus ends a follow at a terminal event.

use crate::wire::protocol::ServerMessage;

/// The kind of one job event, as the replay log and the job bus need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A `stream` event: its content is merged with its neighbours in the replay log.
    Stream,
    /// A `progress` event: the next one supersedes it.
    Progress,
    /// The `completed` event: `gameUpdated` follows it on the message path.
    Completed,
    /// `failed` or `cancelled`.
    Ended,
    /// Any other job event (`started`, ...).
    Other,
}

impl EventKind {
    /// The kind of a message a job sends.
    pub fn of(message: &ServerMessage) -> Self {
        match message {
            ServerMessage::Stream { .. } => Self::Stream,
            ServerMessage::Progress { .. } => Self::Progress,
            ServerMessage::Completed { .. } => Self::Completed,
            ServerMessage::Failed { .. } | ServerMessage::Cancelled { .. } => Self::Ended,
            _ => Self::Other,
        }
    }

    /// Whether nothing follows this event.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Ended)
    }

    /// The one-letter code the job bus stores beside a frame.
    pub fn code(self) -> &'static str {
        match self {
            Self::Stream => "s",
            Self::Progress => "p",
            Self::Completed => "c",
            Self::Ended => "x",
            Self::Other => "e",
        }
    }

    /// The kind a stored code names.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "s" => Self::Stream,
            "p" => Self::Progress,
            "c" => Self::Completed,
            "x" => Self::Ended,
            "e" => Self::Other,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for kind in [
            EventKind::Stream,
            EventKind::Progress,
            EventKind::Completed,
            EventKind::Ended,
            EventKind::Other,
        ] {
            assert_eq!(EventKind::parse(kind.code()), Some(kind));
        }
        assert_eq!(EventKind::parse("?"), None);
    }
}
