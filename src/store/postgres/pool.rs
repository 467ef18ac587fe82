//! Connection plumbing: the pool (TLS as `sslmode` says, see `tls`), the role and claims
//! scoping of every transaction, typed-query helpers and error text that leaks no row values.

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction,
};
use futures::FutureExt;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use super::PostgresStore;
use crate::auth::Identity;
use crate::store::StoreError;

/// Supabase's own `statement_timeout` for `authenticated`; role settings are not applied by a
/// role switch, so it is set per transaction.
const USER_STATEMENT_TIMEOUT: &str = "8s";
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Whose authority a transaction runs with.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// On the user's behalf: role `authenticated`, RLS applies to the verified claims.
    User(&'a Identity),
    /// The relay's bookkeeping: role `service_role`, which bypasses RLS.
    Service,
}

/// A query parameter with its declared type (`query_typed` needs both).
pub(super) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

pub(super) fn db_err(e: tokio_postgres::Error) -> StoreError {
    if unreachable(&e) {
        StoreError::Unavailable(describe(&e))
    } else {
        StoreError::Database(describe(&e))
    }
}

/// Whether the error says the server cannot be reached or is going away, rather than that it
/// refused the statement: a closed connection or an I/O error, a connection exception
/// (class 08), or an operator intervention such as a shutdown (class 57P).
fn unreachable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => {
            let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
            e.is_closed() || io
        }
        Some(state) => {
            let code = state.code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// The error with its causes (tokio-postgres' own Display omits them), but of a database
/// error only the message and SQLSTATE: its DETAIL can quote row values such as e-mails.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let db = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| err.downcast_ref::<tokio_postgres::error::DbError>());
        let part = match db {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => err.to_string(),
        };
        // Wrappers such as the pool's error repeat their cause in their own text.
        if !text.ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = err.source();
    }
    text
}

pub(super) fn decode_err(what: &str) -> StoreError {
    StoreError::Database(format!("unexpected {what} in the database"))
}

/// A pooled connection, and whether its statements are prepared once and kept
/// (`DATABASE_PREPARED_STATEMENTS`) or sent unnamed each time.
pub struct Conn {
    object: Object,
    prepared: bool,
}

impl std::ops::Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.object
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.object
    }
}

/// A transaction on a [`Conn`]; the helpers below run its statements as the connection says.
pub struct Tx<'c> {
    inner: Transaction<'c>,
    prepared: bool,
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.inner
    }
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.inner.commit().await
    }
}

/// Open a transaction on `conn` under `scope`. Role and claims are transaction-local: they end
/// with COMMIT or ROLLBACK (dropping the transaction rolls back).
pub async fn begin<'c>(conn: &'c mut Conn, scope: Scope<'_>) -> Result<Tx<'c>, StoreError> {
    let prepared = conn.prepared;
    let inner = conn.object.transaction().await.map_err(db_err)?;
    let tx = Tx { inner, prepared };
    match scope {
        Scope::User(who) => {
            let claims: &str = &who.claims;
            // Fixed role names only: the token's own `role` claim never picks the role.
            query(
                &tx,
                "SELECT set_config('role', 'authenticated', true),
                        set_config('request.jwt.claims', $1, true),
                        set_config('statement_timeout', $2, true),
                        set_config('TimeZone', 'UTC', true)",
                &[(&claims, Type::TEXT), (&USER_STATEMENT_TIMEOUT, Type::TEXT)],
            )
            .await?;
        }
        Scope::Service => {
            query(&tx, SERVICE_SETTINGS, &[]).await?;
        }
    }
    Ok(tx)
}

/// The settings of a [`Scope::Service`] transaction. UTC so `current_date` in the quota
/// functions is the UTC day, as on Supabase.
const SERVICE_SETTINGS: &str =
    "SELECT set_config('role', 'service_role', true), set_config('TimeZone', 'UTC', true)";

/// Run `statements` as one [`Scope::Service`] transaction sent in a single flight — `BEGIN`,
/// the settings, the statements, `COMMIT` — and return each statement's rows. The server runs
/// the messages in order without waiting for the client, so a lock an early statement takes
/// is held only while the server works, not across round trips. After a failed statement the
/// server ignores the rest and the `COMMIT` rolls back. Every message is sent on the first
/// poll, so a dropped future never leaves the connection inside the transaction.
pub(super) async fn one_flight(
    conn: &Conn,
    statements: &[(&str, &[Param<'_>])],
) -> Result<Vec<Vec<Row>>, StoreError> {
    let client: &tokio_postgres::Client = conn;
    // Outlive the flight that borrows them.
    let prepared: Vec<tokio_postgres::Statement>;
    let values: Vec<Vec<&(dyn ToSql + Sync)>>;
    let mut flight = Vec::with_capacity(statements.len() + 3);
    flight.push(client.query_typed("BEGIN", &[]).boxed());
    flight.push(client.query_typed(SERVICE_SETTINGS, &[]).boxed());
    // Prepared before any message is sent (one round trip the first time on this connection,
    // none after), so that every message of the flight still goes out on its first poll.
    if conn.prepared {
        let types: Vec<Vec<Type>> = statements
            .iter()
            .map(|(_, params)| param_types(params))
            .collect();
        let prepares = statements
            .iter()
            .zip(&types)
            .map(|((sql, _), types)| conn.prepare_typed_cached(sql, types));
        prepared = futures::future::try_join_all(prepares)
            .await
            .map_err(db_err)?;
        values = statements
            .iter()
            .map(|(_, params)| param_values(params))
            .collect();
        for (statement, values) in prepared.iter().zip(&values) {
            flight.push(client.query(statement, values).boxed());
        }
    } else {
        for (sql, params) in statements {
            flight.push(client.query_typed(sql, params).boxed());
        }
    }
    flight.push(client.query_typed("COMMIT", &[]).boxed());
    // The first failure is the cause; the statements after it only report the aborted block.
    let mut rows = Vec::with_capacity(statements.len());
    for (index, reply) in futures::future::join_all(flight)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = reply.map_err(db_err)?;
        if (2..statements.len() + 2).contains(&index) {
            rows.push(reply);
        }
    }
    Ok(rows)
}

fn param_types(params: &[Param<'_>]) -> Vec<Type> {
    params.iter().map(|(_, ty)| ty.clone()).collect()
}

fn param_values<'a>(params: &[Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}

impl PostgresStore {
    /// Pool up to `max_connections` connections to `url` and check that one can be opened.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let (url, root_cert) = super::tls::split_root_cert(url);
        // The parse error never echoes the URL, so the password stays out of logs.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid DATABASE_URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("dreamcore-relay");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // As libpq: `prefer` (the default) encrypts whenever the server offers TLS, which a
        // Unix socket never does.
        let unix_only = config
            .get_hosts()
            .iter()
            .all(|host| !matches!(host, Host::Tcp(_)));
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => false,
            SslMode::Prefer => !unix_only,
            _ => true,
        };
        let manager = if tls {
            Manager::from_config(
                config,
                super::tls::connector(root_cert.as_deref())?,
                manager_config,
            )
        } else {
            Manager::from_config(config, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Self {
            pool,
            prepared_statements: false,
            connection_bound: Default::default(),
        };
        // Fail at start-up, not on the first message, when the database is unreachable.
        drop(store.connection().await?);
        Ok(store)
    }

    /// Prepare each statement once per connection and keep it, instead of sending it unnamed
    /// every time (PostgreSQL then skips parsing and, mostly, planning). Only for a direct
    /// connection or a session-mode pooler: a transaction-mode pooler such as Supavisor on
    /// port 6543 does not keep prepared statements.
    pub fn with_prepared_statements(mut self, prepared: bool) -> Self {
        self.prepared_statements = prepared;
        self
    }

    /// A pooled connection, for [`begin`].
    pub async fn connection(&self) -> Result<Conn, StoreError> {
        let object = self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!("database connection: {}", describe(&e)))
        })?;
        Ok(Conn {
            object,
            prepared: self.prepared_statements,
        })
    }
}

pub(super) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    if tx.prepared {
        let statement = tx
            .inner
            .prepare_typed_cached(sql, &param_types(params))
            .await
            .map_err(db_err)?;
        tx.inner
            .query(&statement, &param_values(params))
            .await
            .map_err(db_err)
    } else {
        tx.inner.query_typed(sql, params).await.map_err(db_err)
    }
}

pub(super) async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<Row>, StoreError> {
    let mut rows = query(tx, sql, params).await?;
    if rows.len() > 1 {
        return Err(decode_err("number of rows"));
    }
    Ok(rows.pop())
}

pub(super) async fn query_one(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Row, StoreError> {
    query_opt(tx, sql, params)
        .await?
        .ok_or_else(|| decode_err("empty answer"))
}

pub(super) async fn commit(tx: Tx<'_>) -> Result<(), StoreError> {
    tx.commit().await.map_err(db_err)
}

pub(super) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(db_err)
}
