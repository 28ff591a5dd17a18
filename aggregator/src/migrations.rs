//! ClickHouse schema migrations: the versioned SQL files in `infra/migrations/`,
//! embedded at build time and applied in order at start (or by `migrate`).
//!
//! Every file is idempotent (`IF NOT EXISTS`), so two aggregators starting at
//! once cannot break each other; `schema_migrations` records what ran.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_click_events",
        include_str!("../../infra/migrations/0001_click_events.sql"),
    ),
    (
        "0002_click_rollup_minute",
        include_str!("../../infra/migrations/0002_click_rollup_minute.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("migration {version}: {source}")]
pub struct MigrationError {
    pub version: String,
    #[source]
    pub source: clickhouse::error::Error,
}

#[derive(Row, Serialize, Deserialize)]
struct Applied {
    version: String,
    applied_at: u32,
}

/// Applies the migrations not yet recorded. Returns the versions it applied.
pub async fn apply(client: &Client) -> Result<Vec<String>, MigrationError> {
    let err = |version: &str| {
        let version = version.to_owned();
        move |source| MigrationError { version, source }
    };
    client
        .query("CREATE TABLE IF NOT EXISTS schema_migrations (version String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version")
        .execute()
        .await
        .map_err(err("schema_migrations"))?;
    let done: Vec<String> = client
        .query("SELECT DISTINCT version FROM schema_migrations")
        .fetch_all::<String>()
        .await
        .map_err(err("schema_migrations"))?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        if done.iter().any(|d| d == version) {
            continue;
        }
        client.query(sql).execute().await.map_err(err(version))?;
        let mut insert = client
            .insert::<Applied>("schema_migrations")
            .await
            .map_err(err(version))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        insert
            .write(&Applied {
                version: (*version).to_owned(),
                applied_at: now,
            })
            .await
            .map_err(err(version))?;
        insert.end().await.map_err(err(version))?;
        tracing::info!(version, "migration applied");
        applied.push((*version).to_owned());
    }
    Ok(applied)
}
