//! Version history of a project (docs/protocol.md §6.4–§6.7), read from the git repository the
//! local backend commits into under `DATA_DIR`.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::session::Connection;
use crate::auth::Identity;
use crate::backend::modal_git::ModalGit;
use crate::backend::BackendKind;
use crate::wire::protocol::{parse_id, texts, ServerMessage, VersionItem};

const HIDDEN_MESSAGES: [&str; 4] = [
    "Before restore",
    "Restored to",
    "Initial project setup",
    "Migration from",
];
const MAX_VERSIONS: usize = 20;

/// Whether `raw` looks like a git commit hash (7 to 40 hex digits).
pub fn is_commit_hash(raw: &str) -> bool {
    (7..=40).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

fn workspace(conn: &Connection, user_id: Uuid, project_id: Uuid) -> PathBuf {
    crate::backend::local_cli::project_dir(&conn.app.config.server.data_dir, user_id, project_id)
}

/// Where a project's files and history live: the backend new jobs run on decides.
enum Source<'a> {
    Local(PathBuf),
    Modal(&'a ModalGit),
}

fn source<'a>(conn: &'a Connection, user_id: Uuid, project_id: Uuid) -> Source<'a> {
    match (&conn.app.modal_git, conn.app.selector.status().current) {
        (Some(modal), Some(BackendKind::Modal)) => Source::Modal(modal),
        _ => Source::Local(workspace(conn, user_id, project_id)),
    }
}

async fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("git")
        // The workspace belongs to the CLI's OS user; reading it is still safe.
        .args(["-c", "safe.directory=*", "-C"])
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `(hash, subject, date)` newest first, and whether the history was just initialised.
async fn commits(
    source: &Source<'_>,
    user_id: Uuid,
    project_id: Uuid,
) -> Option<(Vec<(String, String, String)>, bool)> {
    match source {
        Source::Local(dir) => {
            if !dir.join(".git").exists() {
                return None;
            }
            let log = git(dir, &["log", "-n", "100", "--format=%h%x1f%s%x1f%aI"]).await?;
            let commits = log
                .lines()
                .filter_map(|line| {
                    let mut parts = line.split('\u{1f}');
                    let (hash, message, date) = (parts.next()?, parts.next()?, parts.next()?);
                    // Local mode reports UTC, as upstream's local path did.
                    let date = chrono::DateTime::parse_from_rfc3339(date)
                        .map(|t| crate::store::models::iso_millis(&t.with_timezone(&chrono::Utc)))
                        .unwrap_or_else(|_| date.to_string());
                    Some((hash.to_string(), message.to_string(), date))
                })
                .collect();
            Some((commits, false))
        }
        Source::Modal(modal) => match modal.log(user_id, project_id).await {
            Ok(log) => Some((
                log.commits
                    .into_iter()
                    .map(|c| (c.hash, c.message, c.date))
                    .collect(),
                log.auto_initialized,
            )),
            Err(e) => {
                tracing::warn!(error = %e, "version list unavailable");
                None
            }
        },
    }
}

async fn versions(
    conn: &Connection,
    user_id: Uuid,
    project_id: Uuid,
) -> Option<(Vec<VersionItem>, Option<String>, bool)> {
    let (commits, auto_initialized) =
        commits(&source(conn, user_id, project_id), user_id, project_id).await?;
    let mut items = Vec::new();
    for (hash, message, timestamp) in commits {
        if HIDDEN_MESSAGES.iter().any(|h| message.contains(h)) {
            continue;
        }
        items.push(VersionItem {
            id: hash.clone(),
            number: items.len() + 1,
            message,
            timestamp,
            hash,
        });
        if items.len() == MAX_VERSIONS {
            break;
        }
    }
    let marker = match conn.app.store.current_version(project_id).await {
        Ok(marker) => marker.filter(|m| is_commit_hash(m)),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the current version; showing the newest");
            None
        }
    };
    let head = marker.or_else(|| items.first().map(|v| v.id.clone()));
    Some((items, head, auto_initialized))
}

/// `versionsList` for a project the caller owns. `forced` is the `getVersions` path, where
/// `autoInitialized` is always a boolean.
pub async fn send_list(conn: &Connection, who: &Identity, project_id: Uuid, forced: bool) {
    let found = versions(conn, who.user_id, project_id).await;
    let auto_initialized = match &found {
        Some((_, _, auto)) => forced.then_some(*auto).or(auto.then_some(true)),
        // A failed lookup leaves the field out after selectProject (upstream does the same).
        None => forced.then_some(false),
    };
    let (versions, current_head, _) = found.unwrap_or_default();
    conn.reply(ServerMessage::VersionsList {
        project_id,
        versions,
        current_head,
        auto_initialized,
    });
}

async fn owned(
    conn: &Connection,
    project_id: Option<String>,
) -> Result<(Identity, Uuid), &'static str> {
    let who = conn.identity().ok_or(texts::INVALID_REQUEST)?;
    if project_id.as_deref().is_none_or(str::is_empty) {
        return Err(texts::INVALID_REQUEST);
    }
    let id = parse_id(project_id.as_deref()).ok_or(texts::ACCESS_DENIED)?;
    match conn.app.store.get_project(&who, id).await {
        Ok(Some(_)) => Ok((who, id)),
        _ => Err(texts::ACCESS_DENIED),
    }
}

/// Sends the project's version list.
pub async fn list(conn: &Connection, project_id: Option<String>) {
    match owned(conn, project_id).await {
        Ok((who, id)) => send_list(conn, &who, id, true).await,
        Err(text) => conn.reply(ServerMessage::error(text)),
    }
}

/// Sends the changes made in one version.
pub async fn edits(conn: &Connection, project_id: Option<String>, version_hash: Option<String>) {
    let Some(hash) = version_hash.filter(|h| !h.is_empty()) else {
        return conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
    };
    let (who, id) = match owned(conn, project_id).await {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let mut edits = Vec::new();
    if is_commit_hash(&hash) {
        let diff = match source(conn, who.user_id, id) {
            Source::Local(dir) => {
                git(
                    &dir,
                    &["show", "--format=", "--patch", &hash, "--", "index.html"],
                )
                .await
            }
            Source::Modal(modal) => modal
                .diff(who.user_id, id, &hash)
                .await
                .map_err(|e| tracing::warn!(error = %e, "version diff unavailable"))
                .ok(),
        };
        if let Some(diff) = diff.filter(|d| !d.is_empty()) {
            edits.push(serde_json::json!({ "diff": diff }));
        }
    }
    conn.reply(ServerMessage::VersionEdits {
        project_id: id,
        version_hash: hash,
        edits,
        summary: String::new(),
    });
}

/// Restores the project to an earlier version.
pub async fn restore(conn: &Connection, project_id: Option<String>, version_id: Option<String>) {
    let Some(version) = version_id.filter(|v| !v.is_empty()) else {
        return conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
    };
    if !is_commit_hash(&version) {
        return conn.reply(ServerMessage::error(texts::INVALID_VERSION_ID));
    }
    let (who, id) = match owned(conn, project_id).await {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let restored = match source(conn, who.user_id, id) {
        Source::Local(dir) => restore_local(conn, &dir, &version).await,
        Source::Modal(modal) => restore_on_modal(conn, modal, who.user_id, id, &version).await,
    };
    if let Err(text) = restored {
        return conn.reply(ServerMessage::error(text));
    }
    if let Err(e) = conn.app.store.set_current_version(id, Some(&version)).await {
        tracing::warn!(error = %e, "could not record the current version");
    }
    if let Err(e) = conn.app.store.mark_initialized(id).await {
        tracing::warn!(error = %e, "could not mark the project initialized");
    }
    conn.reply(ServerMessage::VersionRestored {
        project_id: id,
        version_id: version,
    });
}

async fn restore_local(conn: &Connection, dir: &Path, version: &str) -> Result<(), String> {
    if !dir.join(".git").exists() {
        return Err("Git not initialized".into());
    }
    conn.reply(ServerMessage::RestoreProgress {
        stage: "checkout".into(),
        message: "ファイルを復元中...".into(),
    });
    if git(dir, &["checkout", version, "--", "."]).await.is_none() {
        return Err("Failed to restore version".into());
    }
    // SPEC.md that did not exist in that version must not survive the restore.
    if git(dir, &["cat-file", "-e", &format!("{version}:SPEC.md")])
        .await
        .is_none()
    {
        let _ = tokio::fs::remove_file(dir.join("SPEC.md")).await;
    }
    Ok(())
}

async fn restore_on_modal(
    conn: &Connection,
    modal: &ModalGit,
    user_id: Uuid,
    project_id: Uuid,
    version: &str,
) -> Result<(), String> {
    conn.reply(ServerMessage::RestoreProgress {
        stage: "checkout".into(),
        message: "ファイルを復元中...".into(),
    });
    match modal.restore(user_id, project_id, version).await {
        Ok(answer) if answer.success => {
            conn.reply(ServerMessage::RestoreProgress {
                stage: "sync".into(),
                message: "ファイルを同期中...".into(),
            });
            Ok(())
        }
        Ok(answer) => Err(answer
            .error
            .unwrap_or_else(|| "Failed to restore version on Modal".into())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_commit_hash;

    #[test]
    fn commit_hashes() {
        assert!(is_commit_hash("a1b2c3d"));
        assert!(is_commit_hash(&"f".repeat(40)));
        assert!(!is_commit_hash("a1b2c3"));
        assert!(!is_commit_hash("nothing to commit"));
        assert!(!is_commit_hash("--help1"));
    }
}
