//! Top-level project files the pipeline reads and writes in the workspace (`STYLE.md`,
//! `.style-pending.json`, `SPEC.md`, `index.html`), and the skills `SKILLS_DIR` offers.

use std::path::PathBuf;

use uuid::Uuid;

use super::settings::{RunAs, Settings};
use super::workspace;

/// A top-level project file as text (`STYLE.md`, `SPEC.md`, `index.html`); `None` when
/// the workspace or the file does not exist.
pub(super) async fn read_project_file(
    settings: &Settings,
    user_id: Uuid,
    project_id: Uuid,
    name: &'static str,
    max_bytes: usize,
) -> std::io::Result<Option<String>> {
    let data_dir = settings.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        workspace::read_file(&data_dir, user_id, project_id, name, max_bytes)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Write a top-level project file, owned by the CLI user like the rest of the workspace.
pub(super) async fn write_project_file(
    settings: &Settings,
    user_id: Uuid,
    project_id: Uuid,
    name: &'static str,
    content: String,
) -> std::io::Result<()> {
    let data_dir = settings.data_dir.clone();
    let owner = match &settings.run_as {
        RunAs::User(user) => Some((user.uid, user.gid)),
        RunAs::Relay | RunAs::Missing(_) => None,
    };
    tokio::task::spawn_blocking(move || {
        workspace::write_file(&data_dir, user_id, project_id, name, &content, owner)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Names of the skills `SKILLS_DIR` provides (folders holding a `SKILL.md`).
pub(super) fn available_skills(skills_dir: Option<&PathBuf>) -> Vec<String> {
    let Some(dir) = skills_dir else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("SKILL.md").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}
