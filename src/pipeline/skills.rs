//! Skills for a generation (docs/protocol.md §4.3 step 7, docs/backends.md §4.3): which
//! `.claude/skills/<name>/SKILL.md` files the agent must read. A model picks them (Modal
//! `detect_skills`, or the small local model); when that fails, upstream's keyword rules do.

use super::style::Dimension;

/// Every skill the relay may name: Modal's `detect_skills` allowlist plus the two the keyword
/// rules add. Nothing outside this list reaches a prompt, whatever a model answers.
pub const CATALOGUE: &[&str] = &[
    "p5js-setup",
    "p5js-input",
    "p5js-collision",
    "threejs-setup",
    "threejs-input",
    "threejs-lighting",
    "threejs-water",
    "game-ai",
    "tween-animation",
    "kawaii-colors",
    "kawaii-ui",
    "kawaii-3d",
    "visual-polish-2d",
    "visual-polish-3d",
    "image-generation",
    "vehicle-physics",
];

/// Most skills a model may pick (Modal's cap).
pub const MAX_PICKED: usize = 5;
/// Most skills the keyword rules name.
const MAX_KEYWORD: usize = 10;

fn any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// The dimension for skill selection: the framework of the existing code first, then the
/// words of the request (upstream's 3D vocabulary), else 2D.
pub fn dimension_of(message: &str, existing_code: &str) -> Dimension {
    if existing_code.contains("THREE.") || existing_code.contains("WebGLRenderer") {
        return Dimension::ThreeD;
    }
    if existing_code.contains("createCanvas(") || existing_code.contains("function setup(") {
        return Dimension::TwoD;
    }
    if three_d_words(&message.to_lowercase()) {
        Dimension::ThreeD
    } else {
        Dimension::TwoD
    }
}

fn three_d_words(lower: &str) -> bool {
    any(
        lower,
        &[
            "3d",
            "３d",
            "3次元",
            "三次元",
            "three",
            "立体",
            "webgl",
            "球",
            "ボール",
            "ball",
            "シミュレーション",
            "simulation",
            "物理",
        ],
    )
}

/// Upstream's keyword rules: the framework's setup skill, then extras by topic.
pub fn by_keywords(message: &str, available: &[String]) -> Vec<String> {
    let lower = message.to_lowercase();
    let mut picked = Vec::new();
    if three_d_words(&lower) {
        picked.push("threejs-setup");
    } else {
        picked.push("p5js-setup");
        if any(&lower, &["画像", "キャラクター", "敵", "アイテム"]) {
            picked.push("image-generation");
        }
    }
    if any(
        &lower,
        &["車", "car", "レース", "race", "ドライブ", "drive"],
    ) {
        picked.push("vehicle-physics");
    }
    if any(&lower, &["アニメーション", "animation", "gsap"]) {
        picked.push("tween-animation");
    }
    if any(&lower, &["ai", "敵", "enemy", "追いかけ", "逃げる"]) {
        picked.push("game-ai");
    }
    picked
        .into_iter()
        .filter(|name| available.iter().any(|a| a == name))
        .map(str::to_string)
        .take(MAX_KEYWORD)
        .collect()
}

/// A model's pick: the names of the first JSON array in `answer` that are available, each
/// once, with the dimension's setup skill first (when available), at most five. `None` when
/// the answer holds no JSON array of names.
pub fn from_answer(
    answer: &str,
    dimension: Dimension,
    available: &[String],
) -> Option<Vec<String>> {
    let names = answer.match_indices('[').find_map(|(at, _)| {
        let mut values =
            serde_json::Deserializer::from_str(&answer[at..]).into_iter::<Vec<serde_json::Value>>();
        values.next()?.ok()
    })?;
    let names: Vec<String> = names
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    Some(finish(names, dimension, available))
}

/// Keep available names once each, put the setup skill first, cap at five.
pub fn finish(names: Vec<String>, dimension: Dimension, available: &[String]) -> Vec<String> {
    let setup = match dimension {
        Dimension::TwoD => "p5js-setup",
        Dimension::ThreeD => "threejs-setup",
    };
    let mut picked: Vec<String> = Vec::new();
    if available.iter().any(|a| a == setup) {
        picked.push(setup.to_string());
    }
    for name in names {
        if available.contains(&name) && !picked.contains(&name) {
            picked.push(name);
        }
    }
    picked.truncate(MAX_PICKED);
    picked
}

/// The lines `- .claude/skills/<name>/SKILL.md` of the required-reading block.
pub fn skill_paths(skills: &[String]) -> String {
    skills
        .iter()
        .map(|name| format!("- .claude/skills/{name}/SKILL.md"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The progress line users see (exact prefix, docs/protocol.md §4.3 step 7).
pub fn progress_line(skills: &[String]) -> String {
    format!("Claude CLI スキル: {}", skills.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        CATALOGUE.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keyword_rules_follow_upstream() {
        assert_eq!(
            by_keywords("ネコが敵から逃げるゲーム", &all()),
            vec!["p5js-setup", "image-generation", "game-ai"]
        );
        assert_eq!(
            by_keywords("3Dのレースゲーム、アニメーション付き", &all()),
            vec!["threejs-setup", "vehicle-physics", "tween-animation"]
        );
        // Only what exists is named.
        assert_eq!(
            by_keywords("3D race", &["threejs-setup".to_string()]),
            vec!["threejs-setup"]
        );
        assert!(by_keywords("anything", &[]).is_empty());
    }

    #[test]
    fn model_answers_are_filtered_and_led_by_the_setup_skill() {
        let picked = from_answer(
            "Here: [\"game-ai\", \"../../etc\", \"game-ai\", \"tween-animation\", 7, \"kawaii-ui\", \"p5js-input\", \"p5js-collision\"]",
            Dimension::TwoD,
            &all(),
        )
        .unwrap();
        assert_eq!(
            picked,
            vec![
                "p5js-setup",
                "game-ai",
                "tween-animation",
                "kawaii-ui",
                "p5js-input"
            ]
        );
        assert_eq!(from_answer("no list here", Dimension::TwoD, &all()), None);
    }

    #[test]
    fn dimension_comes_from_code_then_words() {
        assert_eq!(
            dimension_of("2Dにして", "new THREE.Scene()"),
            Dimension::ThreeD
        );
        assert_eq!(dimension_of("ボールを転がす", ""), Dimension::ThreeD);
        assert_eq!(dimension_of("ネコ", ""), Dimension::TwoD);
    }

    #[test]
    fn prompt_lines() {
        let skills = vec!["p5js-setup".to_string(), "game-ai".to_string()];
        assert_eq!(
            skill_paths(&skills),
            "- .claude/skills/p5js-setup/SKILL.md\n- .claude/skills/game-ai/SKILL.md"
        );
        assert_eq!(
            progress_line(&skills),
            "Claude CLI スキル: p5js-setup, game-ai"
        );
    }
}
