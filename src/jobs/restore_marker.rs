//! Where the "current version" chosen by the last restore is remembered (docs/protocol.md
//! §6.5): beside the workspace, never inside it, since the agent commits everything in there.

use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The marker file of one project under `DATA_DIR`.
pub fn marker_path(data_dir: &Path, user_id: Uuid, project_id: Uuid) -> PathBuf {
    data_dir
        .join("users")
        .join(user_id.to_string())
        .join("versions")
        .join(format!("{project_id}.current"))
}
