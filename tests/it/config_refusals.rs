//! Configuration refusals: every bad value names its variable, weak secrets and development
//! tokens on a public address stop start-up unless explicitly allowed, and wrong admin
//! tokens are limited per client.

use std::collections::HashMap;
use std::process::Stdio;

use dreamcore_relay::config::{env_keys, Config};

use crate::support::relay::{Client, TestRelay, SECRET};
use crate::support::relay_process::{free_port, relay_command, RelayProcess};

/// A strong HS256 secret (the shared test secret), so that nothing but `vars` can fail.
fn load(vars: &[(&str, &str)]) -> Result<Config, String> {
    let mut map: HashMap<String, String> =
        HashMap::from([("SUPABASE_JWT_SECRET".to_string(), SECRET.to_string())]);
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::load_from(None, |k| map.get(k).cloned()).map_err(|e| e.to_string())
}

fn assert_names(vars: &[(&str, &str)], key: &str) {
    match load(vars) {
        Err(message) => assert!(
            message.starts_with(&format!("{key}:")),
            "{vars:?} gave {message:?}, which does not begin with {key}"
        ),
        Ok(_) => panic!("{vars:?} was accepted"),
    }
}

#[test]
fn every_configuration_error_names_its_variable() {
    assert_names(
        &[("SUPABASE_JWT_SECRET_ENCODING", "hex")],
        "SUPABASE_JWT_SECRET_ENCODING",
    );
    assert_names(&[("LOG_FORMAT", "xml")], "LOG_FORMAT");
    assert_names(
        &[("TRUSTED_PROXIES", "10.0.0.0/8, nginx")],
        "TRUSTED_PROXIES",
    );
    assert_names(&[("ALLOW_WEAK_SECRETS", "yes")], "ALLOW_WEAK_SECRETS");
    // Every variable, with values that are wrong for most of them: whichever fails, names itself.
    let mut refused = 0;
    for key in env_keys() {
        for bad in ["nonsense", "-1", "0", "1", "true"] {
            if let Err(message) = load(&[(key, bad)]) {
                refused += 1;
                // Its own name, or another variable's that it requires, mentioning it
                // ("MODAL_ENDPOINT: required when USE_MODAL is true or auto").
                let named = message.starts_with(&format!("{key}:"))
                    || (env_keys().any(|other| message.starts_with(&format!("{other}:")))
                        && message.contains(key));
                assert!(named, "{key}={bad} gave {message:?}");
            }
        }
    }
    assert!(refused >= 60, "only {refused} bad values were refused");
}

#[test]
fn the_binary_names_the_variable_and_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let output = relay_command(data.path(), free_port(), &[("LOG_FORMAT", "xml")], None)
        .stderr(Stdio::piped())
        .output()
        .expect("relay binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LOG_FORMAT:"), "{stderr}");
}

#[test]
fn weak_secrets_are_refused_unless_explicitly_allowed() {
    let modal = [
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", "http://127.0.0.1:9/generate_game"),
    ];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("SUPABASE_JWT_SECRET", "x")], "SUPABASE_JWT_SECRET"),
        (
            vec![("SUPABASE_JWT_SECRET", "0123456789abcdef0123456789abcde")],
            "SUPABASE_JWT_SECRET",
        ),
        (
            // 30 bytes once decoded, though 40 characters written.
            vec![
                ("SUPABASE_JWT_SECRET_ENCODING", "base64"),
                (
                    "SUPABASE_JWT_SECRET",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNk",
                ),
            ],
            "SUPABASE_JWT_SECRET",
        ),
        (vec![("ADMIN_TOKEN", "a")], "ADMIN_TOKEN"),
        (vec![("ADMIN_TOKEN", "fifteen-chars!!")], "ADMIN_TOKEN"),
        (
            vec![("GAME_SIGNING_SECRET", "short")],
            "GAME_SIGNING_SECRET",
        ),
        (
            [&modal[..], &[("MODAL_INTERNAL_SECRET", "s")]].concat(),
            "MODAL_INTERNAL_SECRET",
        ),
    ];
    for (vars, key) in &cases {
        assert_names(vars, key);
        let allowed = [&vars[..], &[("ALLOW_WEAK_SECRETS", "true")]].concat();
        assert!(
            load(&allowed).is_ok(),
            "{allowed:?} refused despite ALLOW_WEAK_SECRETS"
        );
    }
    // Long enough: accepted.
    load(&[
        ("ADMIN_TOKEN", "sixteen-chars-ok"),
        ("GAME_SIGNING_SECRET", "a-32-byte-signing-key-0123456789"),
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", "http://127.0.0.1:9/generate_game"),
        ("MODAL_INTERNAL_SECRET", "sixteen-chars-ok"),
    ])
    .expect("strong secrets load");
}

#[test]
fn development_tokens_need_a_loopback_bind_or_an_explicit_override() {
    let dev = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(None, |k| map.get(k).cloned()).map_err(|e| e.to_string())
    };
    for host in ["0.0.0.0", "::", "192.0.2.10", "relay.example.com"] {
        let message = dev(&[("HOST", host)]).expect_err(host);
        assert!(message.starts_with("HOST:"), "{message}");
        assert!(
            message.contains("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND"),
            "{message}"
        );
        dev(&[("HOST", host), ("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND", "true")]).expect(host);
    }
    for host in ["127.0.0.1", "::1", "localhost"] {
        dev(&[("HOST", host)]).expect(host);
    }
    // With a real secret (or a Supabase project) there are no development tokens.
    dev(&[("HOST", "0.0.0.0"), ("SUPABASE_JWT_SECRET", SECRET)]).expect("secret");
    dev(&[
        ("HOST", "0.0.0.0"),
        ("SUPABASE_URL", "https://abc.supabase.co"),
    ])
    .expect("jwks");
}

#[tokio::test]
async fn public_bind_with_development_tokens_refuses_to_start_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let output = relay_command(data.path(), free_port(), &[("HOST", "0.0.0.0")], None)
        .stderr(Stdio::piped())
        .output()
        .expect("relay binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HOST:"), "{stderr}");

    // Allowed explicitly: it listens on every interface; we only ever connect via loopback.
    let env = [
        ("HOST", "0.0.0.0"),
        ("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND", "true"),
    ];
    let relay = RelayProcess::start(&env, None).await;
    let minted = relay_command(relay.data_dir(), relay.addr.port(), &env, None)
        .arg("dev-token")
        .stdout(Stdio::piped())
        .output()
        .expect("dev-token runs");
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).unwrap();
    let mut client = Client::connect(&format!("ws://{}/", relay.addr)).await;
    let reply = client.init(token.trim()).await;
    assert_eq!(reply["type"], "init", "{reply}");
}

#[tokio::test]
async fn wrong_admin_guesses_are_limited_per_client() {
    const TOKEN: &str = "front-door-admin-token-0123456789";
    let relay = TestRelay::start(&[
        ("ADMIN_TOKEN", TOKEN),
        ("ADMIN_MAX_FAILED_ATTEMPTS", "3"),
        ("ADMIN_FAILED_ATTEMPTS_WINDOW_SECS", "60"),
        // The test client stands for two clients behind a proxy.
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let http = reqwest::Client::new();
    let admin = |client: &'static str, token: &'static str| {
        http.get(format!("http://{}/admin/backend", relay.addr))
            .header("x-forwarded-for", client)
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(admin("203.0.113.1", "guess").await.unwrap().status(), 401);
    }
    let locked = admin("203.0.113.1", "guess").await.unwrap();
    assert_eq!(locked.status(), 429);
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Locked out means locked out: the right token does not tell the guesser it was right.
    assert_eq!(admin("203.0.113.1", TOKEN).await.unwrap().status(), 429);
    // Another client is not affected.
    assert_eq!(admin("203.0.113.2", TOKEN).await.unwrap().status(), 200);
}
