//! The project workspace the CLI runs in: `<data_dir>/users/<user>/projects/<project>`,
//! created on demand, owned by the CLI user, with the skills copied in (replaced, never nested).
//!
//! These steps run as the relay (often root) inside directories the CLI user controls, so they
//! never follow a symbolic link: a link planted by a previous run is removed, not written through.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Owner given to the workspace: the CLI user's uid and gid.
pub type Owner = (u32, u32);

pub fn path(data_dir: &Path, user_id: Uuid, project_id: Uuid) -> PathBuf {
    data_dir
        .join("users")
        .join(user_id.to_string())
        .join("projects")
        .join(project_id.to_string())
}

/// Create the workspace (and the directories above it) and hand it to `owner`.
pub fn prepare(
    data_dir: &Path,
    user_id: Uuid,
    project_id: Uuid,
    owner: Option<Owner>,
) -> io::Result<PathBuf> {
    // The data directory is the operator's (it may well be a link to a volume): follow it.
    fs::create_dir_all(data_dir)?;
    let mut dir = data_dir.to_path_buf();
    let chain = [
        "users".to_string(),
        user_id.to_string(),
        "projects".to_string(),
        project_id.to_string(),
    ];
    for (depth, part) in chain.iter().enumerate() {
        dir.push(part);
        ensure_dir(&dir)?;
        // `users/` is shared by every user and stays the relay's; the rest belongs to the CLI.
        if depth > 0 && depth + 1 < chain.len() {
            if let Some((uid, gid)) = owner {
                lchown(&dir, Some(uid), Some(gid))?;
            }
        }
    }
    if let Some((uid, gid)) = owner {
        chown_tree(&dir, uid, gid)?;
    }
    let config = config_dir(data_dir, user_id);
    ensure_dir(&config)?;
    if let Some((uid, gid)) = owner {
        lchown(&config, Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// The CLI's configuration directory (`CLAUDE_CONFIG_DIR`) for one user: like Modal's
/// per-user sandbox, sessions and caches never mix between users, and concurrent runs of
/// different users do not contend for one shared `~/.claude`.
pub fn config_dir(data_dir: &Path, user_id: Uuid) -> PathBuf {
    data_dir
        .join("users")
        .join(user_id.to_string())
        .join(".claude-config")
}

/// Replace `<workspace>/.claude/skills` with a fresh copy of `skills_dir`.
pub fn install_skills(workspace: &Path, skills_dir: &Path, owner: Option<Owner>) -> io::Result<()> {
    let claude_dir = workspace.join(".claude");
    ensure_dir(&claude_dir)?;
    let target = claude_dir.join("skills");
    remove_any(&target)?;
    copy_tree(skills_dir, &target)?;
    if let Some((uid, gid)) = owner {
        lchown(&claude_dir, Some(uid), Some(gid))?;
        chown_tree(&target, uid, gid)?;
    }
    Ok(())
}

/// Make `dir` a real directory: a symbolic link or a file in its place is removed first.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // 0755 whatever the relay's umask: the CLI user must be able to traverse the chain.
    fs::DirBuilder::new().mode(0o755).create(dir)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy directories and regular files (the skills are operator content; links are skipped).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        } else {
            tracing::debug!(path = %entry.path().display(), "skipping non-regular skills entry");
        }
    }
    Ok(())
}

/// `chown -R` without following links (`lchown` on links, no descent through them).
fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    lchown(root, Some(uid), Some(gid))?;
    if !fs::symlink_metadata(root)?.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_layout() {
        let user = Uuid::nil();
        let project = Uuid::max();
        assert_eq!(
            path(Path::new("/data"), user, project),
            PathBuf::from(format!("/data/users/{user}/projects/{project}"))
        );
    }

    #[test]
    fn skills_are_replaced_not_nested_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let skills = tmp.path().join("skills");
        fs::create_dir_all(skills.join("p5js-setup")).unwrap();
        fs::write(skills.join("p5js-setup/SKILL.md"), "v1").unwrap();
        let ws = prepare(&tmp.path().join("data"), Uuid::nil(), Uuid::max(), None).unwrap();
        install_skills(&ws, &skills, None).unwrap();
        fs::write(skills.join("p5js-setup/SKILL.md"), "v2").unwrap();
        install_skills(&ws, &skills, None).unwrap();
        assert_eq!(
            fs::read_to_string(ws.join(".claude/skills/p5js-setup/SKILL.md")).unwrap(),
            "v2"
        );
        assert!(!ws.join(".claude/skills/skills").exists());

        // A link planted in place of `.claude/skills` is replaced, its target left alone.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        fs::remove_dir_all(ws.join(".claude/skills")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join(".claude/skills")).unwrap();
        install_skills(&ws, &skills, None).unwrap();
        assert!(outside.join("keep").exists());
        assert!(!outside.join("p5js-setup").exists());
        assert!(ws.join(".claude/skills/p5js-setup/SKILL.md").is_file());
    }
}
