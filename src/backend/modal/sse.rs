//! The SSE line decoder (`docs/backends.md` §3.1): raw body bytes in, `data:` payloads out.
//! Pure and self-contained, so a fuzz target can drive it directly.

/// Splits an SSE body into `data:` payloads (§3.1). Bytes are buffered until a `\n`, so a
/// chunk may end anywhere, even inside a UTF-8 character. Written by hand because
/// `eventsource-stream` 0.2 stalls for good on one invalid UTF-8 byte and drops a final
/// line without its blank line.
pub struct SseLines {
    buffer: Vec<u8>,
    max_line: usize,
    /// The current line outgrew `max_line`; skip to its end.
    discarding: bool,
}

impl SseLines {
    /// A decoder that skips any line longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Feeds one chunk; returns the payloads of the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut payloads = Vec::new();
        self.push_each(chunk, |payload| payloads.push(payload.to_string()));
        payloads
    }

    /// Feeds one chunk and hands each payload of the lines it completed to `take`, in order,
    /// without copying a line that lies wholly inside the chunk.
    pub fn push_each(&mut self, mut chunk: &[u8], mut take: impl FnMut(&str)) {
        while let Some(at) = memchr::memchr(b'\n', chunk) {
            // The same limit whether the line arrived whole or in pieces: how Modal's body
            // is cut into chunks must not change what is decoded.
            if !self.discarding && self.buffer.len() + at > self.max_line {
                tracing::warn!(limit = self.max_line, "skipping an overlong SSE line");
            } else if !self.discarding {
                let line = if self.buffer.is_empty() {
                    &chunk[..at]
                } else {
                    self.buffer.extend_from_slice(&chunk[..at]);
                    &self.buffer
                };
                if let Some(payload) = data_payload(&decode(line)) {
                    take(payload);
                }
            }
            self.buffer.clear();
            self.discarding = false;
            chunk = &chunk[at + 1..];
        }
        if !self.discarding {
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() > self.max_line {
                tracing::warn!(limit = self.max_line, "skipping an overlong SSE line");
                self.buffer = Vec::new();
                self.discarding = true;
            }
        }
    }

    /// The unterminated last line, if it is a `data:` line.
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.buffer);
        if self.discarding {
            return None;
        }
        data_payload(&decode(&line)).map(str::to_string)
    }
}

/// A line as text, lossily: an invalid byte spoils at most its own line. Valid UTF-8 (every
/// line, in practice) takes the fast check and is borrowed.
fn decode(line: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    }
}

/// The payload of a `data:` line (one optional space after the colon), trimmed; other
/// lines (blank, `event:`, `id:`, comments) carry nothing for us.
fn data_payload(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("data:")?;
    let payload = rest.strip_prefix(' ').unwrap_or(rest).trim();
    (!payload.is_empty()).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &mut SseLines, chunks: &[&[u8]]) -> Vec<String> {
        let mut out: Vec<String> = chunks.iter().flat_map(|c| lines.push(c)).collect();
        out.extend(lines.finish());
        out
    }

    #[test]
    fn lines_split_at_every_byte_including_inside_characters() {
        let body = "data: {\"t\":\"ジャンプ力\"}\n\n: comment\nevent: x\r\ndata:{\"n\":1}\r\n\r\n";
        let bytes = body.as_bytes();
        let expected = vec![
            "{\"t\":\"ジャンプ力\"}".to_string(),
            "{\"n\":1}".to_string(),
        ];
        for cut in 0..=bytes.len() {
            let mut lines = SseLines::new(1024);
            assert_eq!(
                feed_all(&mut lines, &[&bytes[..cut], &bytes[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
        let mut lines = SseLines::new(1024);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed_all(&mut lines, &singles), expected);
    }

    #[test]
    fn final_line_without_newline_counts() {
        let mut lines = SseLines::new(1024);
        assert_eq!(
            feed_all(&mut lines, &[b"data: {\"a\":1}\n\ndata: {\"b\":2}"]),
            vec!["{\"a\":1}", "{\"b\":2}"]
        );
    }

    #[test]
    fn invalid_utf8_spoils_only_its_line() {
        let mut lines = SseLines::new(1024);
        let out = feed_all(
            &mut lines,
            &[b"data: {\"a\":\"\xff\xfe\"}\n\n", b"data: {\"b\":2}\n\n"],
        );
        assert_eq!(out, vec!["{\"a\":\"\u{fffd}\u{fffd}\"}", "{\"b\":2}"]);
    }

    #[test]
    fn overlong_line_is_skipped_and_reading_goes_on() {
        let mut lines = SseLines::new(16);
        let long = format!("data: {}", "x".repeat(40));
        let out = feed_all(
            &mut lines,
            &[
                long.as_bytes(),
                b"yyy\n",
                b"data: 1\n",
                b"data: zzzzzzzzzzzzzzzzzzzz",
            ],
        );
        assert_eq!(out, vec!["1"]);
    }

    #[test]
    fn overlong_line_is_skipped_even_when_it_arrives_whole() {
        let mut lines = SseLines::new(16);
        let long = format!("data: {}\ndata: 1\n", "x".repeat(40));
        assert_eq!(feed_all(&mut lines, &[long.as_bytes()]), vec!["1"]);
    }
}
