//! Which game files are pages, and which a page may load on its Referer alone.
//!
//! A Referer is easy to forge outside a browser, so it opens only files a browser never
//! renders as a document of this origin (every response carries `nosniff`): images other
//! than SVG, audio, video, fonts, scripts, styles, JSON (glTF included), WebAssembly and
//! binary models. Pages, SVG (which runs scripts), XML and anything unknown need the
//! signature or the owner's token.

/// Extensions of HTML-like documents.
const PAGES: [&str; 5] = ["html", "htm", "shtml", "xhtml", "xht"];

const IMAGES: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "avif", "bmp", "ico"];
const AUDIO: &[&str] = &[
    "mp3", "ogg", "oga", "wav", "m4a", "aac", "flac", "opus", "weba",
];
const VIDEO: &[&str] = &["mp4", "webm"];
const FONTS: &[&str] = &["woff", "woff2", "ttf", "otf"];
const CODE: &[&str] = &["js", "mjs", "css", "wasm"];
const DATA: &[&str] = &["json", "map", "gltf", "glb", "bin", "ktx2"];

/// Extensions a Referer from the project's own folder may load.
const SUBRESOURCES: [&[&str]; 6] = [IMAGES, AUDIO, VIDEO, FONTS, CODE, DATA];

/// The file's extension in lower case, if it has one.
fn extension(file: &str) -> Option<String> {
    let name = file.rsplit('/').next().unwrap_or(file);
    // `.png` is a hidden name, not a PNG.
    name.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, ext)| ext.to_ascii_lowercase())
}

/// The file is an HTML-like page.
pub(super) fn is_html(file: &str) -> bool {
    extension(file).is_some_and(|ext| PAGES.contains(&ext.as_str()))
}

/// The file may be served to a request whose only credential is the Referer.
pub(super) fn loadable_by_referer(file: &str) -> bool {
    extension(file).is_some_and(|ext| SUBRESOURCES.iter().any(|kind| kind.contains(&ext.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_html_like_name_is_a_page() {
        for file in ["index.html", "a/b.HTM", "x.shtml", "x.xhtml", "deep/x.XHT"] {
            assert!(is_html(file), "{file}");
            assert!(!loadable_by_referer(file), "{file}");
        }
        assert!(!is_html("html"));
        assert!(!is_html("notes.html.txt"));
    }

    #[test]
    fn documents_and_unknown_types_need_more_than_a_referer() {
        for file in [
            "logo.svg",
            "logo.SVG",
            "feed.xml",
            "doc.pdf",
            "notes.txt",
            "no-extension",
            "assets.png/evil",
            ".png",
        ] {
            assert!(!loadable_by_referer(file), "{file}");
        }
    }

    #[test]
    fn subresources_load_by_referer() {
        for file in [
            "assets/hero.PNG",
            "a.jpeg",
            "theme.mp3",
            "js/game.js",
            "m.mjs",
            "style.css",
            "levels/1.json",
            "font.woff2",
            "engine.wasm",
            "models/cat.glb",
        ] {
            assert!(loadable_by_referer(file), "{file}");
        }
    }
}
