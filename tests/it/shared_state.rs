//! State every replica must see alike (README "Scaling"): with `GAME_SIGNING_SECRET` and the
//! JWT secret unset, replicas sharing one PostgreSQL agree on the keys the relay makes up; the
//! restore marker lives in the store. Replicas are real relays behind the deploy kit's own
//! nginx (deploy/nginx.conf, round-robin).

use crate::store_behaviour::identity;
use crate::support::balancer::Balancer;
use crate::support::fake_get_file::FakeGetFile;
use crate::support::postgres::PgDb;
use crate::support::relay::{token, Client, TestRelay};

use dreamcore_relay::auth::Identity;
use dreamcore_relay::config::Config;
use dreamcore_relay::server::development_secret;
use dreamcore_relay::store::postgres::PostgresStore;
use dreamcore_relay::store::sqlite::SqliteStore;
use dreamcore_relay::store::Store;
use serde_json::Value;
use uuid::Uuid;

const INDEX: &str = "<!DOCTYPE html><html><head><title>t</title></head><body>shared</body></html>";

/// Two replicas on one PostgreSQL database, Modal (the fake `get_file`) holding the files.
async fn two_replicas(db: &PgDb, fake: &FakeGetFile, extra: &[(&str, &str)]) -> [TestRelay; 2] {
    let url = db.relay_url();
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
    ];
    env.extend_from_slice(extra);
    [TestRelay::start(&env).await, TestRelay::start(&env).await]
}

/// The distinct replicas nginx used for the first `requests` requests, by address. nginx logs
/// a proxied WebSocket when it closes, a little after the test closed it: wait for the lines.
async fn replicas_used(balancer: &Balancer, requests: usize) -> std::collections::BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while balancer.upstreams().len() < requests && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    balancer.upstreams().into_iter().take(requests).collect()
}

async fn signed_url(base: &str, user: Uuid, project: Uuid) -> String {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/game-url/{project}"))
        .bearer_auth(token(user, 600))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["url"].as_str().unwrap().to_string()
}

async fn status_and_body(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_preview_url_signed_by_one_replica_loads_on_every_replica() {
    let db = PgDb::create().await;
    let fake = FakeGetFile::start().await;
    let [a, b] = two_replicas(&db, &fake, &[]).await;
    let balancer = Balancer::start(&[a.addr, b.addr]).await;
    let user = Uuid::new_v4();
    db.register_user(user, "player@example.com").await;
    let mut client = a.user(user).await;
    let project = client.create_project("Shared").await;
    client.close().await;
    fake.put(user, project, "index.html", INDEX.as_bytes());

    // Round-robin: two requests for a URL are signed by the two replicas.
    let lb = format!("http://{}", balancer.addr);
    let urls = [
        signed_url(&lb, user, project).await,
        signed_url(&lb, user, project).await,
    ];
    assert_eq!(
        replicas_used(&balancer, 4).await.len(),
        2,
        "{:?}",
        balancer.upstreams()
    );
    for url in &urls {
        for base in [
            format!("http://{}", a.addr),
            format!("http://{}", b.addr),
            lb.clone(),
        ] {
            let (status, body) = status_and_body(&format!("{base}{url}")).await;
            assert_eq!(status, 200, "{base}{url}: {body}");
            assert!(body.contains("shared"), "{body}");
        }
    }
    // A forged signature is still refused everywhere.
    let forged = urls[0].replace("sig=", "sig=0");
    let (status, _) = status_and_body(&format!("{lb}{forged}")).await;
    assert_eq!(status, 403);

    drop(balancer);
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn development_tokens_are_accepted_by_every_replica() {
    let db = PgDb::create().await;
    let fake = FakeGetFile::start().await;
    // No SUPABASE_URL and no JWT secret: the development secret, made up by the first replica.
    let [a, b] = two_replicas(&db, &fake, &[("SUPABASE_JWT_SECRET", "")]).await;
    let balancer = Balancer::start(&[a.addr, b.addr]).await;

    // `dreamcore-relay dev-token` with the replicas' configuration finds the same secret.
    let url = db.relay_url();
    let vars = std::collections::HashMap::from([
        (
            "DATA_DIR".to_string(),
            tempfile::tempdir().unwrap().path().display().to_string(),
        ),
        ("DATABASE_URL".to_string(), url),
    ]);
    let config = Config::load_from(None, |k| vars.get(k).cloned()).unwrap();
    let secret = development_secret(&config)
        .await
        .unwrap()
        .expect("a development secret");
    let user = Uuid::new_v4();
    db.register_user(user, "dev@example.com").await;
    let dev_token = dreamcore_relay::auth::mint_hs256(
        &secret,
        dreamcore_relay::config::DEV_ISSUER,
        user,
        "dev@example.com",
        600,
    );
    for url in [a.url(), b.url(), balancer.ws_url(), balancer.ws_url()] {
        let mut client = Client::connect(&url).await;
        let reply = client.init(&dev_token).await;
        assert_eq!(reply["type"], "init", "{url}: {reply}");
        client.close().await;
    }
    assert_eq!(
        replicas_used(&balancer, 4).await.len(),
        2,
        "{:?}",
        balancer.upstreams()
    );
    for relay in [&a, &b] {
        assert!(
            !relay.app.data_dir().join("dev-jwt-secret").exists(),
            "the development secret lives in the database, not in one DATA_DIR"
        );
    }

    drop(balancer);
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

/// One store's view of the shared-state calls, checked against a second view of the same data.
/// `who` may create projects (on PostgreSQL: registered in `auth.users`).
async fn check_shared_state(first: &dyn Store, second: &dyn Store, who: Identity) {
    let one = first.shared_secret("test-key", "from-first").await.unwrap();
    let two = second
        .shared_secret("test-key", "from-second")
        .await
        .unwrap();
    assert_eq!((one.as_str(), two.as_str()), ("from-first", "from-first"));

    first.ensure_user(&who).await.unwrap();
    let project = first.create_project(&who, "Versions").await.unwrap().id;
    assert_eq!(second.current_version(project).await.unwrap(), None);
    first
        .set_current_version(project, Some("0123456789abcdef0123456789abcdef01234567"))
        .await
        .unwrap();
    first
        .set_current_version(project, Some("89abcdef0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(
        second.current_version(project).await.unwrap().as_deref(),
        Some("89abcdef0123456789abcdef0123456789abcdef")
    );
    second.set_current_version(project, None).await.unwrap();
    assert_eq!(first.current_version(project).await.unwrap(), None);
    // Deleting the project deletes its marker with it.
    first
        .set_current_version(project, Some("0123456789abcdef0123456789abcdef01234567"))
        .await
        .unwrap();
    assert!(first.delete_project(&who, project).await.unwrap());
    assert_eq!(second.current_version(project).await.unwrap(), None);
}

#[tokio::test]
async fn postgres_replicas_share_secrets_and_the_current_version() {
    let db = PgDb::create().await;
    let first = PostgresStore::connect(&db.relay_url(), 2).await.unwrap();
    let second = PostgresStore::connect(&db.relay_url(), 2).await.unwrap();
    assert!(first.is_shared());
    let who = identity(Uuid::new_v4());
    db.register_user(who.user_id, "versions@example.com").await;
    check_shared_state(&first, &second, who).await;
    // Users of the REST API never see the relay's secrets (RLS on, no policy, no grant).
    let visible = db
        .admin
        .query_one(
            "SELECT has_table_privilege('authenticated', 'public.relay_secrets', 'SELECT')
                 OR has_table_privilege('anon', 'public.relay_secrets', 'SELECT')",
            &[],
        )
        .await
        .unwrap();
    assert!(!visible.get::<_, bool>(0));
    drop((first, second));
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_keeps_the_current_version_in_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).unwrap();
    assert!(!first.is_shared());
    check_shared_state(&first, &second, identity(Uuid::new_v4())).await;
}
