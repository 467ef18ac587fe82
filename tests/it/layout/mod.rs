//! The layout of `src/` stays what the README says: no import cycle between files or between
//! folders, and no file over 450 lines without a note at its top saying why (`// reason: …`).
//!
//! The checker reads the library from `src/lib.rs` and the binary from `src/main.rs` along
//! their `mod` declarations, collects every
//! `use` and every `crate::…`, `super::…`, `self::…` or child-module path in the code (comments
//! and strings left out), resolves each one to the file that defines the item — following
//! `use` re-exports, so `super::Failure` re-exported by `backend/mod.rs` from `failure.rs`
//! counts as an import of `failure.rs` — and looks for cycles among files, and among the
//! files and folders of each folder.
//!
//! A module's own file (`store/sqlite/mod.rs`, `backend/local_cli.rs`) and the files under it
//! are one unit: a child naming what its parent defines (`super::SqliteStore`) while the
//! parent calls into its children is how a module is built, so an import of an ancestor's own
//! file is not an edge. Siblings importing each other, and folders importing each other, are
//! cycles.

mod check;
mod parse;
mod synthetic;

use std::path::Path;

use check::check;

/// Files may be longer than this only with a reason at their top.
const MAX_LINES: usize = 450;
/// The reason must be within this many lines of the top.
const REASON_WITHIN: usize = 20;

#[test]
fn src_has_no_import_cycle_and_no_unexplained_long_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let report = check(&src);
    assert!(report.files > 10, "the checker found the crate: {report:?}");
    assert!(report.is_clean(), "{}", report.describe());
}
