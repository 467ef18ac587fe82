//! The chat history sent with `projectSelected`, bounded in bytes as well as in entries
//! (docs/decisions.md, decision 14): the most recent entries that fit, the oldest of them cut
//! with a visible marker when only part of it fits. Sizes are counted as they appear in the
//! JSON frame, escapes included, so the budget holds for any text.

use crate::jobs::TRUNCATED_MARKER;
use crate::store::models::HistoryItem;

/// Role, timestamp and the JSON around them, per entry.
const ENTRY_OVERHEAD: usize = 96;
/// Below this, a cut entry would say nothing useful: stop instead.
const MIN_CUT_BYTES: usize = 256;

/// Keep the newest of `items` (given oldest first) whose text fits `max_bytes`.
pub fn within_budget(mut items: Vec<HistoryItem>, max_bytes: usize) -> Vec<HistoryItem> {
    let mut remaining = max_bytes;
    let mut first_kept = items.len();
    while first_kept > 0 {
        let item = &mut items[first_kept - 1];
        let cost = json_len(&item.content) + ENTRY_OVERHEAD;
        if cost <= remaining {
            remaining -= cost;
            first_kept -= 1;
            continue;
        }
        let room = remaining.saturating_sub(ENTRY_OVERHEAD + json_len(TRUNCATED_MARKER));
        if room >= MIN_CUT_BYTES {
            let cut = prefix_within(&item.content, room);
            item.content.truncate(cut);
            item.content.push_str(TRUNCATED_MARKER);
            first_kept -= 1;
        }
        break;
    }
    items.drain(..first_kept);
    items
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn json_len(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

/// Byte length of the longest prefix of `text` whose JSON form fits `max`.
fn prefix_within(text: &str, max: usize) -> usize {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += escaped_len(c);
        if used > max {
            return at;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::models::ChatRole;

    fn item(content: String) -> HistoryItem {
        HistoryItem {
            role: ChatRole::Assistant,
            content,
            timestamp: chrono::Utc::now(),
        }
    }

    fn frame_len(items: &[HistoryItem]) -> usize {
        serde_json::to_string(items).unwrap().len()
    }

    #[test]
    fn small_history_is_untouched() {
        let items: Vec<_> = (0..50).map(|n| item(format!("message {n}"))).collect();
        assert_eq!(within_budget(items.clone(), 64 * 1024), items);
    }

    #[test]
    fn newest_entries_are_kept_and_the_oldest_kept_one_is_cut() {
        let items: Vec<_> = (0..50)
            .map(|n| item(format!("{n}:{}", "x".repeat(10_000))))
            .collect();
        let kept = within_budget(items, 64 * 1024);
        assert!(frame_len(&kept) <= 64 * 1024, "{}", frame_len(&kept));
        assert!(kept.last().unwrap().content.starts_with("49:"));
        assert!(kept[0].content.ends_with(TRUNCATED_MARKER));
        assert!(kept[1..]
            .iter()
            .all(|i| !i.content.contains(TRUNCATED_MARKER)));
        assert!(kept.len() >= 6);
    }

    #[test]
    fn escapes_count_against_the_budget() {
        let newest = item("\u{1}\"\n".repeat(100_000));
        let kept = within_budget(vec![newest], 16 * 1024);
        assert_eq!(kept.len(), 1);
        assert!(frame_len(&kept) <= 16 * 1024, "{}", frame_len(&kept));
        assert!(kept[0].content.ends_with(TRUNCATED_MARKER));
    }
}
