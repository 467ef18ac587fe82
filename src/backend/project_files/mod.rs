//! Read access to a project's files wherever its backend keeps them: the local CLI's
//! workspace directory, or Modal's volume through `list_files` and `get_file`
//! (docs/backends.md §5.3). The editor's REST routes read through this seam, so they never
//! know which backend wrote the game.

mod local;
mod modal;
mod path;
mod readers;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

pub use local::LocalFiles;
pub use modal::ModalFiles;
pub use path::ProjectPath;
pub use readers::Readers;

/// A file's bytes as they arrive, so no file is ever held whole.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// An opened file.
pub struct FileBody {
    /// Its size, when the source tells it up front.
    pub length: Option<u64>,
    pub bytes: ByteStream,
}

/// Why a project's files could not be read. A missing file is not an error (`None`).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("Modal {endpoint}: {detail}")]
    Modal {
        endpoint: &'static str,
        detail: String,
    },
    #[error("the file list is larger than {budget} bytes")]
    ListTooLarge { budget: usize },
    #[error("workspace: {0}")]
    Io(#[from] io::Error),
}

/// A project's files, read-only.
#[async_trait]
pub trait ProjectFiles: Send + Sync {
    /// Every visible file (no hidden name at any depth), sorted; empty when the project has
    /// no files at all. The paths together stay within the configured list budget.
    async fn list(&self, user_id: Uuid, project_id: Uuid) -> Result<Vec<ProjectPath>, FilesError>;

    /// The file's bytes, `None` when it does not exist (or, locally, is not a regular file
    /// inside the project).
    async fn open(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        path: &ProjectPath,
    ) -> Result<Option<FileBody>, FilesError>;
}
