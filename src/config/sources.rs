//! Where configuration values come from, in order: the embedded `config/default.toml`, an
//! optional TOML file, then environment variables (the Express names where they exist).

use serde::de::DeserializeOwned;

use super::env_keys::{Kind, ENV_KEYS};
use super::{invalid, parse_network, BackendMode, ConfigError};

const EMBEDDED_DEFAULTS: &str = include_str!("../../config/default.toml");

/// The defaults with `file` merged over them and then `env`'s variables set, not yet typed.
pub(super) fn layered_table(
    file: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<toml::Table, ConfigError> {
    let mut table: toml::Table =
        EMBEDDED_DEFAULTS
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: "<embedded>".into(),
                reason: e.to_string(),
            })?;
    if let Some(path) = file {
        merge(&mut table, read_file(path)?);
    }
    for (env_key, path, kind) in ENV_KEYS {
        if let Some(raw) = variable(&env, env_key, *kind) {
            let value = match kind {
                Kind::Str => toml::Value::String(raw.trim().to_string()),
                Kind::Int => toml::Value::Integer(
                    raw.trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| {
                            invalid(env_key, format!("expected a whole number, got {raw:?}"))
                        })?,
                ),
                Kind::Bool => match raw.trim() {
                    "true" => toml::Value::Boolean(true),
                    "false" => toml::Value::Boolean(false),
                    _ => {
                        return Err(invalid(
                            env_key,
                            format!("expected true or false, got {raw:?}"),
                        ))
                    }
                },
                Kind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
            };
            if *env_key == "PORT" && raw.trim().parse::<u16>().is_err() {
                return Err(invalid(
                    env_key,
                    format!("expected a port number, got {raw:?}"),
                ));
            }
            if *env_key == "TRUSTED_PROXIES" {
                if let Some(bad) = raw
                    .split(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty() && parse_network(s).is_none())
                {
                    return Err(invalid(
                        env_key,
                        format!("expected IP addresses or CIDR ranges, got {bad:?}"),
                    ));
                }
            }
            if *env_key == "USE_MODAL" && BackendMode::parse_use_modal(&raw).is_none() {
                return Err(invalid(
                    env_key,
                    format!("expected true, false or auto, got {raw:?}"),
                ));
            }
            set_path(&mut table, path, value);
        }
    }
    Ok(table)
}

/// Who caused `error`: the file (or the embedded defaults) when they fail without any
/// variable, else the first environment variable that fails on its own over them.
pub(super) fn blame<C: DeserializeOwned>(
    file: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
    error: &toml::de::Error,
) -> ConfigError {
    let deserializes = |table: Result<toml::Table, ConfigError>| {
        table.is_ok_and(|table| table.try_into::<C>().is_ok())
    };
    let file_is_sound = deserializes(layered_table(file, |_| None));
    for (env_key, _, _) in ENV_KEYS.iter().filter(|_| file_is_sound) {
        if env(env_key).is_none() {
            continue;
        }
        let alone = |key: &str| if key == *env_key { env(key) } else { None };
        if !deserializes(layered_table(file, alone)) {
            return invalid(env_key, error.message());
        }
    }
    ConfigError::File {
        path: file.unwrap_or("<embedded>").to_string(),
        reason: error.message().to_string(),
    }
}

/// The text of `name` when it counts as set. An empty list does not: copying `.env.example`
/// must not wipe a default list.
pub(super) fn variable(
    env: impl Fn(&str) -> Option<String>,
    name: &str,
    kind: Kind,
) -> Option<String> {
    env(name).filter(|raw| !(matches!(kind, Kind::List) && raw.trim().is_empty()))
}

/// The TOML file named by `RELAY_CONFIG`, parsed.
pub(super) fn read_file(path: &str) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.into(),
        reason: e.to_string(),
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.into(),
            reason: e.message().to_string(),
        })
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return;
        }
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("configuration sections are tables");
    }
}
