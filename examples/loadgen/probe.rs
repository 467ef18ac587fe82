//! `--probe` (cluster set-ups with Redis): a plain subscriber on every job's live channel
//! notes when each event leaves Redis. Beside the followers' figures this splits a
//! cross-replica event's latency in two: the owning replica and Redis, then the follower's
//! replica. It reads the timing token the fake upstream puts at the end of each event's
//! text (`seq:ns;`), wherever the published frames carry it; an event seen again later (a
//! job's final frames repeat its text) counts from its first sighting.
//!
//! The subscriber is a blocking socket on a thread of its own, outside the runtime that
//! drives the followers, so that its reads never hold theirs back; it still costs the
//! machine some CPU, so it runs only when asked for.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{now_ns, Result, Sample};

/// The live channels of every job, as the relay names them.
const LIVE_PATTERN: &str = "dreamcore:live:*";

/// A read waits at most this long, so the thread notices it is asked to stop.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Fewer digits than this before `;` is not a send time (times count nanoseconds from the
/// load generator's start, so they have many more).
const MIN_NS_DIGITS: usize = 6;

/// The subscriber thread while it runs.
pub(super) struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<HashMap<u64, u64>>,
}

impl Probe {
    /// Subscribe on Redis's Unix socket and start noting events.
    pub(super) fn start(socket: &Path) -> Result<Self> {
        let mut conn = UnixStream::connect(socket)?;
        conn.write_all(format!("PSUBSCRIBE {LIVE_PATTERN}\r\n").as_bytes())?;
        conn.set_read_timeout(Some(READ_TIMEOUT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || listen(conn, &stop)
        });
        Ok(Self { stop, thread })
    }

    /// Stop, and return each event's send time and how long after it Redis delivered it.
    pub(super) fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let first_seen = self.thread.join().unwrap_or_default();
        first_seen
            .into_iter()
            .map(|(sent_ns, seen_ns)| Sample {
                sent_ns,
                latency_ns: seen_ns.saturating_sub(sent_ns),
            })
            .collect()
    }
}

/// Read the subscription until asked to stop: each token's send time, and when it was first
/// read.
fn listen(mut conn: UnixStream, stop: &AtomicBool) -> HashMap<u64, u64> {
    let mut first_seen = HashMap::new();
    let mut read = vec![0u8; 1 << 20];
    // Bytes after the last `;` read so far: a token may be cut between two reads.
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match conn.read(&mut read) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let now = now_ns();
        pending.extend_from_slice(&read[..n]);
        let Some(last) = pending.iter().rposition(|b| *b == b';') else {
            continue;
        };
        for sent in send_times(&pending[..=last]) {
            first_seen.entry(sent).or_insert(now);
        }
        pending.drain(..=last);
    }
    first_seen
}

/// The send times of the tokens (`seq:ns;`) in `text`.
fn send_times(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    text.iter().enumerate().filter_map(move |(end, byte)| {
        if *byte != b';' {
            return None;
        }
        let digits = text[..end]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let start = end - digits;
        if digits < MIN_NS_DIGITS || start == 0 || text[start - 1] != b':' {
            return None;
        }
        std::str::from_utf8(&text[start..end]).ok()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::send_times;

    #[test]
    fn tokens_are_found_wherever_the_frames_carry_them() {
        let published = br#"*3\r\n$7\r\nmessage\r\n{"seq":12,"text":"xx11:123456789;"}{"text":"12:987654321;"};3:45;"#;
        let times: Vec<u64> = send_times(published).collect();
        assert_eq!(times, vec![123_456_789, 987_654_321]);
    }

    #[test]
    fn numbers_that_are_not_tokens_are_skipped() {
        assert_eq!(send_times(b"123456789;").count(), 0, "no `seq:` before it");
        assert_eq!(
            send_times(b";;:;7:12345;").count(),
            0,
            "too short for a time"
        );
        assert_eq!(send_times(b"7:1234567").count(), 0, "no `;` yet");
    }
}
