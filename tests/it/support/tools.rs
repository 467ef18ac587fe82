//! The real tools tests drive: the installed Claude Code CLI, its OS user, and git.

use std::path::{Path, PathBuf};

pub const CLI_USER: &str = "dreamcore-cli";
pub const INSTALL_HINT: &str =
    "run `bash scripts/install-claude-cli.sh` (as root) or set CLAUDE_BIN";

/// The CLI installed by `scripts/install-claude-cli.sh`, or `CLAUDE_BIN`. Missing → the test
/// fails (never skips).
pub fn claude_bin() -> PathBuf {
    let path = std::env::var_os("CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/claude/node_modules/.bin/claude")
        });
    assert!(
        path.is_file(),
        "Claude CLI not found at {}: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// The account the CLI runs as: `dreamcore-cli` when the tests run as root (the CLI refuses
/// to run as root), else the test's own user.
pub fn cli_user() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name(CLI_USER).unwrap();
    assert!(
        user.is_some(),
        "OS user {CLI_USER} is missing: {INSTALL_HINT}"
    );
    user
}

/// git in a directory another user may own (hence `safe.directory`); trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-C",
        ])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
