//! One reader per backend, and the choice between them.

use std::sync::Arc;

use super::{LocalFiles, ModalFiles, ProjectFiles};
use crate::backend::BackendKind;
use crate::config::Config;

/// The workspace reader and, when one could be built, the Modal reader.
pub struct Readers {
    local: Arc<LocalFiles>,
    modal: Option<Arc<ModalFiles>>,
}

impl Readers {
    /// Builds the file readers for every configured backend.
    pub fn new(config: &Config) -> Self {
        let list_budget = config.limits.file_list_max_bytes;
        let modal = ModalFiles::new(&config.modal, config.http.upstream_pool(), list_budget)
            .map_err(|e| tracing::error!(error = %e, "Modal file client unavailable"))
            .ok();
        Self {
            local: Arc::new(LocalFiles::new(config.server.data_dir.clone(), list_budget)),
            modal: modal.map(Arc::new),
        }
    }

    /// The files as `backend` keeps them: Modal's volume for Modal, else the workspace
    /// (also when no backend is usable). `None` when Modal has no client.
    pub fn for_backend(&self, backend: Option<BackendKind>) -> Option<Arc<dyn ProjectFiles>> {
        match backend {
            Some(BackendKind::Modal) => self
                .modal
                .clone()
                .map(|modal| modal as Arc<dyn ProjectFiles>),
            _ => Some(self.local.clone()),
        }
    }
}
