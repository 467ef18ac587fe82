//! Version history of a project (ws-protocol §6.4–§6.7), read from the git repository the
//! local backend commits into under `DATA_DIR`.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::connection::Connection;
use super::handlers::parse_id;
use super::protocol::{texts, ServerMessage, VersionItem};
use crate::auth::Identity;

const HIDDEN_MESSAGES: [&str; 4] = [
    "Before restore",
    "Restored to",
    "Initial project setup",
    "Migration from",
];
const MAX_VERSIONS: usize = 20;
const CURRENT_MARKER: &str = ".current-version";

pub fn is_commit_hash(raw: &str) -> bool {
    (7..=40).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

fn workspace(conn: &Connection, user_id: Uuid, project_id: Uuid) -> PathBuf {
    conn.app
        .config
        .server
        .data_dir
        .join("users")
        .join(user_id.to_string())
        .join("projects")
        .join(project_id.to_string())
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

async fn versions(dir: &Path) -> Option<(Vec<VersionItem>, Option<String>)> {
    if !dir.join(".git").exists() {
        return None;
    }
    let log = git(dir, &["log", "-n", "100", "--format=%h%x1f%s%x1f%aI"]).await?;
    let mut items = Vec::new();
    for line in log.lines() {
        let mut parts = line.split('\u{1f}');
        let (Some(hash), Some(message), Some(date)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if HIDDEN_MESSAGES.iter().any(|h| message.contains(h)) {
            continue;
        }
        let timestamp = chrono::DateTime::parse_from_rfc3339(date)
            .map(|t| crate::store::models::iso_millis(&t.with_timezone(&chrono::Utc)))
            .unwrap_or_else(|_| date.to_string());
        items.push(VersionItem {
            id: hash.to_string(),
            number: items.len() + 1,
            message: message.to_string(),
            timestamp,
            hash: hash.to_string(),
        });
        if items.len() == MAX_VERSIONS {
            break;
        }
    }
    let marker = tokio::fs::read_to_string(dir.join(CURRENT_MARKER))
        .await
        .ok()
        .map(|m| m.trim().to_string())
        .filter(|m| is_commit_hash(m));
    let head = marker.or_else(|| items.first().map(|v| v.id.clone()));
    Some((items, head))
}

/// `versionsList` for a project the caller owns. `forced` is the `getVersions` path, where
/// `autoInitialized` is always a boolean.
pub async fn send_list(conn: &Connection, who: &Identity, project_id: Uuid, forced: bool) {
    let dir = workspace(conn, who.user_id, project_id);
    let (versions, current_head) = versions(&dir).await.unwrap_or_default();
    conn.reply(ServerMessage::VersionsList {
        project_id,
        versions,
        current_head,
        auto_initialized: forced.then_some(false),
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

pub async fn list(conn: &Connection, project_id: Option<String>) {
    match owned(conn, project_id).await {
        Ok((who, id)) => send_list(conn, &who, id, true).await,
        Err(text) => conn.reply(ServerMessage::error(text)),
    }
}

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
        let dir = workspace(conn, who.user_id, id);
        if let Some(diff) = git(
            &dir,
            &["show", "--format=", "--patch", &hash, "--", "index.html"],
        )
        .await
        {
            if !diff.is_empty() {
                edits.push(serde_json::json!({ "diff": diff }));
            }
        }
    }
    conn.reply(ServerMessage::VersionEdits {
        project_id: id,
        version_hash: hash,
        edits,
        summary: String::new(),
    });
}

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
    let dir = workspace(conn, who.user_id, id);
    if !dir.join(".git").exists() {
        return conn.reply(ServerMessage::error("Git not initialized"));
    }
    conn.reply(ServerMessage::RestoreProgress {
        stage: "checkout".into(),
        message: "ファイルを復元中...".into(),
    });
    if git(&dir, &["checkout", &version, "--", "."])
        .await
        .is_none()
    {
        return conn.reply(ServerMessage::error("Failed to restore version"));
    }
    // SPEC.md that did not exist in that version must not survive the restore.
    if git(&dir, &["cat-file", "-e", &format!("{version}:SPEC.md")])
        .await
        .is_none()
    {
        let _ = tokio::fs::remove_file(dir.join("SPEC.md")).await;
    }
    if let Err(e) = tokio::fs::write(dir.join(CURRENT_MARKER), &version).await {
        tracing::warn!(error = %e, "could not write the current-version marker");
    }
    if let Err(e) = conn.app.store.mark_initialized(id).await {
        tracing::warn!(error = %e, "could not mark the project initialized");
    }
    conn.reply(ServerMessage::VersionRestored {
        project_id: id,
        version_id: version,
    });
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
