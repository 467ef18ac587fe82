//! Project files in the local CLI's workspace, `<DATA_DIR>/users/<user>/projects/<project>`.
//! Symbolic links are followed only while they stay inside the project and lead to a
//! visible regular file; everything else reads as missing, so nothing tells a caller what
//! lies outside.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use uuid::Uuid;

use super::{FileBody, FilesError, ProjectFiles, ProjectPath};
use crate::backend::local_cli::project_dir;

/// The workspace reader.
pub struct LocalFiles {
    data_dir: PathBuf,
    list_budget: usize,
}

impl LocalFiles {
    /// `list_budget`: the most bytes of paths one listing may hold.
    pub fn new(data_dir: PathBuf, list_budget: usize) -> Self {
        Self {
            data_dir,
            list_budget,
        }
    }
}

#[async_trait]
impl ProjectFiles for LocalFiles {
    async fn list(&self, user_id: Uuid, project_id: Uuid) -> Result<Vec<ProjectPath>, FilesError> {
        let root = project_dir(&self.data_dir, user_id, project_id);
        let budget = self.list_budget;
        tokio::task::spawn_blocking(move || walk(&root, budget))
            .await
            .map_err(|e| FilesError::Io(io::Error::other(e)))?
    }

    async fn open(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        path: &ProjectPath,
    ) -> Result<Option<FileBody>, FilesError> {
        let root = project_dir(&self.data_dir, user_id, project_id);
        let relative = PathBuf::from(path.as_str());
        let opened = tokio::task::spawn_blocking(move || open_beneath(&root, &relative))
            .await
            .map_err(|e| FilesError::Io(io::Error::other(e)))?;
        match opened {
            Ok((file, length)) => {
                let reader = tokio::fs::File::from_std(file);
                Ok(Some(FileBody {
                    length: Some(length),
                    bytes: Box::pin(tokio_util::io::ReaderStream::new(reader)),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn outside() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "outside the project")
}

/// Open `relative` inside `root` for reading (see the module comment).
fn open_beneath(root: &Path, relative: &Path) -> io::Result<(File, u64)> {
    let root = root.canonicalize()?;
    let target = root.join(relative).canonicalize()?;
    let inside = target.strip_prefix(&root).map_err(|_| outside())?;
    let hidden = inside
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    if hidden {
        return Err(outside());
    }
    let file = File::open(&target)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
    }
    // A directory swapped for a link between the check and the open is caught here: the
    // kernel names the file actually opened.
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        if !opened.starts_with(&root) {
            return Err(outside());
        }
    }
    Ok((file, meta.len()))
}

/// Every visible file under `root`, sorted. Linked directories are not entered (no cycles,
/// no escape); a linked file counts when it resolves to a regular file inside `root`.
fn walk(root: &Path, budget: usize) -> Result<Vec<ProjectPath>, FilesError> {
    let root = match root.canonicalize() {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut found = Vec::new();
    let mut used = 0usize;
    let mut folders = vec![String::new()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(root.join(&folder))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let relative = if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            };
            let Some(path) = ProjectPath::parse(&relative) else {
                continue;
            };
            let kind = entry.file_type()?;
            let file = if kind.is_dir() {
                folders.push(relative);
                false
            } else if kind.is_symlink() {
                root.join(&relative)
                    .canonicalize()
                    .is_ok_and(|target| target.starts_with(&root) && target.is_file())
            } else {
                kind.is_file()
            };
            if file {
                used += path.as_str().len();
                if used > budget {
                    return Err(FilesError::ListTooLarge { budget });
                }
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[ProjectPath]) -> Vec<&str> {
        paths.iter().map(ProjectPath::as_str).collect()
    }

    #[test]
    fn walk_lists_visible_files_inside_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside_dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("assets/sub")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("index.html"), "x").unwrap();
        std::fs::write(root.join("assets/a.png"), "x").unwrap();
        std::fs::write(root.join("assets/sub/b.mp3"), "x").unwrap();
        std::fs::write(root.join("assets/.hidden"), "x").unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        std::fs::write(outside_dir.path().join("secret"), "x").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap()
        };
        link(&outside_dir.path().join("secret"), "assets/escape.txt");
        link(outside_dir.path(), "assets/escape-dir");
        link(&root.join("index.html"), "assets/copy.html");
        link(&root, "assets/loop");

        let listed = walk(&root, 4096).unwrap();
        assert_eq!(
            names(&listed),
            [
                "assets/a.png",
                "assets/copy.html",
                "assets/sub/b.mp3",
                "index.html"
            ]
        );
        assert!(matches!(
            walk(&root, 20),
            Err(FilesError::ListTooLarge { budget: 20 })
        ));
        assert!(walk(&dir.path().join("missing"), 4096).unwrap().is_empty());
    }

    #[test]
    fn open_refuses_links_out_of_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let outside_dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(outside_dir.path().join("secret"), "s").unwrap();
        std::fs::write(root.join("index.html"), "page").unwrap();
        std::os::unix::fs::symlink(outside_dir.path().join("secret"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink(outside_dir.path(), root.join("dir")).unwrap();

        assert_eq!(open_beneath(root, Path::new("index.html")).unwrap().1, 4);
        for refused in ["leak", "dir/secret", "dir", "missing"] {
            let error = open_beneath(root, Path::new(refused)).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "{refused}");
        }
    }
}
