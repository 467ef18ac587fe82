//! The HTTP front door: half-sent requests are closed, kept-alive connections wait only so
//! long, connections are capped (globally and per client, the client named by a trusted
//! proxy's X-Forwarded-For), and `/health` answers while descriptors run short.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/relay.rs"]
mod relay;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dreamcore_relay::config::{env_keys, Config};
use relay::{Client, TestRelay, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n";

/// Whether the relay closes `stream` within `limit` (anything it sends first is skipped).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One `GET /health` on a kept-alive connection: the status line and the body.
async fn health_on(stream: &mut TcpStream) -> String {
    stream.write_all(HEALTH).await.expect("request written");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response within 5 s")
            .expect("read");
        assert!(n > 0, "connection closed before the response");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("length"))
                })
                .expect("content-length");
            if text.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

async fn health_status(addr: std::net::SocketAddr) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn half_sent_request_line_is_closed_within_ten_seconds() {
    // The default settings: the finding is that nothing closed these at all.
    let relay = TestRelay::start(&[]).await;
    let opened = Instant::now();
    let mut half = TcpStream::connect(relay.addr).await.unwrap();
    half.write_all(b"GET /health HT").await.unwrap();
    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(10)).await,
        "a half-sent request line was still open after 10 s"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(10) - opened.elapsed()).await,
        "a connection that sent nothing was still open after 10 s"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", relay.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("relay_http_connections_shed_total{reason=\"header_timeout\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn keepalive_wait_and_header_read_are_separate_clocks() {
    let relay = TestRelay::start(&[
        ("HTTP_HEADER_READ_TIMEOUT_SECS", "1"),
        ("HTTP_KEEPALIVE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    assert!(health_on(&mut conn).await.starts_with("HTTP/1.1 200"));
    // Idle longer than the header clock: still open, because no request has begun.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(health_on(&mut conn).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(5)).await);
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}, before the keep-alive timeout"
    );

    // A next request that begins but never ends is on the header clock, not the keep-alive one.
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    assert!(health_on(&mut conn).await.starts_with("HTTP/1.1 200"));
    conn.write_all(b"GET /he").await.unwrap();
    let begun = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(5)).await);
    let waited = begun.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "a half-sent second request waited {waited:?}"
    );
}

#[tokio::test]
async fn connection_cap_holds_and_sheds_the_oldest_waiting_connection() {
    let relay = TestRelay::start(&[("HTTP_MAX_CONNECTIONS", "3")]).await;
    // Three WebSockets fill the cap; they are busy, so nothing can be shed for a fourth.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(Client::connect(&relay.url()).await);
    }
    let mut fourth = TcpStream::connect(relay.addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(3)).await,
        "a connection beyond the cap was kept"
    );
    assert_eq!(health_status(relay.addr).await, None);

    // A closed WebSocket gives its place back.
    sockets.pop().expect("socket").close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while health_status(relay.addr).await != Some(200) {
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // At the cap with a half-sent request holding the last place, that one is shed for
    // the new connection, and the WebSockets are untouched.
    let mut waiting = TcpStream::connect(relay.addr).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health_status(relay.addr).await, Some(200));
    assert!(closed_within(&mut waiting, Duration::from_secs(2)).await);
    for socket in &mut sockets {
        socket.send(serde_json::json!({"type":"ping"})).await;
    }
}

#[tokio::test]
async fn per_client_cap_counts_the_peer_or_the_client_a_trusted_proxy_names() {
    // Direct peers: the TCP address is the client.
    let relay = TestRelay::start(&[("HTTP_MAX_CONNECTIONS_PER_CLIENT", "2")]).await;
    let _a = Client::connect(&relay.url()).await;
    let _b = Client::connect(&relay.url()).await;
    let mut third = TcpStream::connect(relay.addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(3)).await);
    relay.stop().await;

    // Behind a trusted proxy (here: ourselves), X-Forwarded-For names the client.
    let relay = TestRelay::start(&[
        ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "2"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    let upgrade_from = |client: &str| {
        let mut request = relay.url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let _a = upgrade_from("203.0.113.1").await.expect("first socket");
    let _b = upgrade_from("198.51.100.1, 203.0.113.1")
        .await
        .expect("second socket");
    match upgrade_from("203.0.113.1").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("a third socket for one client was not refused: {other:?}"),
    }
    let _c = upgrade_from("203.0.113.2")
        .await
        .expect("another client is not affected");
}

/// The relay binary on 127.0.0.1 (or `HOST` from `env`), its own data directory and port.
struct RelayProcess {
    child: Child,
    addr: std::net::SocketAddr,
    data: tempfile::TempDir,
}

/// The relay binary's command line with an empty environment but `env`; `nofile` sets
/// `RLIMIT_NOFILE` (soft and hard) before it starts.
fn relay_command(
    data: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null());
    if let Some(nofile) = nofile {
        // SAFETY: setrlimit is async-signal-safe and only reads the struct passed to it.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RelayProcess {
    async fn start(env: &[(&str, &str)], nofile: Option<u64>) -> RelayProcess {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = relay_command(data.path(), port, env, nofile)
            .spawn()
            .expect("relay binary starts");
        let relay = RelayProcess {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while health_status(relay.addr).await != Some(200) {
            assert!(Instant::now() < deadline, "relay did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        relay
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn health_answers_with_300_half_sent_requests_under_256_descriptors() {
    // A long header clock: /health must not depend on the half-sent requests timing out.
    let relay = RelayProcess::start(
        &[
            ("SUPABASE_JWT_SECRET", SECRET),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "120"),
        ],
        Some(256),
    )
    .await;
    let mut half_sent = Vec::new();
    for _ in 0..300 {
        if let Ok(mut conn) = TcpStream::connect(relay.addr).await {
            let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            half_sent.push(conn);
        }
    }
    for attempt in 0..3 {
        let started = Instant::now();
        assert_eq!(
            health_status(relay.addr).await,
            Some(200),
            "/health attempt {attempt} failed with 300 half-sent requests open"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Some of the half-sent requests are still held: the relay sheds, it does not reset all.
    let mut still_open = 0;
    for conn in half_sent.iter_mut().rev().take(50) {
        if !closed_within(conn, Duration::from_millis(20)).await {
            still_open += 1;
        }
    }
    assert!(still_open > 0, "every half-sent request had been closed");
}

// --- configuration ------------------------------------------------------------------------

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
    assert_names(&[("SUPABASE_JWT_SECRET_ENCODING", "hex")], "SUPABASE_JWT_SECRET_ENCODING");
    assert_names(&[("LOG_FORMAT", "xml")], "LOG_FORMAT");
    assert_names(&[("TRUSTED_PROXIES", "10.0.0.0/8, nginx")], "TRUSTED_PROXIES");
    assert_names(&[("ALLOW_WEAK_SECRETS", "yes")], "ALLOW_WEAK_SECRETS");
    // Every variable, with values that are wrong for most of them: whichever fails, names itself.
    let mut refused = 0;
    for key in env_keys() {
        for bad in ["nonsense", "-1", "0", "1", "true"] {
            if let Err(message) = load(&[(key, bad)]) {
                refused += 1;
                assert!(
                    message.starts_with(&format!("{key}:")),
                    "{key}={bad} gave {message:?}"
                );
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
                ("SUPABASE_JWT_SECRET", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNk"),
            ],
            "SUPABASE_JWT_SECRET",
        ),
        (vec![("ADMIN_TOKEN", "a")], "ADMIN_TOKEN"),
        (vec![("ADMIN_TOKEN", "fifteen-chars!!")], "ADMIN_TOKEN"),
        (vec![("GAME_SIGNING_SECRET", "short")], "GAME_SIGNING_SECRET"),
        (
            [&modal[..], &[("MODAL_INTERNAL_SECRET", "s")]].concat(),
            "MODAL_INTERNAL_SECRET",
        ),
    ];
    for (vars, key) in &cases {
        assert_names(vars, key);
        let allowed = [&vars[..], &[("ALLOW_WEAK_SECRETS", "true")]].concat();
        assert!(load(&allowed).is_ok(), "{allowed:?} refused despite ALLOW_WEAK_SECRETS");
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
        assert!(message.contains("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND"), "{message}");
        dev(&[("HOST", host), ("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND", "true")]).expect(host);
    }
    for host in ["127.0.0.1", "::1", "localhost"] {
        dev(&[("HOST", host)]).expect(host);
    }
    // With a real secret (or a Supabase project) there are no development tokens.
    dev(&[("HOST", "0.0.0.0"), ("SUPABASE_JWT_SECRET", SECRET)]).expect("secret");
    dev(&[("HOST", "0.0.0.0"), ("SUPABASE_URL", "https://abc.supabase.co")]).expect("jwks");
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
    let env = [("HOST", "0.0.0.0"), ("ALLOW_DEV_TOKENS_ON_PUBLIC_BIND", "true")];
    let relay = RelayProcess::start(&env, None).await;
    let minted = relay_command(relay.data.path(), relay.addr.port(), &env, None)
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
