//! `dreamcore-relay config`: every setting's effective value, secrets redacted, and which
//! layer it came from (the embedded default, the `RELAY_CONFIG` file, `.env`, the environment).

use std::collections::HashMap;
use std::fmt;

use super::env_keys::ENV_KEYS;
use super::sources;
use super::{Config, ConfigError};

/// Keys whose values are [`super::Secret`]s: shown only as set or empty.
const SECRET_KEYS: &[&str] = &[
    "modal.secret",
    "auth.jwt_secret",
    "database.url",
    "admin.token",
    "game.signing_secret",
];

/// The layer a value came from; each one overrides those before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `config/default.toml`, compiled in.
    Default,
    /// The TOML file named by `RELAY_CONFIG`.
    File(String),
    /// The `.env` file (for variables the environment does not set).
    DotEnv,
    /// The process environment.
    Environment,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "RELAY_CONFIG {path}"),
            Self::DotEnv => f.write_str(".env"),
            Self::Environment => f.write_str("environment"),
        }
    }
}

/// One setting as `dreamcore-relay config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable that sets it.
    pub variable: &'static str,
    /// Its key in the TOML files (`section.name`).
    pub key: &'static str,
    /// The effective value as text; `[redacted]` for a secret that is set.
    pub value: String,
    /// Where the value came from.
    pub origin: Origin,
}

/// What the relay would run with, given the process environment `environment` and the
/// variables of the `.env` file `dotenv` (which, as at start-up, apply only where the
/// environment has no value). Fails exactly when start-up would.
pub fn explain(
    environment: impl Fn(&str) -> Option<String>,
    dotenv: &HashMap<String, String>,
) -> Result<(Option<String>, Vec<Setting>), ConfigError> {
    let lookup = |name: &str| environment(name).or_else(|| dotenv.get(name).cloned());
    let file = lookup("RELAY_CONFIG").filter(|path| !path.is_empty());
    Config::load_from(file.as_deref(), lookup)?;
    let effective = sources::layered_table(file.as_deref(), lookup)?;
    let from_file = match &file {
        Some(path) => sources::read_file(path)?,
        None => toml::Table::new(),
    };
    let settings = ENV_KEYS
        .iter()
        .map(|(variable, key, kind)| {
            let origin = if sources::variable(&environment, variable, *kind).is_some() {
                Origin::Environment
            } else if sources::variable(|name| dotenv.get(name).cloned(), variable, *kind).is_some()
            {
                Origin::DotEnv
            } else if lookup_path(&from_file, key).is_some() {
                Origin::File(file.clone().unwrap_or_default())
            } else {
                Origin::Default
            };
            let value = lookup_path(&effective, key).map_or_else(String::new, show);
            let value = if SECRET_KEYS.contains(key) && !value.is_empty() {
                "[redacted]".to_string()
            } else {
                value
            };
            Setting {
                variable,
                key,
                value,
                origin,
            }
        })
        .collect();
    Ok((file, settings))
}

/// The settings as an aligned table, one line each.
pub fn render(file: Option<&str>, settings: &[Setting]) -> String {
    let width = |f: fn(&Setting) -> usize| settings.iter().map(f).max().unwrap_or(0);
    let (variable_width, value_width) = (
        width(|s| s.variable.len()),
        width(|s| s.value.chars().count()).min(32),
    );
    let mut out = format!(
        "# effective configuration: defaults < {} < .env < environment\n",
        file.map_or("RELAY_CONFIG (unset)".to_string(), |f| format!(
            "RELAY_CONFIG {f}"
        ))
    );
    for s in settings {
        let value = if s.value.is_empty() {
            "\"\"".to_string()
        } else {
            s.value.clone()
        };
        out.push_str(&format!(
            "{:variable_width$}  {:value_width$}  {}\n",
            s.variable, value, s.origin
        ));
    }
    out
}

fn lookup_path<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (section, name) = key.split_once('.')?;
    table.get(section)?.as_table()?.get(name)
}

fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(settings: &'a [Setting], variable: &str) -> &'a Setting {
        settings
            .iter()
            .find(|s| s.variable == variable)
            .unwrap_or_else(|| panic!("{variable} missing"))
    }

    #[test]
    fn each_value_names_its_layer_and_secrets_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "[limits]\nmax_jobs_total = 7\nmax_jobs_per_user = 2\n",
        )
        .unwrap();
        let environment: HashMap<String, String> = [
            ("RELAY_CONFIG", file.display().to_string()),
            ("PORT", "8081".into()),
            ("ADMIN_TOKEN", "admin-token-value".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let dotenv: HashMap<String, String> = [
            ("PORT", "9999"),
            ("MAX_JOBS_PER_USER", "3"),
            (
                "SUPABASE_JWT_SECRET",
                "jwt-secret-value-at-least-32-bytes-long",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (shown_file, settings) = explain(|k| environment.get(k).cloned(), &dotenv).unwrap();
        assert_eq!(shown_file.as_deref(), file.to_str());
        let port = find(&settings, "PORT");
        assert_eq!(
            (port.value.as_str(), &port.origin),
            ("8081", &Origin::Environment)
        );
        let per_user = find(&settings, "MAX_JOBS_PER_USER");
        assert_eq!(
            (per_user.value.as_str(), &per_user.origin),
            ("3", &Origin::DotEnv)
        );
        let total = find(&settings, "MAX_JOBS_TOTAL");
        assert_eq!(total.value, "7");
        assert_eq!(total.origin, Origin::File(file.display().to_string()));
        let host = find(&settings, "HOST");
        assert_eq!(
            (host.value.as_str(), &host.origin),
            ("127.0.0.1", &Origin::Default)
        );
        assert_eq!(find(&settings, "ADMIN_TOKEN").value, "[redacted]");
        assert_eq!(find(&settings, "SUPABASE_JWT_SECRET").value, "[redacted]");
        assert_eq!(find(&settings, "DATABASE_URL").value, "");

        let text = render(shown_file.as_deref(), &settings);
        assert!(!text.contains("admin-token-value") && !text.contains("jwt-secret-value"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("PORT ") && l.ends_with("environment")));
        assert_eq!(text.lines().count(), ENV_KEYS.len() + 1);
    }

    #[test]
    fn a_bad_value_fails_as_start_up_would() {
        let err = explain(
            |k| (k == "PORT").then(|| "eighty".to_string()),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("PORT:"), "{err}");
    }

    /// `SECRET_KEYS` is exactly the settings whose type keeps them out of `Debug`: a marker
    /// value set through each text variable shows in the configuration's `Debug` output
    /// unless the key is a secret.
    #[test]
    fn secret_keys_are_exactly_the_secret_fields() {
        let marker = "zz-marker-value-long-enough-for-any-secret";
        let mut secrets_checked = 0;
        for (variable, key, _) in ENV_KEYS {
            let Ok(config) =
                Config::load_from(None, |k| (k == *variable).then(|| marker.to_string()))
            else {
                continue; // a value this key refuses (a number, an enum, a URL)
            };
            let hidden = !format!("{config:?}").contains(marker);
            assert_eq!(hidden, SECRET_KEYS.contains(key), "{variable} ({key})");
            secrets_checked += usize::from(hidden);
        }
        assert_eq!(secrets_checked, SECRET_KEYS.len());
    }
}
