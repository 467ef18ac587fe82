//! The checker itself, on small crates written for the purpose.

use super::check::check;
use super::MAX_LINES;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn two_files_importing_each_other_are_a_cycle() {
    let dir = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::Bee;\npub struct Ay;\n"),
        (
            "b.rs",
            "pub struct Bee;\nfn f() -> crate::a::Ay { todo!() }\n",
        ),
    ]);
    let report = check(dir.path());
    assert_eq!(report.files, 3);
    assert_eq!(report.file_cycles.len(), 1, "{report:?}");
    let text = report.describe();
    assert!(
        text.contains("a.rs → b.rs") && text.contains("b.rs → a.rs"),
        "{text}"
    );
    assert!(text.contains("b.rs:2 `crate::a::Ay`"), "{text}");
}

#[test]
fn one_way_imports_and_comments_are_no_cycle() {
    let dir = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::Bee;\n"),
        (
            "b.rs",
            "pub struct Bee;\n// crate::a::Ay in a comment\nconst S: &str = \"crate::a::Ay\";\n/* use crate::a; */\n",
        ),
    ]);
    let report = check(dir.path());
    assert!(report.is_clean(), "{}", report.describe());
    assert_eq!(report.edges, 1);
}

#[test]
fn re_exports_are_followed_to_the_defining_file() {
    // backend/mod.rs re-exports Failure from failure.rs; modal.rs uses it through
    // `super::`: an import of failure.rs, not of mod.rs, so no cycle with mod.rs.
    let dir = tree(&[
        ("lib.rs", "pub mod backend;\n"),
        (
            "backend/mod.rs",
            "mod failure;\npub mod modal;\npub use failure::Failure;\n",
        ),
        ("backend/failure.rs", "pub struct Failure;\n"),
        ("backend/modal.rs", "use super::Failure;\n"),
    ]);
    let report = check(dir.path());
    assert!(report.is_clean(), "{}", report.describe());

    // A child using what its parent defines while the parent re-exports the child: one
    // module, no cycle.
    let dir = tree(&[
        ("lib.rs", "pub mod backend;\n"),
        (
            "backend/mod.rs",
            "pub mod modal;\npub use modal::Modal;\npub trait Backend {}\n",
        ),
        (
            "backend/modal.rs",
            "pub struct Modal;\nimpl super::Backend for Modal {}\n",
        ),
    ]);
    let report = check(dir.path());
    assert!(report.is_clean(), "{}", report.describe());

    // Two children importing each other through the facade: a cycle between siblings.
    let dir = tree(&[
        ("lib.rs", "pub mod backend;\n"),
        (
            "backend/mod.rs",
            "mod failure;\npub mod modal;\npub use failure::Failure;\npub use modal::Modal;\n",
        ),
        ("backend/failure.rs", "pub struct Failure(super::Modal);\n"),
        (
            "backend/modal.rs",
            "pub struct Modal;\nfn f(_: super::Failure) {}\n",
        ),
    ]);
    let report = check(dir.path());
    assert_eq!(report.file_cycles.len(), 1, "{}", report.describe());
    let text = report.describe();
    assert!(
        text.contains("backend/failure.rs → backend/modal.rs")
            && text.contains("backend/modal.rs → backend/failure.rs"),
        "{text}"
    );
}

#[test]
fn folders_importing_each_other_are_a_cycle_even_without_a_file_cycle() {
    // jobs/runner.rs → ws/outbound.rs and ws/handlers.rs → jobs/registry.rs: no two files
    // import each other, but the folders jobs/ and ws/ do.
    let dir = tree(&[
        ("lib.rs", "pub mod jobs;\npub mod ws;\n"),
        ("jobs/mod.rs", "pub mod registry;\npub mod runner;\n"),
        ("jobs/registry.rs", "pub struct Jobs;\n"),
        ("jobs/runner.rs", "use crate::ws::outbound::Outbound;\n"),
        ("ws/mod.rs", "pub mod handlers;\npub mod outbound;\n"),
        ("ws/outbound.rs", "pub struct Outbound;\n"),
        (
            "ws/handlers.rs",
            "use crate::jobs::{registry::Jobs, self};\n",
        ),
    ]);
    let report = check(dir.path());
    assert!(report.file_cycles.is_empty(), "{}", report.describe());
    assert_eq!(report.folder_cycles.len(), 1, "{}", report.describe());
    let text = report.describe();
    assert!(
        text.contains("jobs → ws") && text.contains("ws → jobs"),
        "{text}"
    );
}

#[test]
fn relative_child_paths_and_inline_modules_resolve() {
    // `use output::Parser` in local_cli.rs names its child module; the test module's
    // `use super::*` is the file itself.
    let dir = tree(&[
        ("lib.rs", "pub mod local_cli;\n"),
        (
            "local_cli.rs",
            "mod output;\nuse output::Parser;\npub struct Cli;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() { let _ = self::super::Cli; }\n}\n",
        ),
        ("local_cli/output.rs", "pub struct Parser;\nfn g() -> super::Cli { super::Cli }\n"),
    ]);
    let report = check(dir.path());
    assert_eq!(report.files, 3);
    // local_cli.rs → output.rs counts; output.rs → local_cli.rs is a child naming its
    // parent, inside one module.
    assert_eq!(report.edges, 1, "{report:?}");
    assert!(report.is_clean(), "{}", report.describe());
}

#[test]
fn a_long_file_needs_a_reason_at_its_top() {
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    let explained =
        format!("// reason: one state machine, splitting it hides the transitions\n{long}");
    let dir = tree(&[
        ("lib.rs", "mod long;\nmod explained;\n"),
        ("long.rs", &long),
        ("explained.rs", &explained),
    ]);
    let report = check(dir.path());
    assert_eq!(
        report.long_files,
        vec![("long.rs".to_string(), MAX_LINES + 1)]
    );
}

#[test]
fn the_binary_is_checked_as_a_crate_of_its_own() {
    // main.rs's `crate::` is the binary; the library is reached by its name.
    let dir = tree(&[
        ("lib.rs", "pub mod server;\n"),
        ("server.rs", "pub struct Relay;\n"),
        (
            "main.rs",
            "mod cli;\nmod telemetry;\nuse mylib::server::Relay;\nfn main() {}\n",
        ),
        ("cli.rs", "use crate::telemetry::Init;\npub struct Cli;\n"),
        ("telemetry.rs", "pub struct Init(crate::cli::Cli);\n"),
    ]);
    let report = check(dir.path());
    assert_eq!(report.files, 5);
    assert_eq!(report.file_cycles.len(), 1, "{}", report.describe());
    assert!(report.describe().contains("cli.rs → telemetry.rs"));
}
