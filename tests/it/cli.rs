//! The command line a newcomer meets first: `--help` and `--version` with no configuration at
//! all (even a broken one), help for every subcommand, and `config` showing each value's layer.

use std::process::{Command, Output};

fn relay(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the relay binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_and_version_need_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // A configuration that would stop start-up: neither flag reads it.
    let broken = [("USE_MODAL", "bogus"), ("PORT", "eighty")];
    let help = relay(dir.path(), &["--help"], &broken);
    assert!(help.status.success(), "{help:?}");
    let text = stdout(&help);
    for subcommand in ["serve", "dev-token", "healthcheck", "config"] {
        assert!(
            text.contains(subcommand),
            "{subcommand} missing from:\n{text}"
        );
    }
    let version = relay(dir.path(), &["--version"], &broken);
    assert!(version.status.success());
    assert_eq!(
        stdout(&version).trim(),
        format!("dreamcore-relay {}", env!("CARGO_PKG_VERSION"))
    );
    for subcommand in ["serve", "dev-token", "healthcheck", "config"] {
        let help = relay(dir.path(), &[subcommand, "--help"], &broken);
        assert!(help.status.success(), "{subcommand} --help: {help:?}");
        assert!(
            stdout(&help).contains("Usage: dreamcore-relay"),
            "{subcommand}"
        );
    }
    // Without a flag the broken configuration is reported, naming the variable.
    let run = relay(dir.path(), &["dev-token"], &broken);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("PORT"));
    assert_eq!(
        relay(dir.path(), &["no-such-command"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn config_shows_each_value_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        "[limits]\njob_timeout_secs = 77\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "RELAY_CONFIG=relay.toml\nMAX_JOBS_TOTAL=9\nADMIN_TOKEN=dotenv-admin-token\nPORT=1111\n",
    )
    .unwrap();
    let output = relay(
        dir.path(),
        &["config"],
        &[
            ("PORT", "4000"),
            (
                "SUPABASE_JWT_SECRET",
                "env-jwt-secret-at-least-32-bytes-long",
            ),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let line = |variable: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(variable))
            .unwrap_or_else(|| panic!("{variable} missing:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(line("PORT"), ["PORT", "4000", "environment"]);
    assert_eq!(line("MAX_JOBS_TOTAL"), ["MAX_JOBS_TOTAL", "9", ".env"]);
    assert_eq!(
        line("JOB_TIMEOUT_SECS"),
        ["JOB_TIMEOUT_SECS", "77", "RELAY_CONFIG", "relay.toml"]
    );
    assert_eq!(line("HOST"), ["HOST", "127.0.0.1", "default"]);
    assert_eq!(line("ADMIN_TOKEN"), ["ADMIN_TOKEN", "[redacted]", ".env"]);
    assert_eq!(
        line("SUPABASE_JWT_SECRET"),
        ["SUPABASE_JWT_SECRET", "[redacted]", "environment"]
    );
    assert!(
        !text.contains("dotenv-admin-token")
            && !text.contains("env-jwt-secret-at-least-32-bytes-long")
    );
}
