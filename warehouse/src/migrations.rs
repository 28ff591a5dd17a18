//! ClickHouse schema migrations: the versioned SQL files in `infra/migrations/`,
//! embedded at build time and applied in order at start (or by `migrate`).
//!
//! Every file is idempotent (`IF NOT EXISTS`), so two aggregators starting at
//! once cannot break each other; `schema_migrations` records what ran.
//!
//! On a cluster (`RICOCHET_CLICKHOUSE_CLUSTER`), each plain statement is
//! rewritten by [`crate::cluster`] into replicated `_local` tables created
//! `ON CLUSTER` and `Distributed` tables over them; see `docs/cluster.md`.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_click_events", include_str!("../../infra/migrations/0001_click_events.sql")),
    ("0002_click_rollup_minute", include_str!("../../infra/migrations/0002_click_rollup_minute.sql")),
    ("0003_registry", include_str!("../../infra/migrations/0003_registry.sql")),
    ("0004_click_events_verdicts", include_str!("../../infra/migrations/0004_click_events_verdicts.sql")),
    ("0005_click_rollups", include_str!("../../infra/migrations/0005_click_rollups.sql")),
    ("0006_click_rollup_minute_view", include_str!("../../infra/migrations/0006_click_rollup_minute_view.sql")),
    ("0007_fenced_rollups", include_str!("../../infra/migrations/0007_fenced_rollups.sql")),
    ("0008_recipient_erasures", include_str!("../../infra/migrations/0008_recipient_erasures.sql")),
    ("0009_event_dimensions", include_str!("../../infra/migrations/0009_event_dimensions.sql")),
    ("0010_breakdowns", include_str!("../../infra/migrations/0010_breakdowns.sql")),
    ("0011_webhook_deliveries", include_str!("../../infra/migrations/0011_webhook_deliveries.sql")),
    ("0012_click_breakdowns", include_str!("../../infra/migrations/0012_click_breakdowns.sql")),
    ("0013_compact_breakdown_input", include_str!("../../infra/migrations/0013_compact_breakdown_input.sql")),
];

/// How long a migration's `ON CLUSTER` statement waits for every host,
/// instead of the server's default 180 s (`distributed_ddl_task_timeout`).
/// An `ALTER` of a replicated table waits until every active replica has
/// applied it, and a loaded replica can take longer; past the timeout the
/// server answers code 159 and goes on in the background.
pub const DDL_TASK_TIMEOUT_SECS: &str = "900";

/// What 18.16 says when a statement has not reached every replica: `ON
/// CLUSTER` past its timeout (159), an `ALTER` that a replica did not apply in
/// time (341, `UNFINISHED`), and a replica that gave up waiting for the one
/// of its shard that runs the `ALTER` (48).
const UNFINISHED_ON_CLUSTER: [(&str, &str); 3] = [
    ("Code: 159,", "distributed_ddl_task_timeout"),
    ("Code: 341,", "Alter is not finished"),
    ("Code: 48,", "Cannot enqueue replicated DDL query"),
];

/// ClickHouse's error code for "column with this name already exists".
const DUPLICATE_COLUMN: &str = "Code: 44,";

use crate::cluster::{Cluster, ClusterError};

/// What records the applied migrations, created before any of them.
pub const SCHEMA_MIGRATIONS: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version";

#[derive(Debug, thiserror::Error)]
#[error("migration {version}: {source}")]
pub struct MigrationError {
    pub version: String,
    #[source]
    pub source: MigrationFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationFailure {
    #[error(transparent)]
    ClickHouse(clickhouse::error::Error),
    /// A statement did not reach every replica. Not a bug in the migration:
    /// the operator must bring the replica back. ClickHouse 18.16 has a known
    /// fault here: a replica whose ZooKeeper session expired (a pause longer
    /// than `session_timeout_ms`) applies no further `ALTER` to its replicated
    /// tables until it is restarted, and every later migration waits for it.
    #[error(
        "not applied on every replica of the cluster: {0}. A replica that lost its ZooKeeper session \
         (ClickHouse 18.16) applies no schema change until `system restart replica <table>_local` runs \
         on it (or the server restarts); do that on the replica named, then start again (docs/cluster.md)"
    )]
    UnfinishedOnCluster(clickhouse::error::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl From<clickhouse::error::Error> for MigrationFailure {
    fn from(e: clickhouse::error::Error) -> Self {
        let message = e.to_string();
        if UNFINISHED_ON_CLUSTER.iter().any(|(code, sign)| message.contains(code) && message.contains(sign)) {
            MigrationFailure::UnfinishedOnCluster(e)
        } else {
            MigrationFailure::ClickHouse(e)
        }
    }
}

/// The statements that run for one plain statement: itself on a single
/// server, its cluster rewrite on a cluster.
pub fn render(statement: &str, cluster: Option<&Cluster>) -> Result<Vec<String>, ClusterError> {
    match cluster {
        None => Ok(vec![statement.to_owned()]),
        Some(c) => c.rewrite(statement),
    }
}

/// The statements of a migration file: ClickHouse's HTTP interface takes one
/// per request. A statement ends with `;` at the end of a line.
pub fn statements(sql: &str) -> Vec<String> {
    sql.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').trim())
        .filter(|s| s.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--")))
        .map(str::to_owned)
        .collect()
}

#[derive(Row, Serialize, Deserialize)]
struct Applied {
    version: String,
    applied_at: u32,
}

/// The migration that turns 0002's per-flush table into a view: its RENAME and
/// copies run only where that table exists as a MergeTree (a database created
/// when 0002 still made it); elsewhere only its `CREATE VIEW IF NOT EXISTS`
/// runs, so running it twice, or beside another process, copies nothing twice.
const CARRY_OVER: &str = "0006_click_rollup_minute_view";

/// On a cluster the old table's data is `click_rollup_minute_local`, a
/// `ReplicatedMergeTree` (`click_rollup_minute` itself is `Distributed`).
/// Whether `statement` of migration `version` runs on a database that never
/// had 0002's old table (all but 0006's RENAME and copies).
pub fn runs_on_fresh_database(version: &str, statement: &str) -> bool {
    version != CARRY_OVER || statement.starts_with("CREATE VIEW")
}

async fn legacy_rollups(client: &Client, cluster: Option<&Cluster>) -> Result<bool, clickhouse::error::Error> {
    let (name, engine) = match cluster {
        None => ("click_rollup_minute", "MergeTree"),
        Some(_) => ("click_rollup_minute_local", "ReplicatedMergeTree"),
    };
    let n: u64 = client
        .query(
            "SELECT count() FROM system.tables \
             WHERE database = currentDatabase() AND name = ? AND engine = ?",
        )
        .bind(name)
        .bind(engine)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

/// Applies the migrations not yet recorded. Returns the versions it applied.
/// Runs what is missing on `client`; a statement the cluster rewrite marks
/// [`crate::cluster::EACH_SHARD`] runs on each of `shards` instead (one
/// server per shard; empty: `client` alone, a single shard).
pub async fn apply(
    client: &Client,
    cluster: Option<&Cluster>,
    shards: &[Client],
) -> Result<Vec<String>, MigrationError> {
    let one = std::slice::from_ref(client);
    let servers = |s: &str| if s.starts_with(crate::cluster::EACH_SHARD) && !shards.is_empty() { shards } else { one };
    let err = |version: &str| {
        let version = version.to_owned();
        move |source: clickhouse::error::Error| MigrationError { version, source: source.into() }
    };
    let run = |version: &'static str, statement: &'static str| async move {
        let rendered =
            render(statement, cluster).map_err(|e| MigrationError { version: version.into(), source: e.into() })?;
        for s in rendered {
            for server in servers(&s) {
                ddl(server, &s).execute().await.map_err(err(version))?;
            }
        }
        Ok::<(), MigrationError>(())
    };
    run("schema_migrations", SCHEMA_MIGRATIONS).await?;
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
        let carry_over = *version == CARRY_OVER && legacy_rollups(client, cluster).await.map_err(err(version))?;
        for statement in statements(sql) {
            if !carry_over && !runs_on_fresh_database(version, &statement) {
                continue;
            }
            for s in render(&statement, cluster)
                .map_err(|e| MigrationError { version: (*version).into(), source: e.into() })?
            {
                for server in servers(&s) {
                    match ddl(server, &s).execute().await {
                        Ok(()) => {}
                        // 18.16 has no `ADD COLUMN IF NOT EXISTS`: the columns are
                        // there already when another aggregator ran this ALTER at the
                        // same moment (one ALTER adds them all or none).
                        Err(e) if is_add_column(&s) && e.to_string().contains(DUPLICATE_COLUMN) => {
                            tracing::info!(version, "columns already added by another aggregator");
                        }
                        Err(e) => return Err(err(version)(e)),
                    }
                }
            }
        }
        let mut insert = client.insert::<Applied>("schema_migrations").await.map_err(err(version))?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        insert.write(&Applied { version: (*version).to_owned(), applied_at: now }).await.map_err(err(version))?;
        insert.end().await.map_err(err(version))?;
        tracing::info!(version, "migration applied");
        applied.push((*version).to_owned());
    }
    Ok(applied)
}

/// A migration statement, with the time it may wait for the cluster's hosts.
fn ddl(server: &Client, statement: &str) -> clickhouse::query::Query {
    server.query(statement).with_option("distributed_ddl_task_timeout", DDL_TASK_TIMEOUT_SECS)
}

fn is_add_column(statement: &str) -> bool {
    let code: Vec<String> =
        statement.lines().filter(|l| !l.trim_start().starts_with("--")).map(str::to_ascii_uppercase).collect();
    let code = code.join("\n");
    let code = code.trim_start();
    let code = code.strip_prefix(&crate::cluster::EACH_SHARD.to_ascii_uppercase()).unwrap_or(code);
    code.trim_start().starts_with("ALTER TABLE") && code.contains("ADD COLUMN")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verdict_reason_enum_is_the_schemas_one() {
        // The column as the last migration that defines it leaves it.
        let column = super::MIGRATIONS
            .iter()
            .rev()
            .flat_map(|(_, sql)| sql.lines().rev())
            .find(|l| l.contains("COLUMN verdict_reason"))
            .unwrap();
        let wanted = ricochet_schemas::Reason::clickhouse_enum();
        assert_eq!(column.matches(wanted.as_str()).count(), 2, "type and default cast: {column}");
        let (_, sql) = super::MIGRATIONS.iter().find(|(v, _)| v.starts_with("0004")).unwrap();
        assert!(super::is_add_column(&super::statements(sql)[0]));
    }

    #[test]
    fn a_statement_that_did_not_reach_every_replica_says_what_to_do() {
        use super::MigrationFailure;
        let bad = |m: &str| MigrationFailure::from(clickhouse::error::Error::BadResponse(m.to_owned()));
        // What 18.16 answered, in CI and with a replica whose session had expired.
        let timed_out = bad(
            "Code: 159, e.displayText() = DB::Exception: Watching task /clickhouse/task_queue/ddl/query-0000000008 \
             is executing longer than distributed_ddl_task_timeout (=900) seconds. There are 1 unfinished hosts \
             (1 of them are currently active), they are going to execute the query in background",
        );
        let unfinished =
            bad("Code: 341, e.displayText() = DB::Exception: Alter is not finished because timeout when waiting for \
             some replicas: r2 (replication_alter_columns_timeout = 60). Alter will be done asynchronously.");
        let gave_up = bad("Code: 48, e.displayText() = DB::Exception: There was an error on [127.0.0.1:29571]: \
             Cannot enqueue replicated DDL query for a replicated shard, e.what() = DB::Exception");
        for e in [&timed_out, &unfinished, &gave_up] {
            assert!(matches!(e, MigrationFailure::UnfinishedOnCluster(_)), "{e}");
            assert!(e.to_string().contains("system restart replica"), "{e}");
        }
        assert!(e_is_plain(&bad("Code: 44, e.displayText() = DB::Exception: Cannot add column ua_class: column with this name already exists")));
        assert!(e_is_plain(&bad("Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 30 seconds")));
        fn e_is_plain(e: &MigrationFailure) -> bool {
            matches!(e, MigrationFailure::ClickHouse(_))
        }
    }

    #[test]
    fn files_split_into_statements_and_comments_alone_are_dropped() {
        let sql = "-- a comment\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- b\nCREATE TABLE b (y UInt8) ENGINE = Memory\n";
        let s = super::statements(sql);
        assert_eq!(s.len(), 2);
        assert!(s[0].ends_with("ENGINE = Memory") && s[1].contains("CREATE TABLE b"));
        assert_eq!(super::statements("-- only a comment\n"), Vec::<String>::new());
        for (_, file) in super::MIGRATIONS {
            assert!(!super::statements(file).is_empty());
            assert!(!file.contains('?'), "the client would bind a '?' in a migration");
        }
    }
}
