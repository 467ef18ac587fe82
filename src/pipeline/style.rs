//! The style gate (docs/protocol.md §4.2 steps 3, 4 and 6): a new game that names 2D or 3D
//! first gets the style picker; the pick is written to `STYLE.md` and its guide joins the
//! request. Presets come from `config/pipeline/styles.toml` (operator-editable).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::protocol::StyleCard;

const EMBEDDED: &str = include_str!("../../config/pipeline/styles.toml");
const DEFAULT_PATH: &str = "config/pipeline/styles.toml";

/// The project file that records the decided style (or the skip marker).
pub const STYLE_FILE: &str = "STYLE.md";
/// The project file that remembers an open style question across reconnects.
pub const PENDING_FILE: &str = ".style-pending.json";
/// What `STYLE.md` holds after the user skipped the picker, so it is not offered again.
pub const SKIPPED_MARKER: &str = "# SKIPPED\n\nThe user chose no visual style.\n";
/// The reminder while a picker is open (exact text, docs/protocol.md §3.14).
pub const CHOOSE_REMINDER: &str = "スタイルを選択してください。";

/// Whether a game is 2D or 3D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    TwoD,
    ThreeD,
}

impl Dimension {
    /// The dimension as it appears on the wire ("2d" or "3d").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TwoD => "2d",
            Self::ThreeD => "3d",
        }
    }

    /// As upstream reads `selectedStyle.dimension`: `3d` is 3D, anything else 2D.
    pub fn from_wire(value: &str) -> Self {
        if value == "3d" {
            Self::ThreeD
        } else {
            Self::TwoD
        }
    }
}

/// One preset: what the card shows and the guide the agent follows.
#[derive(Debug, Clone, Deserialize)]
pub struct StylePreset {
    /// Stable id the client sends back.
    pub id: String,
    /// Name shown to the user.
    pub name: String,
    /// Style guide text given to the model.
    pub guide: String,
}

#[derive(Deserialize)]
struct PresetFile {
    styles_2d: Vec<StylePreset>,
    styles_3d: Vec<StylePreset>,
}

/// Why the style catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("STYLE_PRESETS {path}: {reason}")]
pub struct StylesError {
    path: String,
    reason: String,
}

/// The presets of both dimensions with their card images.
#[derive(Debug, Clone)]
pub struct StyleCatalog {
    two_d: Vec<StylePreset>,
    three_d: Vec<StylePreset>,
    images: HashMap<(Dimension, String), String>,
}

impl StyleCatalog {
    /// Read the presets (the embedded copy when the default path does not exist) and find
    /// each card's image under `<public_dir>/images/styles/<dimension>/<folder>/<id>.webp|png`.
    pub fn load(path: &Path, public_dir: Option<&Path>) -> Result<Self, StylesError> {
        let fail = |reason: String| StylesError {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                EMBEDDED.to_string()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let file: PresetFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        for (dimension, presets) in [("2d", &file.styles_2d), ("3d", &file.styles_3d)] {
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = presets.iter().find(|p| !seen.insert(p.id.as_str())) {
                return Err(fail(format!(
                    "{dimension} style id {:?} appears twice",
                    twice.id
                )));
            }
        }
        let mut catalog = Self {
            two_d: file.styles_2d,
            three_d: file.styles_3d,
            images: HashMap::new(),
        };
        if let Some(public) = public_dir {
            catalog.find_images(public);
        }
        Ok(catalog)
    }

    fn find_images(&mut self, public_dir: &Path) {
        for dimension in [Dimension::TwoD, Dimension::ThreeD] {
            let root = public_dir
                .join("images")
                .join("styles")
                .join(dimension.as_str());
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            // Folder order decides which genre's picture a style shows; sorted, so it is stable.
            let mut folders: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect();
            folders.sort();
            let ids: Vec<String> = self
                .presets(dimension)
                .iter()
                .map(|p| p.id.clone())
                .collect();
            for id in ids {
                let found = folders.iter().find_map(|folder| {
                    ["webp", "png"].iter().find_map(|ext| {
                        root.join(folder)
                            .join(format!("{id}.{ext}"))
                            .is_file()
                            .then(|| {
                                format!("/images/styles/{}/{folder}/{id}.{ext}", dimension.as_str())
                            })
                    })
                });
                if let Some(url) = found {
                    self.images.insert((dimension, id), url);
                }
            }
        }
    }

    fn presets(&self, dimension: Dimension) -> &[StylePreset] {
        match dimension {
            Dimension::TwoD => &self.two_d,
            Dimension::ThreeD => &self.three_d,
        }
    }

    /// The cards of `styleOptions`, in preset order.
    pub fn cards(&self, dimension: Dimension) -> Vec<StyleCard> {
        self.presets(dimension)
            .iter()
            .map(|p| StyleCard {
                id: p.id.clone(),
                name: p.name.clone(),
                image_url: self.images.get(&(dimension, p.id.clone())).cloned(),
            })
            .collect()
    }

    /// The preset with this id for this dimension, if any.
    pub fn find(&self, dimension: Dimension, id: &str) -> Option<&StylePreset> {
        self.presets(dimension).iter().find(|p| p.id == id)
    }
}

/// `STYLE.md` for a picked preset: a title with the style's name, its id and dimension, then
/// the guide.
pub fn style_file(preset: &StylePreset, dimension: Dimension) -> String {
    format!(
        "# ビジュアルスタイル: {}\n\nID: {}\nDimension: {}\n\n{}\n",
        preset.name,
        preset.id,
        dimension.as_str(),
        preset.guide.trim()
    )
}

/// The dimension a request for a new game names, when it is one: a creation word (`作って`,
/// `作成`, `create`, `ゲーム`) and an explicit `2d`/`3d` (half- or full-width digit), any case.
/// 3D wins when both appear.
pub fn requested_dimension(content: &str) -> Option<Dimension> {
    let lower = content.to_lowercase();
    let creation = ["作って", "作成", "create", "ゲーム"]
        .iter()
        .any(|k| lower.contains(k));
    if !creation {
        return None;
    }
    if lower.contains("3d") || lower.contains("３d") {
        Some(Dimension::ThreeD)
    } else if lower.contains("2d") || lower.contains("２d") {
        Some(Dimension::TwoD)
    } else {
        None
    }
}

/// An open style question on one socket (docs/protocol.md §4.2 step 3a).
#[derive(Debug, Clone)]
pub struct PendingStyle {
    armed_at: Instant,
    project_id: Uuid,
}

impl PendingStyle {
    /// A style choice waiting for the user, started now.
    pub fn new(project_id: Uuid) -> Self {
        Self {
            armed_at: Instant::now(),
            project_id,
        }
    }

    /// Still open for this project (younger than `ttl`).
    pub fn is_open_for(&self, project_id: Uuid, ttl: Duration) -> bool {
        self.project_id == project_id && self.armed_at.elapsed() < ttl
    }
}

/// The content of `.style-pending.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingFile {
    /// "2d" or "3d".
    pub dimension: String,
    /// The message that was waiting for a style choice.
    pub original_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_requests_name_their_dimension() {
        assert_eq!(
            requested_dimension("2Dのネコが走るゲームを作って"),
            Some(Dimension::TwoD)
        );
        assert_eq!(
            requested_dimension("Create a 3D racing game"),
            Some(Dimension::ThreeD)
        );
        assert_eq!(
            requested_dimension("２Dと3Dのゲーム"),
            Some(Dimension::ThreeD)
        );
        assert_eq!(requested_dimension("ネコのゲームを作って"), None);
        assert_eq!(requested_dimension("2Dにして"), None);
    }

    #[test]
    fn embedded_presets_have_the_upstream_counts_and_unique_ids() {
        let catalog = StyleCatalog::load(Path::new(DEFAULT_PATH), None).unwrap();
        assert_eq!(catalog.cards(Dimension::TwoD).len(), 19);
        assert_eq!(catalog.cards(Dimension::ThreeD).len(), 12);
        let retro = catalog.find(Dimension::TwoD, "retro").unwrap();
        assert_eq!(retro.name, "レトロドット絵");
        assert!(catalog.find(Dimension::ThreeD, "retro").is_none());
        let file = style_file(retro, Dimension::TwoD);
        assert!(file
            .starts_with("# ビジュアルスタイル: レトロドット絵\n\nID: retro\nDimension: 2d\n\n"));
    }

    #[test]
    fn card_images_come_from_the_first_genre_folder_holding_one() {
        let public = tempfile::tempdir().unwrap();
        let action = public.path().join("images/styles/2d/action");
        let rpg = public.path().join("images/styles/2d/rpg");
        std::fs::create_dir_all(&action).unwrap();
        std::fs::create_dir_all(&rpg).unwrap();
        std::fs::write(rpg.join("kawaii.webp"), b"x").unwrap();
        std::fs::write(action.join("retro.png"), b"x").unwrap();
        std::fs::write(rpg.join("retro.webp"), b"x").unwrap();
        let catalog = StyleCatalog::load(Path::new(DEFAULT_PATH), Some(public.path())).unwrap();
        let cards = catalog.cards(Dimension::TwoD);
        let url = |id: &str| cards.iter().find(|c| c.id == id).unwrap().image_url.clone();
        assert_eq!(
            url("kawaii").as_deref(),
            Some("/images/styles/2d/rpg/kawaii.webp")
        );
        assert_eq!(
            url("retro").as_deref(),
            Some("/images/styles/2d/action/retro.png")
        );
        assert_eq!(url("neon"), None);
    }

    #[test]
    fn a_pending_choice_lives_five_minutes_for_its_project() {
        let project = Uuid::new_v4();
        let pending = PendingStyle::new(project);
        assert!(pending.is_open_for(project, Duration::from_secs(300)));
        assert!(!pending.is_open_for(Uuid::new_v4(), Duration::from_secs(300)));
        assert!(!pending.is_open_for(project, Duration::ZERO));
    }
}
