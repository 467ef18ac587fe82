//! The one kind of path the project-file readers accept.

use std::borrow::Cow;
use std::fmt;

/// A file's path relative to a project's root, made only of plain segments: no `.`/`..`,
/// no hidden names (`.git`, `.claude`, `.style-pending.json`), no empty segment (so nothing
/// absolute), no backslash and no NUL. Anything that could leave the project or reach the
/// agent's private files is unrepresentable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectPath(Cow<'static, str>);

impl ProjectPath {
    /// The game's page.
    pub const INDEX: Self = Self(Cow::Borrowed("index.html"));
    /// The project's thumbnail, uploaded (webp) or generated (png).
    pub const THUMBNAIL_WEBP: Self = Self(Cow::Borrowed("thumbnail.webp"));
    pub const THUMBNAIL_PNG: Self = Self(Cow::Borrowed("thumbnail.png"));

    /// `raw` is already decoded: `/` is the only separator.
    pub fn parse(raw: &str) -> Option<Self> {
        let plain = |segment: &str| {
            !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['\\', '\0'])
        };
        raw.split('/')
            .all(plain)
            .then(|| Self(Cow::Owned(raw.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the path lies in the folder `dir` (given without a trailing slash).
    pub fn is_under(&self, dir: &str) -> bool {
        self.0
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for ProjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for raw in [
            "index.html",
            "assets/player.png",
            "assets/my sprite.png",
            "a/b/c.js",
        ] {
            assert_eq!(
                ProjectPath::parse(raw).map(|p| p.to_string()),
                Some(raw.to_string())
            );
        }
    }

    #[test]
    fn anything_that_could_leave_the_project_is_refused() {
        for raw in [
            "",
            "..",
            "../secret",
            "a/../../b",
            "./index.html",
            ".git/config",
            "sub/.claude/settings.json",
            "/etc/passwd",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
        ] {
            assert_eq!(ProjectPath::parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn the_named_files_are_plain_paths() {
        for named in [
            ProjectPath::INDEX,
            ProjectPath::THUMBNAIL_WEBP,
            ProjectPath::THUMBNAIL_PNG,
        ] {
            assert_eq!(ProjectPath::parse(named.as_str()), Some(named));
        }
    }

    #[test]
    fn folders_match_whole_segments() {
        let path = ProjectPath::parse("assets/x.png").unwrap();
        assert!(path.is_under("assets"));
        assert!(!path.is_under("asset"));
        assert!(!ProjectPath::parse("assets2/x.png")
            .unwrap()
            .is_under("assets"));
        assert!(!ProjectPath::parse("assets").unwrap().is_under("assets"));
    }
}
