//! The script injected into a game's `index.html` (kept in `preview-script.html`) and where
//! in the page it goes.

/// Sets the asset base and reports to the editor, which listens for
/// `{type:"gameError", errors}` and `{type:"gameLoaded", success, errorCount, errors}` with
/// errors shaped `{type, message, file?, line?, column?, stack?}`.
const PREVIEW_SCRIPT: &str = include_str!("preview-script.html");

/// Byte offset just after the opening tag `<name ...>` (ASCII case-insensitive), if any.
fn after_open_tag(html: &str, name: &str) -> Option<usize> {
    let lower = html.to_ascii_lowercase();
    let needle = format!("<{name}");
    let mut from = 0;
    while let Some(found) = lower[from..].find(&needle) {
        let start = from + found;
        let next = lower.as_bytes().get(start + needle.len()).copied();
        // `<head>` or `<head lang=..>`, not `<header>`.
        if matches!(next, Some(b'>' | b'/')) || next.is_some_and(|b| b.is_ascii_whitespace()) {
            return lower[start..].find('>').map(|end| start + end + 1);
        }
        from = start + needle.len();
    }
    None
}

/// Insert the script as early as possible without pushing the page out of standards mode:
/// into `<head>`, else after `<html>`, else after the doctype, else at the very top.
pub(super) fn inject_script(html: &str) -> String {
    let at = after_open_tag(html, "head")
        .or_else(|| after_open_tag(html, "html"))
        .or_else(|| after_open_tag(html, "!doctype"))
        .unwrap_or(0);
    let mut page = String::with_capacity(html.len() + PREVIEW_SCRIPT.len());
    page.push_str(&html[..at]);
    page.push_str(PREVIEW_SCRIPT);
    page.push_str(&html[at..]);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_goes_into_head() {
        let page =
            inject_script("<!DOCTYPE html><html><HEAD lang=\"ja\"><title>x</title></head></html>");
        assert!(
            page.starts_with("<!DOCTYPE html><html><HEAD lang=\"ja\"><script>"),
            "{page}"
        );
        let page = inject_script("<!doctype html><header>h</header>");
        assert!(page.starts_with("<!doctype html><script>"), "{page}");
        let page = inject_script("<p>bare</p>");
        assert!(page.starts_with("<script>") && page.ends_with("<p>bare</p>"));
    }
}
