//! Test harness: a real relay on 127.0.0.1:0 with its own data directory, and a real
//! WebSocket client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use dreamcore_relay::config::{Config, DEV_ISSUER};
use dreamcore_relay::server::{Relay, RelayHandle};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const SECRET: &str = "test-secret-for-hs256-tokens-0123456789";
pub const WAIT: Duration = Duration::from_secs(20);

/// `GET /ready` of the relay at `addr`: its status and JSON body.
pub async fn ready(addr: SocketAddr) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}/ready"))
        .await
        .expect("/ready answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("/ready json"))
}

/// `GET /metrics` of the relay at `addr`: the exposition text.
pub async fn metrics(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text")
}

/// Wait until `check` holds (what the relay does without answering, e.g. a file it writes
/// or an upstream call it makes); fails naming `what` after `WAIT`.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestRelay {
    pub addr: SocketAddr,
    /// Set when the suite runs on PostgreSQL (`RELAY_TEST_STORE=postgres`).
    pub pg: Option<crate::support::postgres::PgDb>,
    pub app: RelayHandle,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestRelay {
    pub async fn start(env: &[(&str, &str)]) -> TestRelay {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, env).await
    }

    pub async fn start_in(data_dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestRelay {
        Self::start_with_cli_env(data_dir, env, HashMap::new()).await
    }

    /// Like `start_in`; `cli_env` is what the local CLI sees of the relay's environment
    /// (falling back to the real one for anything else).
    pub async fn start_with_cli_env(
        data_dir: tempfile::TempDir,
        env: &[(&str, &str)],
        cli_env: HashMap<String, String>,
    ) -> TestRelay {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATA_DIR".into(), data_dir.path().display().to_string()),
            ("SUPABASE_JWT_SECRET".into(), SECRET.into()),
            ("JWT_LEEWAY_SECS".into(), "0".into()),
        ]);
        for (k, v) in env {
            vars.insert(k.to_string(), v.to_string());
        }
        // A test that shares one database between relays passes its own DATABASE_URL.
        let own_database = env.iter().any(|(k, _)| *k == "DATABASE_URL");
        let pg = match std::env::var("RELAY_TEST_STORE").as_deref() {
            Ok("postgres") if !own_database => {
                let db = crate::support::postgres::PgDb::create().await;
                vars.insert("DATABASE_URL".into(), db.relay_url());
                Some(db)
            }
            _ => None,
        };
        let config = Config::load_from(None, |k| vars.get(k).cloned()).expect("test config");
        let source = move |name: &str| {
            cli_env
                .get(name)
                .map(std::ffi::OsString::from)
                .or_else(|| std::env::var_os(name))
        };
        let relay = Relay::build_with_env(config, &source)
            .await
            .expect("relay builds");
        let app = relay.handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(relay.serve(listener, async move {
            let _ = rx.await;
        }));
        TestRelay {
            addr,
            pg,
            app,
            data_dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A relay whose backend is the fake Modal `generate_game` at `url` (`USE_MODAL=true`).
    pub async fn start_modal(url: &str, secret: &str, extra: &[(&str, &str)]) -> TestRelay {
        let mut env = vec![
            ("USE_MODAL", "true"),
            ("MODAL_ENDPOINT", url),
            ("MODAL_INTERNAL_SECRET", secret),
        ];
        env.extend_from_slice(extra);
        Self::start(&env).await
    }

    /// Where this relay keeps a project's files (the local CLI's working directory).
    pub fn workspace(&self, user: Uuid, project: Uuid) -> std::path::PathBuf {
        dreamcore_relay::backend::local_cli::project_dir(self.app.data_dir(), user, project)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Begin the drain (like SIGTERM) and wait for the server to stop.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(WAIT, server).await;
        }
        if let Some(db) = self.pg.take() {
            db.drop_db().await;
        }
        self.data_dir
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await
    }

    /// A token for `user`, who exists in `auth.users` when the store is PostgreSQL.
    pub async fn token_for(&self, user: Uuid) -> String {
        if let Some(db) = &self.pg {
            db.register_user(user, &format!("{user}@example.com")).await;
        }
        token(user, 3600)
    }

    /// A connected, initialised client for `user`.
    pub async fn user(&self, user: Uuid) -> Client {
        let mut client = self.client().await;
        let reply = client.init(&self.token_for(user).await).await;
        assert_eq!(reply["type"], "init", "{reply}");
        client
    }
}

pub fn token(user: Uuid, ttl_secs: i64) -> String {
    dreamcore_relay::auth::mint_hs256(
        SECRET.as_bytes(),
        DEV_ISSUER,
        user,
        "player@example.com",
        ttl_secs,
    )
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// How long one frame may take (`WAIT` unless a test needs longer).
    wait: Duration,
}

#[derive(Debug, PartialEq)]
pub enum Received {
    Json(Value),
    Closed(Option<(u16, String)>),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Self::try_connect(url).await.expect("ws connect")
    }

    /// `None` when the handshake fails (a refused connection, a 502 from a proxy).
    pub async fn try_connect(url: &str) -> Option<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        Some(Client { ws, wait: WAIT })
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("send");
    }

    /// Next text frame as JSON, or the close.
    pub async fn next(&mut self) -> Received {
        loop {
            let item = tokio::time::timeout(self.wait, self.ws.next())
                .await
                .expect("frame within deadline");
            match item {
                Some(Ok(Message::Text(t))) => {
                    return Received::Json(serde_json::from_str(&t).expect("json frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(None),
            }
        }
    }

    /// Allow each frame this long: for steps that run the real CLI more than once on a
    /// loaded machine.
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(v) => v,
            Received::Closed(c) => panic!("socket closed while a frame was expected: {c:?}"),
        }
    }

    /// Frames until one of type `kind` (inclusive).
    pub async fn recv_until(&mut self, kind: &str) -> Vec<Value> {
        self.recv_until_any(&[kind]).await
    }

    /// Frames until one whose type is any of `kinds` (inclusive), e.g. a job's end of
    /// whichever kind.
    pub async fn recv_until_any(&mut self, kinds: &[&str]) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.recv().await;
            let done = kinds.contains(&v["type"].as_str().unwrap_or_default());
            seen.push(v);
            if done {
                return seen;
            }
        }
    }

    pub async fn init(&mut self, token: &str) -> Value {
        self.send(json!({"type":"init","access_token":token,"sessionId":"test"}))
            .await;
        self.recv().await
    }

    pub async fn create_project(&mut self, name: &str) -> Uuid {
        self.send(json!({"type":"createProject","name":name})).await;
        let reply = self
            .recv_until("projectCreated")
            .await
            .pop()
            .expect("reply");
        Uuid::parse_str(reply["project"]["id"].as_str().expect("id")).expect("uuid")
    }

    pub async fn select(&mut self, project: Uuid) -> Value {
        self.send(json!({"type":"selectProject","projectId":project}))
            .await;
        self.recv_until("projectSelected")
            .await
            .pop()
            .expect("reply")
    }

    /// Wait for a WebSocket ping; a text frame or a close before it fails the test.
    pub async fn expect_ping(&mut self) {
        loop {
            let item = tokio::time::timeout(self.wait, self.ws.next())
                .await
                .expect("ping within deadline");
            match item {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    }

    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next().await {
                Received::Closed(c) => return c,
                Received::Json(_) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Frames of one job, without `progress` (whose order relative to `stream` upstream never
/// guaranteed) and without ids and times.
pub fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The text of every `stream` frame, concatenated in arrival order.
pub fn stream_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "stream")
        .map(|f| f["content"].as_str().unwrap_or_default())
        .collect()
}
