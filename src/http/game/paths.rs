//! Path safety for `/game/...`: splitting the URL into ids and a safe relative file path (the
//! file itself is opened through `backend::project_files`, which never leaves the project).

/// The raw path split into its ids and the file's decoded segments.
pub(super) struct GamePath<'a> {
    pub(super) user: &'a str,
    pub(super) project: &'a str,
    /// `None` when the tail is not a safe relative path.
    pub(super) file: Option<String>,
}

/// Splits `/game/<user>/<project>/<tail>`; an empty tail means `index.html`.
pub(super) fn split_path(raw: &str) -> Option<GamePath<'_>> {
    let rest = raw.strip_prefix("/game/")?;
    let mut parts = rest.splitn(3, '/');
    let user = parts.next()?;
    let project = parts.next()?;
    let file = match parts.next().unwrap_or("") {
        "" => Some("index.html".to_string()),
        tail => safe_relative_path(tail),
    };
    Some(GamePath {
        user,
        project,
        file,
    })
}

/// Decode a URL tail into a relative path made only of plain segments: no `.`/`..`, no
/// hidden names (`.git`, `.claude`), no empty segment (so nothing absolute), and no
/// separator, backslash or NUL smuggled in through percent-encoding.
fn safe_relative_path(tail: &str) -> Option<String> {
    let mut segments = Vec::new();
    for raw in tail.split('/') {
        let segment = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?;
        let bad =
            segment.is_empty() || segment.starts_with('.') || segment.contains(['/', '\\', '\0']);
        if bad {
            return None;
        }
        segments.push(segment.into_owned());
    }
    Some(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(safe_relative_path("js/game.js"), Some("js/game.js".into()));
        assert_eq!(
            safe_relative_path("assets/my%20sprite.png"),
            Some("assets/my sprite.png".into())
        );
    }

    #[test]
    fn traversal_and_hidden_paths_are_refused() {
        for tail in [
            "..",
            "../secret",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "a%2Fb",
            "a%5cb",
            "a\\b",
            "a%00b",
            ".git/config",
            "sub/.claude/settings.json",
            "./index.html",
            "a//b",
            "/etc/passwd",
            "%ff",
        ] {
            assert_eq!(safe_relative_path(tail), None, "{tail}");
        }
    }

    #[test]
    fn split_defaults_to_index() {
        let path = split_path("/game/u/p/").unwrap();
        assert_eq!((path.user, path.project), ("u", "p"));
        assert_eq!(path.file, Some("index.html".into()));
    }
}
