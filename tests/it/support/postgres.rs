//! A throwaway PostgreSQL database for tests: a copy of the Supabase stand-in template
//! started by `scripts/test-postgres.sh`.

use uuid::Uuid;

const TEMPLATE: &str = "relay_template";

/// A fresh copy of the template database, plus a superuser connection to it for seeding.
/// Dropped with the value: `drop_db` from async code, or on a thread of its own otherwise.
pub struct PgDb {
    socket_dir: String,
    name: String,
    pub admin: tokio_postgres::Client,
    dropped: bool,
}

fn pg_socket_dir() -> String {
    if let Ok(dir) = std::env::var("TEST_PG_SOCKET_DIR") {
        return dir;
    }
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-postgres/socket_dir"
    );
    match std::fs::read_to_string(file) {
        Ok(dir) => dir.trim().to_string(),
        Err(e) => panic!(
            "PostgreSQL for tests is not set up ({file}: {e}). Run `bash scripts/test-postgres.sh` first."
        ),
    }
}

async fn pg_superuser(socket_dir: &str, dbname: &str) -> tokio_postgres::Client {
    let conn_str = format!("host={socket_dir} user=postgres dbname={dbname}");
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach the test PostgreSQL at {socket_dir} ({e}). Run `bash scripts/test-postgres.sh` first.")
        });
    tokio::spawn(conn);
    client
}

impl PgDb {
    pub async fn create() -> Self {
        let socket_dir = pg_socket_dir();
        let name = format!("t_{}", Uuid::new_v4().simple());
        pg_superuser(&socket_dir, "postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .await
            .unwrap();
        let admin = pg_superuser(&socket_dir, &name).await;
        Self {
            socket_dir,
            name,
            admin,
            dropped: false,
        }
    }

    pub fn relay_url(&self) -> String {
        format!(
            "postgresql://relay:relay-test@/{}?host={}",
            self.name, self.socket_dir
        )
    }

    pub async fn drop_db(mut self) {
        drop_database(&self.socket_dir, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_database(socket_dir: &str, name: &str) {
    pg_superuser(socket_dir, "postgres")
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

impl Drop for PgDb {
    /// A test that never called `drop_db` (it ended early, or its relay was simply dropped)
    /// still leaves no database behind.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (socket_dir, name) = (self.socket_dir.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(drop_database(&socket_dir, &name));
            }
        });
        let _ = dropping.join();
    }
}

impl PgDb {
    /// What GoTrue does at sign-up: the `auth.users` row, whose trigger creates the profile.
    pub async fn register_user(&self, id: Uuid, email: &str) {
        self.admin
            .execute(
                "INSERT INTO auth.users (id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &email],
            )
            .await
            .expect("auth.users insert");
    }
}
