//! The project files the pipeline reads and writes (`STYLE.md`, `.style-pending.json`,
//! `SPEC.md`, `index.html`): Modal's volume through `get_file` / `apply_files`, or the local
//! workspace, whichever backend the request runs on.

use std::sync::Arc;

use uuid::Uuid;

use crate::backend::local_cli::LocalCliBackend;
use crate::backend::modal::pipeline::{ModalCallError, ModalPipeline};
use crate::backend::BackendKind;

/// A project file could not be read or written; the caller steps aside.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Modal(#[from] ModalCallError),
    #[error("workspace file: {0}")]
    Local(#[from] std::io::Error),
    #[error("no {0} backend is configured")]
    NotConfigured(&'static str),
}

/// Project files on either backend.
pub struct ProjectFiles {
    /// Modal file access, if configured.
    pub modal: Option<Arc<ModalPipeline>>,
    /// Local file access, if configured.
    pub local: Option<LocalCliBackend>,
    /// Largest file read.
    pub max_bytes: usize,
}

impl ProjectFiles {
    /// Reads a project file from the backend that holds it.
    pub async fn read(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
    ) -> Result<Option<String>, FileError> {
        match backend {
            Some(BackendKind::Modal) => {
                let modal = self
                    .modal
                    .as_ref()
                    .ok_or(FileError::NotConfigured("Modal"))?;
                Ok(modal.get_file(user_id, project_id, name).await?)
            }
            Some(BackendKind::Local) => {
                let local = self
                    .local
                    .as_ref()
                    .ok_or(FileError::NotConfigured("local"))?;
                Ok(local
                    .read_project_file(user_id, project_id, name, self.max_bytes)
                    .await?)
            }
            None => Err(FileError::NotConfigured("job")),
        }
    }

    /// Writes a project file to the backend that holds it.
    pub async fn write(
        &self,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
        content: String,
    ) -> Result<(), FileError> {
        match backend {
            Some(BackendKind::Modal) => {
                let modal = self
                    .modal
                    .as_ref()
                    .ok_or(FileError::NotConfigured("Modal"))?;
                let commit = format!("Update {name}");
                Ok(modal
                    .put_files(user_id, project_id, &[(name, &content)], &commit)
                    .await?)
            }
            Some(BackendKind::Local) => {
                let local = self
                    .local
                    .as_ref()
                    .ok_or(FileError::NotConfigured("local"))?;
                Ok(local
                    .write_project_file(user_id, project_id, name, content)
                    .await?)
            }
            None => Err(FileError::NotConfigured("job")),
        }
    }

    /// Write without waiting (the gate's bookkeeping files); failures are logged.
    pub fn write_detached(
        self: &Arc<Self>,
        backend: Option<BackendKind>,
        user_id: Uuid,
        project_id: Uuid,
        name: &'static str,
        content: String,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this
                .write(backend, user_id, project_id, name, content)
                .await
            {
                tracing::warn!(%user_id, %project_id, file = name, error = %e, "could not write the style file");
            }
        });
    }
}
