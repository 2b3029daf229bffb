//! A fresh database per test, on either backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;
use tempfile::TempDir;

/// The variable naming the PostgreSQL server the `…::postgres` tests use.
pub const POSTGRES_URL_VAR: &str = "MAGICAUTH_TEST_POSTGRES_URL";

/// Upper bound for creating or dropping a test database.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The database engine a test runs against.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// `server_url` names a database on the server to connect to for
    /// `CREATE DATABASE` / `DROP DATABASE`.
    Postgres {
        server_url: String,
    },
}

impl Backend {
    /// The PostgreSQL backend, or `None` (after saying so) when
    /// `MAGICAUTH_TEST_POSTGRES_URL` is not set.
    pub fn postgres() -> Option<Self> {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => Some(Backend::Postgres {
                server_url: url.trim().to_owned(),
            }),
            _ => {
                eprintln!("skipped: {POSTGRES_URL_VAR} not set");
                None
            }
        }
    }

    /// A new, empty database (no schema yet). Panics when a PostgreSQL server
    /// was named but cannot be reached: CI sets the variable, so a broken
    /// server must fail the run, not skip it.
    pub async fn database(&self) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match self {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.path().join("magicauth.db").display()),
                dir,
                postgres: None,
            },
            Backend::Postgres { server_url } => {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).expect("OS randomness");
                let name = format!(
                    "magicauth_test_{}",
                    random.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                let mut admin = admin_connection(server_url).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", redact(server_url)));
                let _ = admin.close().await;
                let mut url = url::Url::parse(server_url).expect("a valid PostgreSQL URL");
                url.set_path(&format!("/{name}"));
                TestDatabase {
                    url: url.to_string(),
                    dir,
                    postgres: Some(PostgresDatabase {
                        server_url: server_url.clone(),
                        name,
                    }),
                }
            }
        }
    }
}

async fn admin_connection(server_url: &str) -> sqlx::PgConnection {
    match tokio::time::timeout(ADMIN_TIMEOUT, sqlx::PgConnection::connect(server_url)).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => panic!(
            "{POSTGRES_URL_VAR} is set but {} is unreachable: {e}",
            redact(server_url)
        ),
        Err(_) => panic!(
            "{POSTGRES_URL_VAR} is set but {} did not answer within {ADMIN_TIMEOUT:?}",
            redact(server_url)
        ),
    }
}

fn redact(url: &str) -> String {
    magicauth_server::store::redact_url(url)
}

/// A database for one test, plus a temp dir for its files (mail, logs, and
/// the SQLite file). A PostgreSQL database is dropped when this is.
pub struct TestDatabase {
    /// What `--database-url` takes.
    pub url: String,
    dir: TempDir,
    postgres: Option<PostgresDatabase>,
}

struct PostgresDatabase {
    server_url: String,
    name: String,
}

impl TestDatabase {
    /// The temp dir that belongs to this database.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn backend(&self) -> &'static str {
        if self.postgres.is_some() { "postgres" } else { "sqlite" }
    }

    /// The SQLite file (which exists once something has opened the database).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.postgres.is_none().then(|| self.dir.path().join("magicauth.db"))
    }

    /// Runs one statement on the database with the backend's own driver,
    /// beside whatever server uses it.
    pub async fn execute(&self, sql: &'static str) {
        if self.postgres.is_some() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect");
            sqlx::query(sql).execute(&mut connection).await.expect(sql);
            let _ = connection.close().await;
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
            sqlx::query(sql).execute(&mut connection).await.expect(sql);
            let _ = connection.close().await;
        }
    }

    /// Runs a query returning one `BIGINT` (PostgreSQL) / `INTEGER` (SQLite).
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        if self.postgres.is_some() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut connection).await.expect(sql)
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut connection).await.expect(sql)
        }
    }
}

impl PostgresDatabase {
    /// `WITH (FORCE)` also ends the connections of servers still using it.
    async fn drop_database(&self) {
        let name = &self.name;
        let dropped = tokio::time::timeout(ADMIN_TIMEOUT, async {
            let mut admin = sqlx::PgConnection::connect(&self.server_url).await?;
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await?;
            admin.close().await
        })
        .await;
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {name}: {dropped:?}");
        }
    }
}

impl TestDatabase {
    /// Drops a PostgreSQL database now, under the feet of whatever uses it.
    pub async fn drop_now(&self) {
        if let Some(postgres) = &self.postgres {
            postgres.drop_database().await;
        }
    }
}

impl Drop for TestDatabase {
    /// Best effort, on a thread and runtime of its own since `Drop` cannot await.
    fn drop(&mut self) {
        let Some(postgres) = self.postgres.take() else {
            return;
        };
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(postgres.drop_database());
            }
        });
        let _ = dropper.join();
    }
}
