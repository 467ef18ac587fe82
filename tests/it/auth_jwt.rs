//! Access-token verification with real crypto: HS256 with a shared secret, ES256/RS256 from a
//! JWKS served by an in-process axum server that counts its requests.
//!
//! Key fixtures (test-only, generated with openssl): `es256-a.pem`, `es256-b.pem` (P-256,
//! PKCS#8), `rs256.pem` (RSA 2048, PKCS#8) and its public key as `rs256-public.{pem,der}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dreamcore_relay::auth::{
    mint_hs256, resolve_hs256_secret, AuthError, Verifier, DEV_SECRET_FILE,
};
use dreamcore_relay::config::{AuthConfig, Secret, SecretEncoding, DEV_ISSUER};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";
const USER: &str = "8c1d2e3f-4a5b-4c6d-8e7f-901234567890";
const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

const ES256_A: &[u8] = include_bytes!("fixtures/es256-a.pem");
const ES256_B: &[u8] = include_bytes!("fixtures/es256-b.pem");
const RS256: &[u8] = include_bytes!("fixtures/rs256.pem");
const RS256_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/rs256-public.pem");
const RS256_PUBLIC_DER: &[u8] = include_bytes!("fixtures/rs256-public.der");

// ---------------------------------------------------------------- JWKS server

#[derive(Clone)]
enum Mode {
    Serve(Value),
    Down,
    Hang,
}

#[derive(Clone)]
struct Jwks {
    hits: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    /// `http://127.0.0.1:<port>/`, with the trailing slash operators often leave in SUPABASE_URL.
    base: String,
}

impl Jwks {
    async fn start(mode: Mode) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let jwks = Self { hits, mode, base };
        let app = Router::new()
            .route(JWKS_PATH, get(serve_jwks))
            .with_state(jwks.clone());
        // Dropped with the test's runtime.
        tokio::spawn(async move { axum::serve(listener, app).await });
        jwks
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn issuer(&self) -> String {
        format!("{}auth/v1", self.base)
    }

    async fn wait_for_hits(&self, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hits() < at_least {
            assert!(
                Instant::now() < deadline,
                "JWKS never fetched {at_least} times"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn serve_jwks(State(jwks): State<Jwks>) -> Response {
    jwks.hits.fetch_add(1, Ordering::SeqCst);
    let mode = jwks.mode.lock().unwrap().clone();
    match mode {
        Mode::Serve(body) => {
            // A slow endpoint, so concurrent verifications really overlap the fetch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Json(body).into_response()
        }
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Hang => std::future::pending().await,
    }
}

// ---------------------------------------------------------------- keys and tokens

fn es_a() -> EncodingKey {
    EncodingKey::from_ec_pem(ES256_A).unwrap()
}
fn es_b() -> EncodingKey {
    EncodingKey::from_ec_pem(ES256_B).unwrap()
}
fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RS256).unwrap()
}

/// A JWKS entry the way Supabase publishes it (kid, alg, key_ops, ext).
fn jwk(kid: &str, key: &EncodingKey, alg: Algorithm) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    let mut value = serde_json::to_value(jwk).unwrap();
    value["key_ops"] = json!(["verify"]);
    value["ext"] = json!(true);
    value
}

fn key_set(entries: &[Value]) -> Mode {
    Mode::Serve(json!({ "keys": entries }))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a Supabase user access token.
fn claims(issuer: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "sub": USER,
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "cat@example.com",
        "phone": "",
        "app_metadata": { "provider": "google", "providers": ["google"] },
        "user_metadata": { "full_name": "Space Cat", "avatar_url": "https://example.com/cat.png" },
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{ "method": "oauth", "timestamp": now }],
        "session_id": "5d1e4c8a-0f3b-4b7e-9a2d-6c5b4a392817",
        "is_anonymous": false
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

/// A token with an arbitrary header and signature, for algorithms jsonwebtoken will not sign.
fn raw_token(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// ---------------------------------------------------------------- verifier set-up

fn config(supabase_url: &str) -> AuthConfig {
    AuthConfig {
        supabase_url: supabase_url.to_string(),
        jwt_secret: Secret::default(),
        jwt_secret_encoding: SecretEncoding::Raw,
        issuers: Vec::new(),
        jwks_url: String::new(),
        leeway_secs: 30,
        jwks_ttl_secs: 600,
        jwks_refetch_cooldown_secs: 30,
        jwks_fetch_timeout_secs: 5,
        jwks_max_stale_secs: 1200,
        init_timeout_secs: 10,
    }
}

fn verifier(config: &AuthConfig, secret: Option<&[u8]>) -> Verifier {
    Verifier::new(config, secret.map(<[u8]>::to_vec), reqwest::Client::new())
}

/// A project with HS256 enabled and a JWKS holding ES256 key "a" and RS256 key "r".
async fn project() -> (Jwks, Verifier) {
    let jwks = Jwks::start(key_set(&[
        jwk("a", &es_a(), Algorithm::ES256),
        jwk("r", &rsa(), Algorithm::RS256),
    ]))
    .await;
    let verifier = verifier(&config(&jwks.base), Some(SECRET));
    (jwks, verifier)
}

async fn rejected(verifier: &Verifier, token: &str) -> AuthError {
    match verifier.verify(token).await {
        Ok(identity) => panic!("accepted a token it should refuse: {identity:?}"),
        Err(err) => err,
    }
}

fn assert_invalid_claims(err: &AuthError) {
    assert!(matches!(err, AuthError::InvalidClaims(_)), "{err:?}");
    assert_eq!(err.client_message(), "Token validation failed");
}

fn assert_unsupported(err: &AuthError) {
    assert!(matches!(err, AuthError::UnsupportedAlgorithm(_)), "{err:?}");
    assert_eq!(err.client_message(), "Invalid access token");
}

// ---------------------------------------------------------------- tests

#[test]
fn verifier_is_shareable() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Verifier>();
}

#[tokio::test]
async fn hs256_token_yields_identity() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    let identity = verifier.verify(&hs256(&claims)).await.unwrap();
    assert_eq!(identity.user_id, Uuid::parse_str(USER).unwrap());
    assert_eq!(identity.email.as_deref(), Some("cat@example.com"));
    assert_eq!(identity.expires_at, claims["exp"].as_i64().unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(&identity.claims).unwrap(),
        claims
    );
    assert_eq!(identity.display_name().as_deref(), Some("Space Cat"));
    assert_eq!(verifier.leeway_secs(), 30);
    // HS256 never consults the JWKS.
    assert_eq!(jwks.hits(), 0);

    let phone_user = with(claims, "email", json!(""));
    let identity = verifier.verify(&hs256(&phone_user)).await.unwrap();
    assert_eq!(identity.email, None);
}

#[tokio::test]
async fn hs256_rejected_without_secret() {
    let jwks = Jwks::start(key_set(&[])).await;
    let verifier = verifier(&config(&jwks.base), None);
    let err = rejected(&verifier, &hs256(&claims(&jwks.issuer()))).await;
    assert_unsupported(&err);
}

#[tokio::test]
async fn es256_and_rs256_verify_from_jwks() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    let es = sign(Algorithm::ES256, Some("a"), &claims, &es_a());
    let rs = sign(Algorithm::RS256, Some("r"), &claims, &rsa());
    for token in [&es, &rs, &es, &rs] {
        let identity = verifier.verify(token).await.unwrap();
        assert_eq!(identity.user_id.to_string(), USER);
    }
    assert_eq!(jwks.hits(), 1, "the set is cached");

    // A kid names a key, it does not vouch for a signature made with another one.
    let forged = sign(Algorithm::ES256, Some("a"), &claims, &es_b());
    assert_eq!(rejected(&verifier, &forged).await, AuthError::BadSignature);
    let mut tampered: Vec<&str> = es.split('.').collect();
    let other_payload =
        URL_SAFE_NO_PAD.encode(with(claims.clone(), "sub", json!(Uuid::new_v4())).to_string());
    tampered[1] = &other_payload;
    assert_eq!(
        rejected(&verifier, &tampered.join(".")).await,
        AuthError::BadSignature
    );

    let no_kid = sign(Algorithm::ES256, None, &claims, &es_a());
    assert_eq!(
        rejected(&verifier, &no_kid).await,
        AuthError::UnknownKey(None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_rotation_refetches_exactly_once() {
    let jwks = Jwks::start(key_set(&[jwk("a", &es_a(), Algorithm::ES256)])).await;
    let mut config = config(&jwks.base);
    config.jwks_refetch_cooldown_secs = 0;
    let verifier = verifier(&config, None);
    let claims = claims(&jwks.issuer());
    verifier
        .verify(&sign(Algorithm::ES256, Some("a"), &claims, &es_a()))
        .await
        .unwrap();
    assert_eq!(jwks.hits(), 1);

    // Supabase publishes the standby key, then starts signing with it.
    jwks.set(key_set(&[
        jwk("a", &es_a(), Algorithm::ES256),
        jwk("b", &es_b(), Algorithm::ES256),
    ]));
    let token_b = sign(Algorithm::ES256, Some("b"), &claims, &es_b());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token_b.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        jwks.hits(),
        2,
        "concurrent unknown-kid requests share one fetch"
    );

    // The previous key stays trusted, from the cache.
    verifier
        .verify(&sign(Algorithm::ES256, Some("a"), &claims, &es_a()))
        .await
        .unwrap();
    verifier.verify(&token_b).await.unwrap();
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_spray_within_cooldown_fetches_nothing() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    verifier
        .verify(&sign(Algorithm::ES256, Some("a"), &claims, &es_a()))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let verifier = verifier.clone();
            let token = sign(
                Algorithm::ES256,
                Some(&Uuid::new_v4().to_string()),
                &claims,
                &es_a(),
            );
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey(Some(_))), "{err:?}");
        assert_eq!(err.client_message(), "Invalid token signature");
    }
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_requests_share_one_fetch() {
    let (jwks, verifier) = project().await;
    let token = sign(Algorithm::RS256, Some("r"), &claims(&jwks.issuer()), &rsa());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn jwks_down_with_warm_cache_serves_stale_keys() {
    let jwks = Jwks::start(key_set(&[jwk("a", &es_a(), Algorithm::ES256)])).await;
    let mut config = config(&jwks.base);
    // Every use is past the TTL, so every use may refresh; max-stale keeps the keys usable.
    config.jwks_ttl_secs = 0;
    config.jwks_refetch_cooldown_secs = 0;
    config.jwks_max_stale_secs = 3600;
    let verifier = verifier(&config, None);
    let token = sign(
        Algorithm::ES256,
        Some("a"),
        &claims(&jwks.issuer()),
        &es_a(),
    );
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 1);

    jwks.set(Mode::Down);
    verifier.verify(&token).await.unwrap();
    // That use triggered a background refresh; once it has failed, the keys are still served.
    jwks.wait_for_hits(2).await;
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn jwks_down_past_max_stale_fails_closed() {
    let jwks = Jwks::start(key_set(&[jwk("a", &es_a(), Algorithm::ES256)])).await;
    let mut config = config(&jwks.base);
    config.jwks_ttl_secs = 0;
    config.jwks_refetch_cooldown_secs = 0;
    config.jwks_max_stale_secs = 0;
    let verifier = verifier(&config, Some(SECRET));
    let claims = claims(&jwks.issuer());
    let token = sign(Algorithm::ES256, Some("a"), &claims, &es_a());
    verifier.verify(&token).await.unwrap();

    jwks.set(Mode::Down);
    let err = rejected(&verifier, &token).await;
    assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    assert_eq!(err.client_message(), "Server configuration error");
    assert_eq!(jwks.hits(), 2);
    // The shared secret does not depend on the JWKS.
    verifier.verify(&hs256(&claims)).await.unwrap();
}

#[tokio::test]
async fn jwks_down_with_cold_cache_fails_closed_without_hammering() {
    let jwks = Jwks::start(Mode::Down).await;
    let verifier = verifier(&config(&jwks.base), None);
    let token = sign(
        Algorithm::ES256,
        Some("a"),
        &claims(&jwks.issuer()),
        &es_a(),
    );
    for _ in 0..3 {
        let err = rejected(&verifier, &token).await;
        assert!(matches!(err, AuthError::KeysUnavailable(_)), "{err:?}");
    }
    assert_eq!(jwks.hits(), 1, "no refetch within the cooldown");

    // The endpoint recovers; a purge lifts the cooldown.
    jwks.set(key_set(&[jwk("a", &es_a(), Algorithm::ES256)]));
    assert!(verifier.verify(&token).await.is_err());
    verifier.purge_keys();
    verifier.verify(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test]
async fn jwks_fetch_times_out() {
    let jwks = Jwks::start(Mode::Hang).await;
    let mut config = config(&jwks.base);
    config.jwks_fetch_timeout_secs = 1;
    let verifier = verifier(&config, None);
    let token = sign(
        Algorithm::ES256,
        Some("a"),
        &claims(&jwks.issuer()),
        &es_a(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(30), verifier.verify(&token))
        .await
        .expect("the fetch timeout bounds verification");
    assert!(
        matches!(outcome, Err(AuthError::KeysUnavailable(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn purge_drops_revoked_keys() {
    let (jwks, verifier) = project().await;
    let token = sign(
        Algorithm::ES256,
        Some("a"),
        &claims(&jwks.issuer()),
        &es_a(),
    );
    verifier.verify(&token).await.unwrap();
    // Key "a" is revoked upstream; the cache would trust it until the TTL ran out.
    jwks.set(key_set(&[jwk("r", &rsa(), Algorithm::RS256)]));
    verifier.verify(&token).await.unwrap();
    verifier.purge_keys();
    assert_eq!(
        rejected(&verifier, &token).await,
        AuthError::UnknownKey(Some("a".into()))
    );
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test]
async fn empty_jwks_is_a_valid_set() {
    let jwks = Jwks::start(key_set(&[])).await;
    let verifier = verifier(&config(&jwks.base), Some(SECRET));
    let claims = claims(&jwks.issuer());
    let token = sign(Algorithm::ES256, Some("a"), &claims, &es_a());
    assert_eq!(
        rejected(&verifier, &token).await,
        AuthError::UnknownKey(Some("a".into()))
    );
    verifier.verify(&hs256(&claims)).await.unwrap();
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn jwk_type_decides_the_algorithm() {
    let jwks = Jwks::start(key_set(&[
        jwk("a", &es_a(), Algorithm::ES256),
        jwk("r", &rsa(), Algorithm::RS256),
        // Published for another algorithm than the token will claim.
        jwk("r512", &rsa(), Algorithm::RS512),
    ]))
    .await;
    let verifier = verifier(&config(&jwks.base), Some(SECRET));
    let claims = claims(&jwks.issuer());
    // Header alg and key type disagree.
    assert_unsupported(
        &rejected(
            &verifier,
            &sign(Algorithm::RS256, Some("a"), &claims, &rsa()),
        )
        .await,
    );
    assert_unsupported(
        &rejected(
            &verifier,
            &sign(Algorithm::ES256, Some("r"), &claims, &es_a()),
        )
        .await,
    );
    // A key whose own alg is not RS256 is not loaded at all.
    let err = rejected(
        &verifier,
        &sign(Algorithm::RS256, Some("r512"), &claims, &rsa()),
    )
    .await;
    assert_eq!(err, AuthError::UnknownKey(Some("r512".into())));
}

#[tokio::test]
async fn algorithm_none_and_unlisted_algorithms_rejected() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(json!({ "alg": alg, "typ": "JWT" }), &claims, b"");
        assert_unsupported(&rejected(&verifier, &token).await);
    }
    let eddsa = raw_token(json!({ "alg": "EdDSA", "kid": "a" }), &claims, &[7; 64]);
    assert_unsupported(&rejected(&verifier, &eddsa).await);
    // Properly signed, with keys the relay holds, but in algorithms it does not accept.
    let secret = EncodingKey::from_secret(SECRET);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert_unsupported(&rejected(&verifier, &sign(alg, None, &claims, &secret)).await);
    }
    for alg in [Algorithm::PS256, Algorithm::RS512] {
        assert_unsupported(&rejected(&verifier, &sign(alg, Some("r"), &claims, &rsa())).await);
    }
    let err = rejected(&verifier, "not a token").await;
    assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
    assert_eq!(err.client_message(), "Invalid access token");
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_rejected() {
    let (jwks, with_secret) = project().await;
    let without_secret = verifier(&config(&jwks.base), None);
    let claims = claims(&jwks.issuer());
    for public in [RS256_PUBLIC_PEM, RS256_PUBLIC_DER] {
        let key = EncodingKey::from_secret(public);
        for kid in [None, Some("r")] {
            let token = sign(Algorithm::HS256, kid, &claims, &key);
            assert_eq!(
                rejected(&with_secret, &token).await,
                AuthError::BadSignature
            );
            assert_unsupported(&rejected(&without_secret, &token).await);
        }
    }
}

#[tokio::test]
async fn expired_token_says_token_expired() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    let expired = with(claims.clone(), "exp", json!(now() - 120));
    for token in [
        hs256(&expired),
        sign(Algorithm::ES256, Some("a"), &expired, &es_a()),
    ] {
        let err = rejected(&verifier, &token).await;
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.client_message(), "Token expired");
    }
    // Clock skew: expired ten seconds ago is within the 30 s leeway.
    let just_expired = with(claims, "exp", json!(now() - 10));
    verifier.verify(&hs256(&just_expired)).await.unwrap();
}

#[tokio::test]
async fn issued_in_the_future_or_not_yet_valid_rejected() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "iat", json!(now() + 120))),
        )
        .await,
    );
    verifier
        .verify(&hs256(&with(claims.clone(), "iat", json!(now() + 10))))
        .await
        .unwrap();
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "iat", json!("yesterday"))),
        )
        .await,
    );
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "nbf", json!(now() + 120))),
        )
        .await,
    );
    verifier
        .verify(&hs256(&with(claims, "nbf", json!(now() - 5))))
        .await
        .unwrap();
}

#[tokio::test]
async fn audience_checks() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "aud", json!("anon"))),
        )
        .await,
    );
    assert_invalid_claims(&rejected(&verifier, &hs256(&without(claims.clone(), "aud"))).await);
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "aud", json!(["anon", "admin"]))),
        )
        .await,
    );
    let array = with(claims, "aud", json!(["other-service", "authenticated"]));
    verifier.verify(&hs256(&array)).await.unwrap();
}

#[tokio::test]
async fn issuer_checks() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    let wrong = with(
        claims.clone(),
        "iss",
        json!("https://evil.supabase.co/auth/v1"),
    );
    assert_invalid_claims(&rejected(&verifier, &hs256(&wrong)).await);
    assert_invalid_claims(&rejected(&verifier, &hs256(&without(claims.clone(), "iss"))).await);
    // SUPABASE_URL had a trailing slash; a token whose iss has one is the same issuer.
    let slashed = with(claims, "iss", json!(format!("{}/", jwks.issuer())));
    verifier.verify(&hs256(&slashed)).await.unwrap();

    // Explicit SUPABASE_JWT_ISSUERS, written with trailing slashes.
    let mut config = config(&jwks.base);
    config.issuers = vec![
        "https://one.example/auth/v1/".into(),
        "https://two.example/auth/v1".into(),
    ];
    let verifier = Verifier::new(&config, Some(SECRET.to_vec()), reqwest::Client::new());
    let base = self::claims(&jwks.issuer());
    for iss in [
        "https://one.example/auth/v1",
        "https://two.example/auth/v1/",
    ] {
        verifier
            .verify(&hs256(&with(base.clone(), "iss", json!(iss))))
            .await
            .unwrap();
    }
    assert_invalid_claims(&rejected(&verifier, &hs256(&base)).await);
}

#[tokio::test]
async fn legacy_api_keys_and_other_roles_rejected() {
    let (jwks, verifier) = project().await;
    let now = now();
    for role in ["anon", "service_role"] {
        let api_key = json!({ "iss": "supabase", "ref": "abcdefghijklmnop", "role": role, "iat": now, "exp": now + 3600 });
        assert_invalid_claims(&rejected(&verifier, &hs256(&api_key)).await);
        // Even dressed up as a user token, only `authenticated` is a user.
        let dressed = with(claims(&jwks.issuer()), "role", json!(role));
        assert_invalid_claims(&rejected(&verifier, &hs256(&dressed)).await);
    }
    let no_role = without(claims(&jwks.issuer()), "role");
    assert_invalid_claims(&rejected(&verifier, &hs256(&no_role)).await);
}

#[tokio::test]
async fn subject_and_anonymity_checks() {
    let (jwks, verifier) = project().await;
    let claims = claims(&jwks.issuer());
    for sub in [
        json!("admin"),
        json!(""),
        json!(42),
        json!(USER.replace('-', "")),
    ] {
        assert_invalid_claims(
            &rejected(&verifier, &hs256(&with(claims.clone(), "sub", sub))).await,
        );
    }
    assert_invalid_claims(&rejected(&verifier, &hs256(&without(claims.clone(), "sub"))).await);
    assert_invalid_claims(&rejected(&verifier, &hs256(&without(claims.clone(), "exp"))).await);
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "is_anonymous", json!(true))),
        )
        .await,
    );
    assert_invalid_claims(
        &rejected(
            &verifier,
            &hs256(&with(claims.clone(), "is_anonymous", json!("true"))),
        )
        .await,
    );
    verifier
        .verify(&hs256(&without(claims, "is_anonymous")))
        .await
        .unwrap();
}

#[tokio::test]
async fn dev_secret_created_once_and_minted_tokens_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config("");
    let (first, is_dev) = resolve_hs256_secret(&config, &data_dir).unwrap();
    let first = first.unwrap();
    assert!(is_dev);
    assert_eq!(first.len(), 64);
    assert!(first.iter().all(u8::is_ascii_hexdigit));
    let path = data_dir.join(DEV_SECRET_FILE);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (second, is_dev) = resolve_hs256_secret(&config, &data_dir).unwrap();
    assert!(is_dev);
    assert_eq!(second.unwrap(), first, "the secret survives restarts");

    let user = Uuid::new_v4();
    let token = mint_hs256(&first, DEV_ISSUER, user, "dev@example.com", 3600);
    let verifier = Verifier::new(&config, Some(first.clone()), reqwest::Client::new());
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.user_id, user);
    assert_eq!(identity.email.as_deref(), Some("dev@example.com"));
    let parsed: Value = serde_json::from_str(&identity.claims).unwrap();
    for (claim, value) in [
        ("aud", json!("authenticated")),
        ("role", json!("authenticated")),
        ("aal", json!("aal1")),
        ("phone", json!("")),
        ("is_anonymous", json!(false)),
        ("iss", json!(DEV_ISSUER)),
    ] {
        assert_eq!(parsed[claim], value, "{claim}");
    }
    assert!(Uuid::parse_str(parsed["session_id"].as_str().unwrap()).is_ok());
    assert!(parsed["app_metadata"].is_object());
    assert!(parsed["user_metadata"].is_object());
    assert_eq!(
        parsed["exp"].as_i64().unwrap() - parsed["iat"].as_i64().unwrap(),
        3600
    );

    let expired = mint_hs256(&first, DEV_ISSUER, user, "dev@example.com", -120);
    assert_eq!(rejected(&verifier, &expired).await, AuthError::Expired);
    let other_secret = mint_hs256(b"another-secret", DEV_ISSUER, user, "dev@example.com", 3600);
    assert_eq!(
        rejected(&verifier, &other_secret).await,
        AuthError::BadSignature
    );
}

#[test]
fn configured_secrets_take_precedence_over_the_dev_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("");
    config.jwt_secret = Secret::new("raw-secret");
    assert_eq!(
        resolve_hs256_secret(&config, dir.path()).unwrap(),
        (Some(b"raw-secret".to_vec()), false)
    );
    config.jwt_secret =
        Secret::new(base64::engine::general_purpose::STANDARD.encode([1u8, 2, 255]));
    config.jwt_secret_encoding = SecretEncoding::Base64;
    assert_eq!(
        resolve_hs256_secret(&config, dir.path()).unwrap(),
        (Some(vec![1u8, 2, 255]), false)
    );
    // A real project without a secret verifies with its JWKS only.
    let config = self::config("https://abc.supabase.co");
    assert_eq!(
        resolve_hs256_secret(&config, dir.path()).unwrap(),
        (None, false)
    );
    assert!(!dir.path().join(DEV_SECRET_FILE).exists());
}
