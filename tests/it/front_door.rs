//! The HTTP front door: half-sent requests are closed, kept-alive connections wait only so
//! long, connections are capped (globally and per client, the client named by a trusted
//! proxy's X-Forwarded-For), and `/health` answers while descriptors run short.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::relay::{metrics, Client, TestRelay, SECRET};
use crate::support::relay_process::{health_status, RelayProcess};

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
    let metrics = metrics(relay.addr).await;
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

#[tokio::test]
async fn shutdown_does_not_wait_for_half_sent_requests() {
    let relay = TestRelay::start(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "60")]).await;
    let mut half = TcpStream::connect(relay.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    relay.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the drain waited {:?} for a request that was never sent",
        stopping.elapsed()
    );
    assert!(closed_within(&mut half, Duration::from_secs(1)).await);
}
