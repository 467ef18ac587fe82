//! Claude CLI stdout → backend events: line splitting that never trusts the producer, the
//! `{`-fragment rule of Modal's passthrough (`docs/backends.md` §2.5) and the output cap.

use serde_json::Value;

use crate::backend::claude::{self, CliEvent};
use crate::backend::BackendEvent;

/// Longest stdout line (or reassembled fragment) kept. A whole `index.html` written by one
/// `Write` call arrives as a single line, so this is generous; anything longer is dropped.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Splits a byte stream into lines. A line longer than `max` is dropped whole (the rest of it
/// is skipped up to the next newline) instead of growing the buffer without bound.
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
    dropped: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            discarding: false,
            dropped: 0,
        }
    }

    /// Feed one chunk; `on_line` receives every completed line, without its newline.
    pub fn push(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (part, rest, complete) = match newline {
                Some(at) => (&chunk[..at], &chunk[at + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            if !self.discarding {
                if self.buf.len() + part.len() > self.max {
                    self.buf = Vec::new();
                    self.discarding = true;
                    self.dropped += 1;
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if complete {
                if !self.discarding {
                    on_line(&self.buf);
                }
                self.buf.clear();
                self.discarding = false;
            }
            chunk = rest;
        }
    }

    /// The unterminated last line, if any (the CLI exited or died without a final newline).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let tail = std::mem::take(&mut self.buf);
        let discarding = std::mem::replace(&mut self.discarding, false);
        (!discarding && !tail.is_empty()).then_some(tail)
    }

    /// Lines dropped for being longer than the limit.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// Interprets CLI output lines. JSON lines go through [`claude::interpret`]; other lines only
/// reach the debug log. After `cap` lines nothing more is emitted (one warning), but the
/// `result` line is still noticed so a run that reports `is_error` is not taken for a success.
pub struct OutputParser {
    fragment: Option<String>,
    cap: usize,
    lines: usize,
    capped: bool,
    reported_error: bool,
}

impl OutputParser {
    pub fn new(cap: usize) -> Self {
        Self {
            fragment: None,
            cap,
            lines: 0,
            capped: false,
            reported_error: false,
        }
    }

    /// One raw stdout line → the events to emit for it.
    pub fn line(&mut self, raw: &[u8]) -> Vec<BackendEvent> {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim();
        if line.is_empty() {
            return Vec::new();
        }
        if let Ok(value) = serde_json::from_str::<Value>(line) {
            return self.json(&value);
        }
        if let Some(buffer) = self.fragment.as_mut() {
            // A JSON object the CLI split across lines: glue without a separator, as Modal does.
            buffer.push_str(line);
            if let Ok(value) = serde_json::from_str::<Value>(buffer) {
                self.fragment = None;
                return self.json(&value);
            }
            if buffer.len() > MAX_LINE_BYTES {
                tracing::debug!(
                    bytes = buffer.len(),
                    "dropping oversized unterminated JSON fragment"
                );
                self.fragment = None;
            }
            return Vec::new();
        }
        if line.starts_with('{') {
            self.fragment = Some(line.to_string());
            return Vec::new();
        }
        if self.admit() {
            tracing::debug!(line, "claude output");
        }
        Vec::new()
    }

    /// End of output: an open fragment never became JSON.
    pub fn finish(&mut self) {
        if let Some(fragment) = self.fragment.take() {
            let head: String = fragment.chars().take(200).collect();
            tracing::debug!(fragment = %head, "claude output ended inside an unterminated JSON fragment");
        }
    }

    /// The CLI's `result` line said `is_error: true`.
    pub fn reported_error(&self) -> bool {
        self.reported_error
    }

    /// Lines counted toward the cap.
    pub fn lines(&self) -> usize {
        self.lines
    }

    fn json(&mut self, value: &Value) -> Vec<BackendEvent> {
        let events = claude::interpret(value);
        for event in &events {
            if let CliEvent::Result { is_error: true, .. } = event {
                self.reported_error = true;
            }
        }
        if !self.admit() {
            return Vec::new();
        }
        events
            .into_iter()
            .filter_map(|event| match event {
                CliEvent::Text(text) => Some(BackendEvent::Text(text)),
                CliEvent::ToolUse(name) => Some(BackendEvent::ToolUse(name)),
                CliEvent::Result { .. } => None,
            })
            .collect()
    }

    fn admit(&mut self) -> bool {
        if self.lines < self.cap {
            self.lines += 1;
            return true;
        }
        if !self.capped {
            self.capped = true;
            tracing::warn!(
                cap = self.cap,
                "claude output reached the line cap; further output is drained, not shown"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<Vec<u8>>, usize) {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l.to_vec()));
        }
        let dropped = splitter.dropped();
        (lines, splitter.finish(), dropped)
    }

    #[test]
    fn lines_survive_arbitrary_chunking() {
        let (lines, tail, dropped) = split(100, &[b"ab", b"c\nde", b"\n\nf"]);
        assert_eq!(lines, vec![b"abc".to_vec(), b"de".to_vec(), Vec::new()]);
        assert_eq!(tail, Some(b"f".to_vec()));
        assert_eq!(dropped, 0);
    }

    #[test]
    fn oversized_lines_are_dropped_whole() {
        let (lines, tail, dropped) = split(4, &[b"12", b"345", b"67\nok\n", b"toolong"]);
        assert_eq!(lines, vec![b"ok".to_vec()]);
        assert_eq!(tail, None);
        assert_eq!(dropped, 2);
    }

    fn text_line(text: &str) -> String {
        serde_json::json!({"type":"assistant","message":{"content":[{"type":"text","text":text}]}})
            .to_string()
    }

    #[test]
    fn json_lines_become_events_and_plain_lines_do_not() {
        let mut parser = OutputParser::new(10);
        assert_eq!(
            parser.line(text_line("hi").as_bytes()),
            vec![BackendEvent::Text("hi".into())]
        );
        assert!(parser.line(b"  some log line  ").is_empty());
        assert!(parser.line(b"   ").is_empty());
        assert_eq!(parser.lines(), 2);
    }

    #[test]
    fn fragments_split_across_lines_are_reassembled() {
        let mut parser = OutputParser::new(10);
        assert!(parser
            .line(br#"{"type":"assistant","message":{"content":["#)
            .is_empty());
        // A complete JSON line still flows while a fragment is open.
        assert_eq!(
            parser.line(text_line("between").as_bytes()),
            vec![BackendEvent::Text("between".into())]
        );
        assert_eq!(
            parser.line(br#"{"type":"tool_use","name":"Write","input":{}}]}}"#),
            vec![BackendEvent::ToolUse("Write".into())]
        );
        // A stray `{` line swallows the plain lines after it, which never surface.
        assert!(parser.line(b"{ not json").is_empty());
        assert!(parser.line(b"swallowed").is_empty());
        assert_eq!(parser.lines(), 2);
        parser.finish();
        assert!(parser.line(b"plain again").is_empty());
        assert_eq!(parser.lines(), 3);
    }

    #[test]
    fn cap_stops_emitting_but_still_sees_the_result() {
        let mut parser = OutputParser::new(2);
        assert_eq!(parser.line(text_line("1").as_bytes()).len(), 1);
        assert_eq!(parser.line(text_line("2").as_bytes()).len(), 1);
        assert!(parser.line(text_line("3").as_bytes()).is_empty());
        assert!(!parser.reported_error());
        assert!(parser
            .line(br#"{"type":"result","is_error":true}"#)
            .is_empty());
        assert!(parser.reported_error());
        assert_eq!(parser.lines(), 2);
    }

    #[test]
    fn invalid_utf8_does_not_stop_parsing() {
        let mut parser = OutputParser::new(10);
        assert!(parser.line(b"\xff\xfe garbage").is_empty());
        assert_eq!(
            parser.line(text_line("ok").as_bytes()),
            vec![BackendEvent::Text("ok".into())]
        );
    }
}
