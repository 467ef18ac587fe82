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

/// The folder holding one project of one user under the data directory.
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

/// Replace `<workspace>/.claude/skills` with fresh copies of the `chosen` skills of
/// `skills_dir`: the ones the prompt names, so the agent reads what was picked for the request
/// and nothing else. A name that is not a folder of `skills_dir` is skipped.
pub fn install_skills(
    workspace: &Path,
    skills_dir: &Path,
    chosen: &[String],
    owner: Option<Owner>,
) -> io::Result<()> {
    let claude_dir = workspace.join(".claude");
    ensure_dir(&claude_dir)?;
    let target = claude_dir.join("skills");
    remove_any(&target)?;
    fs::DirBuilder::new().mode(0o755).create(&target)?;
    for name in chosen {
        // A plain folder name only: never a path out of `skills_dir`.
        let plain = Path::new(name).components().count() == 1
            && !name.starts_with('.')
            && !name.contains(['/', '\\']);
        let source = skills_dir.join(name);
        if !plain || !fs::symlink_metadata(&source).is_ok_and(|m| m.is_dir()) {
            tracing::warn!(skill = %name, "chosen skill is not in SKILLS_DIR; skipped");
            continue;
        }
        copy_tree(&source, &target.join(name))?;
    }
    if let Some((uid, gid)) = owner {
        lchown(&claude_dir, Some(uid), Some(gid))?;
        chown_tree(&target, uid, gid)?;
    }
    Ok(())
}

/// An empty directory per user for the short pipeline questions (intent, chat, skills): the CLI
/// runs there, away from the project's files. Created with the per-user configuration directory.
pub fn scratch(data_dir: &Path, user_id: Uuid, owner: Option<Owner>) -> io::Result<PathBuf> {
    fs::create_dir_all(data_dir)?;
    let mut dir = data_dir.to_path_buf();
    for (depth, part) in [
        "users".to_string(),
        user_id.to_string(),
        ".scratch".to_string(),
    ]
    .iter()
    .enumerate()
    {
        dir.push(part);
        ensure_dir(&dir)?;
        if depth > 0 {
            if let Some((uid, gid)) = owner {
                lchown(&dir, Some(uid), Some(gid))?;
            }
        }
    }
    let config = config_dir(data_dir, user_id);
    ensure_dir(&config)?;
    if let Some((uid, gid)) = owner {
        lchown(&config, Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// The workspace only when every component below `data_dir` is a real directory (the CLI user
/// owns them and could plant links); `None` when it does not exist yet.
fn real_workspace(data_dir: &Path, user_id: Uuid, project_id: Uuid) -> io::Result<Option<PathBuf>> {
    let dir = path(data_dir, user_id, project_id);
    let mut walked = data_dir.to_path_buf();
    for part in dir
        .strip_prefix(data_dir)
        .map_err(io::Error::other)?
        .components()
    {
        walked.push(part);
        match fs::symlink_metadata(&walked) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    walked.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(dir))
}

/// A top-level file of the workspace as text, never through a link; `None` when absent. Reads
/// at most `max_bytes`.
pub fn read_file(
    data_dir: &Path,
    user_id: Uuid,
    project_id: Uuid,
    name: &str,
    max_bytes: usize,
) -> io::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(dir) = real_workspace(data_dir, user_id, project_id)? else {
        return Ok(None);
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dir.join(name));
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max_bytes as u64).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Write a top-level file of the workspace (created if needed), owned by `owner`: written
/// beside it, then renamed over whatever had the name, so a planted link is replaced, not
/// followed.
pub fn write_file(
    data_dir: &Path,
    user_id: Uuid,
    project_id: Uuid,
    name: &str,
    content: &str,
    owner: Option<Owner>,
) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match real_workspace(data_dir, user_id, project_id)? {
        Some(dir) => dir,
        None => prepare(data_dir, user_id, project_id, owner)?,
    };
    let temp = dir.join(format!(".{name}.relay-{}", Uuid::new_v4()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temp)?;
    let written = file
        .write_all(content.as_bytes())
        .and_then(|()| match owner {
            Some((uid, gid)) => lchown(&temp, Some(uid), Some(gid)),
            None => Ok(()),
        });
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temp, dir.join(name))) {
        let _ = fs::remove_file(&temp);
        return Err(e);
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
    fn files_are_written_and_read_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (user, project) = (Uuid::nil(), Uuid::max());
        assert_eq!(
            read_file(&data, user, project, "STYLE.md", 100).unwrap(),
            None
        );
        write_file(&data, user, project, "STYLE.md", "# pastel", None).unwrap();
        assert_eq!(
            read_file(&data, user, project, "STYLE.md", 100)
                .unwrap()
                .as_deref(),
            Some("# pastel")
        );
        assert_eq!(
            read_file(&data, user, project, "STYLE.md", 3)
                .unwrap()
                .as_deref(),
            Some("# p")
        );
        let outside = tmp.path().join("secret");
        fs::write(&outside, "keep").unwrap();
        let ws = path(&data, user, project);
        fs::remove_file(ws.join("STYLE.md")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("STYLE.md")).unwrap();
        assert!(read_file(&data, user, project, "STYLE.md", 100).is_err());
        write_file(&data, user, project, "STYLE.md", "new", None).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(fs::read_to_string(ws.join("STYLE.md")).unwrap(), "new");
    }

    #[test]
    fn skills_are_replaced_not_nested_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let skills = tmp.path().join("skills");
        fs::create_dir_all(skills.join("p5js-setup")).unwrap();
        fs::write(skills.join("p5js-setup/SKILL.md"), "v1").unwrap();
        let ws = prepare(&tmp.path().join("data"), Uuid::nil(), Uuid::max(), None).unwrap();
        let chosen = ["p5js-setup".to_string()];
        install_skills(&ws, &skills, &chosen, None).unwrap();
        fs::write(skills.join("p5js-setup/SKILL.md"), "v2").unwrap();
        install_skills(&ws, &skills, &chosen, None).unwrap();
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
        install_skills(&ws, &skills, &chosen, None).unwrap();
        assert!(outside.join("keep").exists());
        assert!(!outside.join("p5js-setup").exists());
        assert!(ws.join(".claude/skills/p5js-setup/SKILL.md").is_file());
    }

    #[test]
    fn only_the_chosen_skills_are_copied_and_names_never_leave_skills_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let skills = tmp.path().join("skills");
        for name in ["p5js-setup", "threejs-setup", "game-ai"] {
            fs::create_dir_all(skills.join(name)).unwrap();
            fs::write(skills.join(name).join("SKILL.md"), name).unwrap();
        }
        fs::create_dir_all(tmp.path().join("secret")).unwrap();
        let ws = prepare(&tmp.path().join("data"), Uuid::nil(), Uuid::max(), None).unwrap();
        let chosen = ["p5js-setup", "game-ai", "../secret", "missing"].map(String::from);
        install_skills(&ws, &skills, &chosen, None).unwrap();
        let mut copied: Vec<String> = fs::read_dir(ws.join(".claude/skills"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        copied.sort();
        assert_eq!(copied, ["game-ai", "p5js-setup"]);
    }
}
