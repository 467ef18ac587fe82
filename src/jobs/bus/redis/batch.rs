//! A run of one job's consecutive events as Redis carries it: one stream entry (id = the
//! last sequence number, one field) and one live message, both the same bytes. A burst of
//! events costs Redis one `XADD` and one `PUBLISH` instead of two commands per event.
//!
//! Format: `<first seq>` then, per event, ` <kind code><frame length in bytes>:<frame>`.
//! Lengths, not separators, so a frame may hold any character.
//!
//! Builds before 2026-12 wrote one event per entry (fields `k` and `f`) and published
//! `<seq> <kind code> <frame>`; those are still read ([`read_entry`], [`read_live`]), so that
//! during a rolling deploy a tab that moves to a new replica keeps following a job the old
//! one runs. (An old replica cannot read a batch: a tab there following a job of a new
//! replica gets the job's end from the database.)

use std::collections::HashMap;
use std::ops::Deref;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use redis::Value;
use uuid::Uuid;

use crate::jobs::event_kind::EventKind;

/// A run of one job's consecutive events on its way to Redis, and the bytes of the publish
/// queue it frees once written.
pub(super) struct Run {
    pub(super) job_id: Uuid,
    pub(super) events: BatchWriter,
    pub(super) queued: usize,
}

impl Run {
    /// Append `next` if it continues this run without a gap; false (and nothing changed)
    /// otherwise.
    pub(super) fn join(&mut self, next: &Run) -> bool {
        if self.events.next_seq() != next.events.first() {
            return false;
        }
        self.events.extend(&next.events);
        self.queued += next.queued;
        true
    }
}

/// The field of a stream entry that holds its batch.
pub(super) const FIELD: &str = "b";

/// A batch being written: consecutive events of one job.
pub(super) struct BatchWriter {
    text: String,
    first: u64,
    /// How many events it holds (at least one once made).
    count: u64,
    /// Whether the last event ends the job.
    ends_job: bool,
}

impl BatchWriter {
    /// A batch that starts with event `seq`.
    pub(super) fn new(seq: u64, kind: EventKind, frame: &str) -> Self {
        Self::of(seq, &[(frame, kind)])
    }

    /// A batch of consecutive `events`, the first numbered `first_seq`.
    pub(super) fn of<F: Deref<Target = str>>(first_seq: u64, events: &[(F, EventKind)]) -> Self {
        let mut text = String::with_capacity(encoded_len(first_seq, events));
        text.push_str(itoa::Buffer::new().format(first_seq));
        let mut batch = Self {
            text,
            first: first_seq,
            count: 0,
            ends_job: false,
        };
        batch.append(events);
        batch
    }

    /// The sequence number the next event must have to join this batch.
    pub(super) fn next_seq(&self) -> u64 {
        self.first + self.count
    }

    /// Add the next events (from `next_seq()` on).
    pub(super) fn append<F: Deref<Target = str>>(&mut self, events: &[(F, EventKind)]) {
        for (frame, kind) in events {
            self.ends_job = kind.is_terminal();
            self.text.push(' ');
            self.text.push_str(kind.code());
            self.text.push_str(itoa::Buffer::new().format(frame.len()));
            self.text.push(':');
            self.text.push_str(frame);
        }
        self.count += events.len() as u64;
    }

    /// Add the events of `next`, which starts at `next_seq()`.
    pub(super) fn extend(&mut self, next: &BatchWriter) {
        debug_assert_eq!(next.first, self.next_seq());
        let text = next.as_str();
        // Everything after `next`'s header: its events, each starting with a space.
        if let Some(header_end) = text.find(' ') {
            self.text.push_str(&text[header_end..]);
        }
        self.count += next.count;
        self.ends_job = next.ends_job;
    }

    /// How many events the batch holds.
    pub(super) fn len(&self) -> usize {
        self.count as usize
    }

    pub(super) fn first(&self) -> u64 {
        self.first
    }

    pub(super) fn last(&self) -> u64 {
        self.next_seq() - 1
    }

    /// Whether the batch holds the job's terminal event (always its last).
    pub(super) fn ends_job(&self) -> bool {
        self.ends_job
    }

    pub(super) fn as_str(&self) -> &str {
        &self.text
    }
}

/// The length of [`BatchWriter::of`]`(first_seq, events)`, reckoned without writing it.
pub(super) fn encoded_len<F: Deref<Target = str>>(
    first_seq: u64,
    events: &[(F, EventKind)],
) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |log| log as usize + 1);
    events.iter().fold(digits(first_seq), |len, (frame, _)| {
        let frame = frame.len();
        // ` <code><length>:<frame>`
        len + 3 + digits(frame as u64) + frame
    })
}

/// One event as read back: sequence number, kind, frame.
pub(super) type Event = (u64, EventKind, Utf8Bytes);

/// The events of stream entry `last` (its id), in order; `None` when it holds none.
pub(super) fn read_entry(last: u64, mut fields: HashMap<String, Value>) -> Option<Vec<Event>> {
    if let Some(Value::BulkString(payload)) = fields.remove(FIELD) {
        return read(payload);
    }
    let mut text = |field: &str| match fields.remove(field) {
        Some(Value::BulkString(bytes)) => Utf8Bytes::try_from(bytes).ok(),
        _ => None,
    };
    let kind = EventKind::parse(&text("k")?)?;
    Some(vec![(last, kind, text("f")?)])
}

/// The events of a live message, in order; `None` when it is none.
pub(super) fn read_live(payload: Vec<u8>) -> Option<Vec<Event>> {
    // A batch has digits right after the kind code, an older single event a space.
    let legacy = {
        let mut parts = payload.splitn(3, |b| *b == b' ');
        let _seq = parts.next();
        parts.next().is_some_and(|kind| kind.len() == 1)
    };
    if !legacy {
        return read(payload);
    }
    let text = String::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let kind = EventKind::parse(parts.next()?)?;
    let frame = parts.next()?;
    Some(vec![(seq, kind, Utf8Bytes::from(frame))])
}

/// The events of a batch, in order; `None` when `payload` is not one.
pub(super) fn read(payload: Vec<u8>) -> Option<Vec<Event>> {
    let bytes = Bytes::from(payload);
    let text = std::str::from_utf8(&bytes).ok()?;
    let header_end = text.find(' ')?;
    let mut seq: u64 = text[..header_end].parse().ok()?;
    let mut events = Vec::new();
    let mut at = header_end;
    while at < text.len() {
        let rest = text.get(at..)?.strip_prefix(' ')?;
        let kind = EventKind::parse(rest.get(..1)?)?;
        let colon = rest.find(':')?;
        let len: usize = rest.get(1..colon)?.parse().ok()?;
        let start = at + 1 + colon + 1;
        let end = start.checked_add(len)?;
        text.get(start..end)?;
        let frame = Utf8Bytes::try_from(bytes.slice(start..end)).ok()?;
        events.push((seq, kind, frame));
        seq += 1;
        at = end;
    }
    (!events.is_empty()).then_some(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read` gives back exactly `expected` from `batch`.
    fn assert_reads_back(batch: &BatchWriter, expected: &[(u64, EventKind, &str)]) {
        let events = read(batch.as_str().as_bytes().to_vec()).unwrap();
        let read_back: Vec<_> = events
            .iter()
            .map(|(seq, kind, frame)| (*seq, *kind, frame.as_str()))
            .collect();
        assert_eq!(read_back, expected);
    }

    #[test]
    fn batches_carry_consecutive_events_with_any_characters() {
        let frames = [
            r#"{"type":"stream","content":"a b"}"#,
            "",
            "line\nwith: colons 12: and spaces",
            "日本語 3:x",
        ];
        let mut batch = BatchWriter::new(41, EventKind::Stream, frames[0]);
        assert_eq!(batch.next_seq(), 42);
        batch.append(&[(frames[1], EventKind::Progress)]);
        batch.append(&[
            (frames[2], EventKind::Other),
            (frames[3], EventKind::Completed),
        ]);
        assert_eq!((batch.first(), batch.last()), (41, 44));
        let all: Vec<_> = frames
            .iter()
            .zip([
                EventKind::Stream,
                EventKind::Progress,
                EventKind::Other,
                EventKind::Completed,
            ])
            .map(|(frame, kind)| (*frame, kind))
            .collect();
        assert_eq!(encoded_len(41, &all), batch.as_str().len());
        assert_eq!(BatchWriter::of(41, &all).as_str(), batch.as_str());
        assert_reads_back(
            &batch,
            &[
                (41, EventKind::Stream, frames[0]),
                (42, EventKind::Progress, frames[1]),
                (43, EventKind::Other, frames[2]),
                (44, EventKind::Completed, frames[3]),
            ],
        );
    }

    #[test]
    fn runs_join_into_one_batch() {
        let mut first = BatchWriter::new(1, EventKind::Progress, "a");
        first.append(&[("b c", EventKind::Stream)]);
        let mut second = BatchWriter::new(3, EventKind::Stream, "d");
        second.append(&[("e", EventKind::Ended)]);
        first.extend(&second);
        assert_eq!((first.first(), first.last(), first.len()), (1, 4, 4));
        assert!(first.ends_job());
        assert_reads_back(
            &first,
            &[
                (1, EventKind::Progress, "a"),
                (2, EventKind::Stream, "b c"),
                (3, EventKind::Stream, "d"),
                (4, EventKind::Ended, "e"),
            ],
        );
    }

    #[test]
    fn entries_and_messages_of_older_builds_are_still_read() {
        let frame = r#"{"type":"stream","content":"a b: 1"}"#;
        let fields = HashMap::from([
            ("k".to_string(), Value::BulkString(b"s".to_vec())),
            (
                "f".to_string(),
                Value::BulkString(frame.as_bytes().to_vec()),
            ),
        ]);
        let events = read_entry(7, fields).unwrap();
        assert_eq!(
            (events[0].0, events[0].1, events[0].2.as_str()),
            (7, EventKind::Stream, frame)
        );
        let events = read_live(format!("7 s {frame}").into_bytes()).unwrap();
        assert_eq!(
            (events[0].0, events[0].1, events[0].2.as_str()),
            (7, EventKind::Stream, frame)
        );

        let batch = BatchWriter::new(7, EventKind::Stream, frame);
        let fields = HashMap::from([(
            FIELD.to_string(),
            Value::BulkString(batch.as_str().as_bytes().to_vec()),
        )]);
        assert_eq!(read_entry(7, fields).unwrap().len(), 1);
        assert_eq!(
            read_live(batch.as_str().as_bytes().to_vec()).unwrap().len(),
            1
        );

        assert!(read_entry(7, HashMap::new()).is_none());
        assert!(read_live(b"7 ? {}".to_vec()).is_none());
        assert!(read_live(b"x s {}".to_vec()).is_none());
        assert!(read_live(vec![0xff, b' ', b's', b' ']).is_none());
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b""[..],
            b"7",
            b"7 ",
            b"x s2:{}",
            b"7 ?2:{}",
            b"7 s3:{}",
            b"7 s2:{} ",
            b"7 s2:{}x",
            b"7 s99999999999999999999:{}",
            b"7 s:{}",
            b"7 s2:\xe6\x97\xa5",
            b"\xff s2:{}",
        ] {
            assert!(
                read(bad.to_vec()).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
