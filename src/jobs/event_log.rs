//! A job's replay log, bounded in bytes. A socket that subscribes mid-job receives the log in
//! one batch, so the log must give it a coherent picture of the job so far, yet it may never
//! hold more than its budget whatever the backend streams (docs/decisions.md, decision 14).
//!
//! Consecutive `stream` texts are merged into one entry as they arrive, so a long answer is one
//! growing string, not a list of frames. When the log outgrows its budget it is compacted:
//! every `progress` frame but the newest is dropped (each carries the whole job row and an
//! absolute value, so the newest supersedes the rest, and the client takes `progress` in any
//! order relative to `stream`, docs/protocol.md §1.6), stream runs that became neighbours are
//! merged, and the oldest stream text is cut so that the newest text fits, behind a visible
//! marker. Compaction goes down to three quarters of the budget, so its cost is spread over at
//! least a quarter of a budget of new text.

use axum::extract::ws::Utf8Bytes;

use crate::wire::protocol::ServerMessage;

/// Put where a late joiner's stream text starts when the log no longer holds the beginning
/// ("the output before this was left out").
pub const OMITTED_MARKER: &str = "…（これより前の出力は省略されました）\n";

/// What an entry costs besides its text, counted so that many tiny events cannot hide
/// behind a small byte count.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

/// What the log needs to know about a frame it keeps whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A `progress` event: superseded by the next one.
    Progress,
    /// The `completed` event: a message-path subscriber gets `gameUpdated` right after it.
    Completed,
    /// Any other job event (`started`, `failed`, `cancelled`).
    Other,
}

enum Entry {
    Frame {
        frame: Utf8Bytes,
        kind: FrameKind,
    },
    /// Consecutive `stream` contents, concatenated.
    Stream {
        text: String,
        /// Stream text before this entry was dropped by compaction.
        omitted_before: bool,
    },
}

impl Entry {
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Entry::Frame { frame, .. } => frame.len(),
                Entry::Stream { text, .. } => text.len(),
            }
    }
}

/// The job's events so far, within `max_bytes`.
pub struct EventLog {
    entries: Vec<Entry>,
    /// Sum of the entries' costs.
    bytes: usize,
    max_bytes: usize,
    last_seq: u64,
}

impl EventLog {
    /// An empty log that keeps at most `max_bytes` of events.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            max_bytes,
            last_seq: 0,
        }
    }

    /// Sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Bytes held, bookkeeping included.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Record the content of a `stream` event. Returns its sequence number.
    pub fn append_stream(&mut self, content: &str) -> u64 {
        match self.entries.last_mut() {
            Some(Entry::Stream { text, .. }) => text.push_str(content),
            _ => {
                self.entries.push(Entry::Stream {
                    text: content.to_string(),
                    omitted_before: false,
                });
                self.bytes += ENTRY_OVERHEAD;
            }
        }
        self.bytes += content.len();
        self.appended()
    }

    /// Record any other event, kept as the frame subscribers received. Returns its sequence
    /// number.
    pub fn append_frame(&mut self, frame: Utf8Bytes, kind: FrameKind) -> u64 {
        let entry = Entry::Frame { frame, kind };
        self.bytes += entry.cost();
        self.entries.push(entry);
        self.appended()
    }

    fn appended(&mut self) -> u64 {
        self.last_seq += 1;
        if self.bytes > self.max_bytes {
            self.compact();
        }
        self.last_seq
    }

    /// The frames a late subscriber receives, in order; `after_completed` follows `completed`.
    pub fn replay(&self, after_completed: Option<&Utf8Bytes>) -> Vec<Utf8Bytes> {
        let mut frames = Vec::with_capacity(self.entries.len() + 1);
        for entry in &self.entries {
            match entry {
                Entry::Frame { frame, kind } => {
                    frames.push(frame.clone());
                    if let (FrameKind::Completed, Some(extra)) = (kind, after_completed) {
                        frames.push(extra.clone());
                    }
                }
                Entry::Stream {
                    text,
                    omitted_before,
                } => {
                    let content = if *omitted_before {
                        format!("{OMITTED_MARKER}{text}")
                    } else {
                        text.clone()
                    };
                    frames.push(ServerMessage::Stream { content }.to_frame());
                }
            }
        }
        frames
    }

    fn compact(&mut self) {
        let newest_progress = self.entries.iter().rposition(|e| {
            matches!(
                e,
                Entry::Frame {
                    kind: FrameKind::Progress,
                    ..
                }
            )
        });
        let mut kept: Vec<Entry> = Vec::with_capacity(self.entries.len());
        for (index, entry) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            let superseded = matches!(
                entry,
                Entry::Frame {
                    kind: FrameKind::Progress,
                    ..
                }
            ) && Some(index) != newest_progress;
            if superseded {
                continue;
            }
            match (kept.last_mut(), entry) {
                (Some(Entry::Stream { text, .. }), Entry::Stream { text: more, .. }) => {
                    text.push_str(&more)
                }
                (_, entry) => kept.push(entry),
            }
        }
        self.entries = kept;
        self.bytes = self.entries.iter().map(Entry::cost).sum();
        let target = self.max_bytes / 4 * 3;
        if self.bytes > target {
            self.cut_oldest_text(self.bytes - target);
        }
    }

    /// Drop `excess` bytes of the oldest stream text (whole entries first), and mark where
    /// the remaining text starts.
    fn cut_oldest_text(&mut self, mut excess: usize) {
        let mut dropped = false;
        let mut index = 0;
        while excess > 0 && index < self.entries.len() {
            let Entry::Stream { text, .. } = &mut self.entries[index] else {
                index += 1;
                continue;
            };
            if text.len() + ENTRY_OVERHEAD <= excess {
                excess -= text.len() + ENTRY_OVERHEAD;
                self.bytes -= text.len() + ENTRY_OVERHEAD;
                self.entries.remove(index);
                dropped = true;
                continue;
            }
            let mut cut = excess.min(text.len());
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
            text.shrink_to_fit();
            self.bytes -= cut;
            dropped = true;
            break;
        }
        if dropped {
            if let Some(Entry::Stream { omitted_before, .. }) = self
                .entries
                .iter_mut()
                .find(|e| matches!(e, Entry::Stream { .. }))
            {
                *omitted_before = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_string())
    }

    fn contents(frames: &[Utf8Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("stream") => format!("stream:{}", v["content"].as_str().unwrap()),
                    _ => f.to_string(),
                }
            })
            .collect()
    }

    #[test]
    fn consecutive_stream_texts_become_one_frame_in_order() {
        let mut log = EventLog::new(1 << 20);
        log.append_frame(frame(r#"{"type":"started"}"#), FrameKind::Other);
        log.append_stream("ab");
        log.append_stream("cd");
        log.append_frame(frame(r#"{"type":"progress","p":1}"#), FrameKind::Progress);
        log.append_stream("ef");
        assert_eq!(log.last_seq(), 5);
        assert_eq!(
            contents(&log.replay(None)),
            [
                r#"{"type":"started"}"#,
                "stream:abcd",
                r#"{"type":"progress","p":1}"#,
                "stream:ef"
            ]
        );
    }

    #[test]
    fn over_budget_keeps_newest_progress_and_newest_text_behind_a_marker() {
        let budget = 8 * 1024;
        let mut log = EventLog::new(budget);
        log.append_frame(frame(r#"{"type":"started"}"#), FrameKind::Other);
        let mut all = String::new();
        for n in 0..2_000 {
            if n % 100 == 0 {
                log.append_frame(
                    frame(&format!(r#"{{"type":"progress","p":{n}}}"#)),
                    FrameKind::Progress,
                );
            }
            let chunk = format!("<{n}>ジャンプ");
            all.push_str(&chunk);
            log.append_stream(&chunk);
            assert!(log.bytes() <= budget, "{} bytes at event {n}", log.bytes());
        }
        log.append_frame(frame(r#"{"type":"completed"}"#), FrameKind::Completed);
        let after = frame(r#"{"type":"gameUpdated"}"#);
        let replay = contents(&log.replay(Some(&after)));

        assert_eq!(replay.first().unwrap(), r#"{"type":"started"}"#);
        assert_eq!(
            &replay[replay.len() - 2..],
            [r#"{"type":"completed"}"#, r#"{"type":"gameUpdated"}"#]
        );
        let progress: Vec<&String> = replay.iter().filter(|f| f.contains("progress")).collect();
        assert_eq!(progress, [r#"{"type":"progress","p":1900}"#]);
        // The text a late joiner sees: the marker once, then an unbroken tail of the output.
        let text: String = replay
            .iter()
            .filter_map(|f| f.strip_prefix("stream:"))
            .collect();
        let tail = text.strip_prefix(OMITTED_MARKER).expect("marker first");
        assert!(!tail.contains(OMITTED_MARKER));
        assert!(all.ends_with(tail), "the kept text is the newest text");
        assert!(tail.len() > budget / 2, "kept {} bytes", tail.len());
    }

    #[test]
    fn within_budget_nothing_is_dropped() {
        let mut log = EventLog::new(64 * 1024);
        for n in 0..100 {
            log.append_stream(&format!("{n};"));
            log.append_frame(
                frame(&format!(r#"{{"type":"progress","p":{n}}}"#)),
                FrameKind::Progress,
            );
        }
        let replay = contents(&log.replay(None));
        assert_eq!(replay.len(), 200);
        assert!(!replay.iter().any(|f| f.contains(OMITTED_MARKER)));
    }

    #[test]
    fn one_huge_text_is_cut_at_a_character_boundary() {
        let mut log = EventLog::new(4096);
        log.append_stream(&"あ".repeat(10_000));
        assert!(log.bytes() <= 4096);
        let replay = contents(&log.replay(None));
        let text = replay[0].strip_prefix("stream:").unwrap();
        let tail = text.strip_prefix(OMITTED_MARKER).unwrap();
        assert!(!tail.is_empty() && tail.chars().all(|c| c == 'あ'));
    }
}
