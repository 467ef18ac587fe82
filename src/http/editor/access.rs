//! Who may read a project's files, and from which backend.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::{internal_error, EditorState};
use crate::auth::Identity;
use crate::backend::project_files::ProjectFiles;
use crate::http::rest::{authenticate, json_error, parse_uuid, AuthRejection};

/// Why a route answers before reading any file.
pub(super) enum Refusal {
    Auth(AuthRejection),
    BadProjectId,
    /// Not the caller's project, or no project at all.
    NoProject,
    StoreFailed,
    NoModalClient,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(rejection) => rejection.into_response(),
            Self::BadProjectId => json_error(StatusCode::BAD_REQUEST, "Invalid project ID"),
            Self::NoProject => json_error(StatusCode::NOT_FOUND, "Project not found"),
            Self::StoreFailed => internal_error(),
            Self::NoModalClient => {
                json_error(StatusCode::BAD_GATEWAY, "Failed to fetch file from Modal")
            }
        }
    }
}

/// A project of the caller's, and the files of the backend new jobs go to.
pub(super) struct OwnedFiles {
    pub(super) user_id: Uuid,
    pub(super) project_id: Uuid,
    pub(super) files: Arc<dyn ProjectFiles>,
}

/// Owner-only file routes take the project from the path and the caller from the token.
impl FromRequestParts<EditorState> for OwnedFiles {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &EditorState,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Refusal::BadProjectId)?;
        state.owned_files(&parts.headers, &raw).await
    }
}

impl EditorState {
    /// The files of the backend new jobs go to, as the preview routes read them.
    pub(super) fn files(&self) -> Result<Arc<dyn ProjectFiles>, Refusal> {
        let backend = self.app.selector.pick().map(|b| b.kind()).ok();
        self.readers
            .for_backend(backend)
            .ok_or(Refusal::NoModalClient)
    }

    /// The caller's project named by `raw` and the reader of its files: what every owner-only
    /// file route starts from.
    pub(super) async fn owned_files(
        &self,
        headers: &HeaderMap,
        raw: &str,
    ) -> Result<OwnedFiles, Refusal> {
        let (who, project_id) = self.owned(headers, raw).await?;
        Ok(OwnedFiles {
            user_id: who.user_id,
            project_id,
            files: self.files()?,
        })
    }

    /// The caller and the project id, if the request's token is valid and `raw` names one
    /// of the caller's projects.
    async fn owned(&self, headers: &HeaderMap, raw: &str) -> Result<(Identity, Uuid), Refusal> {
        let who = authenticate(&self.app, headers)
            .await
            .map_err(Refusal::Auth)?;
        let Some(project_id) = parse_uuid(raw) else {
            return Err(Refusal::BadProjectId);
        };
        match self.app.store.get_project(&who, project_id).await {
            Ok(Some(_)) => Ok((who, project_id)),
            Ok(None) => Err(Refusal::NoProject),
            Err(e) => {
                tracing::error!(error = %e, %project_id, "project lookup failed");
                Err(Refusal::StoreFailed)
            }
        }
    }
}
