//! Cluster mode for the migrations: rewrites each plain
//! `CREATE TABLE IF NOT EXISTS name (…) ENGINE = XMergeTree(…) …` statement
//! into the two statements a sharded, replicated ClickHouse needs:
//!
//! - `name_local`, created `ON CLUSTER` with `ReplicatedXMergeTree` on the
//!   ZooKeeper path `/clickhouse/tables/{shard}/DB.name_local` and replica
//!   `{replica}` (the servers' `<macros>`): the data, one copy per replica;
//! - `name`, a `Distributed` table over `name_local` on every shard, sharded by
//!   `cityHash64(client_id)` (or `rand()` for a table without `client_id`):
//!   what the API and the data team read.
//!
//! `ALTER TABLE name …` runs `ON CLUSTER` on `name_local`, and `name` is rebuilt over it (an input
//! table, `ENGINE = Null` and named `x_in`, is made again as a copy of `x_local`'s columns). `CREATE VIEW IF NOT EXISTS`
//! runs `ON CLUSTER` over the `Distributed` tables. A data migration,
//! `INSERT INTO a (…) SELECT … FROM b …`, copies `b_local` into `a_local` on
//! the server the migration runs on (replication carries it to the other
//! replicas; see `docs/cluster.md` for several shards). `RENAME TABLE a TO b`
//! renames `a_local` and rebuilds the `Distributed` table over it.
//!
//! A bare `SELECT` (a migration turned into a no-op) runs as it is.
//!
//! The migration files stay plain (one server needs nothing else); anything
//! the rewriter does not recognise is an error, never passed through, so a
//! new migration cannot silently create an unreplicated table on a cluster.
//! Writes that must stay atomic (the rollup + positions insert) go to the
//! `_local` table, never through `Distributed`: see `sink.rs`.

/// Marks a rewritten statement that runs on one server of each shard rather
/// than `ON CLUSTER`: 18.16's distributed DDL refuses `MODIFY ORDER BY` (code
/// 48, "Unsupported type of ALTER query"), while on a replicated table the
/// ALTER reaches the shard's other replicas through ZooKeeper.
pub const EACH_SHARD: &str = "/* each shard */ ";

/// Suffix of the replicated table behind each `Distributed` one.
pub const LOCAL_SUFFIX: &str = "_local";

/// Suffix of every input table (`ENGINE = Null`, read by a materialized
/// view): how an `ALTER TABLE` knows it has no `_local` twin.
pub const INPUT_SUFFIX: &str = "_in";

/// Cluster mode: the cluster's name in the servers' `<remote_servers>`, and
/// the database every table lives in (the Distributed engine names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    name: String,
    database: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("{what} {value:?} is not a plain identifier (letters, digits, '_')")]
    BadIdentifier { what: &'static str, value: String },
    #[error("cluster mode cannot rewrite this statement (expected CREATE TABLE IF NOT EXISTS … ENGINE = …MergeTree(…)): {0}")]
    Unsupported(String),
}

fn identifier(what: &'static str, value: &str) -> Result<String, ClusterError> {
    let ok = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ClusterError::BadIdentifier { what, value: value.to_owned() })
    }
}

impl Cluster {
    /// Names come from configuration and are spliced into DDL, so only plain
    /// identifiers are accepted.
    pub fn new(name: &str, database: &str) -> Result<Cluster, ClusterError> {
        Ok(Cluster { name: identifier("cluster name", name)?, database: identifier("database", database)? })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The statements that replace one plain `CREATE TABLE` on the cluster.
    pub fn rewrite(&self, statement: &str) -> Result<Vec<String>, ClusterError> {
        let unsupported = || ClusterError::Unsupported(first_line(statement));
        let body = strip_comments(statement);
        let (c, db) = (&self.name, &self.database);
        // A bare query (a migration that became a no-op, `SELECT 1`) creates
        // and writes nothing, so it runs as it is on the one server.
        if strip_prefix_ci(body.trim(), "SELECT").is_some_and(|rest| rest.starts_with(char::is_whitespace)) {
            return Ok(vec![body.trim().to_owned()]);
        }
        if let Some(rest) = strip_prefix_ci(body.trim(), "ALTER TABLE ") {
            // A column change applies to the data and to the Distributed table's
            // own column list alike.
            let name_end = rest.find(char::is_whitespace).ok_or_else(unsupported)?;
            let table = identifier("table", &rest[..name_end]).map_err(|_| unsupported())?;
            if let Some(target) = table.strip_suffix(INPUT_SUFFIX) {
                // An input table (`ENGINE = Null`, below) keeps no data, and 18.16
                // refuses `ALTER … ON CLUSTER` on an unreplicated table of a
                // replicated cluster (code 371). So it is made again, with its
                // target's new columns: only an input table whose columns are its
                // target's (`x_in` for `x`) may be altered. Its view, which reads
                // it by name, carries on (checked on 18.16, across a restart);
                // inserts meanwhile fail and are retried.
                return Ok(vec![
                    format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {c}"),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {db}.{target}{LOCAL_SUFFIX} ENGINE = Null"
                    ),
                ]);
            }
            let change = rest[name_end..].trim();
            let alter = if change.to_ascii_uppercase().contains("MODIFY ORDER BY") {
                format!("{EACH_SHARD}ALTER TABLE {db}.{table}{LOCAL_SUFFIX} {change}")
            } else {
                format!("ALTER TABLE {db}.{table}{LOCAL_SUFFIX} ON CLUSTER {c} {change}")
            };
            // 18.16 refuses `ALTER … ON CLUSTER` on a Distributed table of a
            // replicated shard (code 371), so that one is rebuilt over the altered
            // table. Every table a migration alters has `client_id`.
            return Ok(vec![
                alter,
                format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {c}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {db}.{table}{LOCAL_SUFFIX} \
                     ENGINE = Distributed({c}, {db}, {table}{LOCAL_SUFFIX}, cityHash64(client_id))"
                ),
            ]);
        }
        if let Some(rest) = strip_prefix_ci(body.trim(), "CREATE VIEW IF NOT EXISTS ") {
            let (view, query) = rest.split_once(char::is_whitespace).ok_or_else(unsupported)?;
            let view = identifier("view", view).map_err(|_| unsupported())?;
            return Ok(vec![format!("CREATE VIEW IF NOT EXISTS {db}.{view} ON CLUSTER {c} {}", query.trim())]);
        }
        if let Some(rest) = strip_prefix_ci(body.trim(), "RENAME TABLE ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [from, to_kw, to] = words[..] else { return Err(unsupported()) };
            if !to_kw.eq_ignore_ascii_case("TO") {
                return Err(unsupported());
            }
            let (from, to) = (
                identifier("table", from).map_err(|_| unsupported())?,
                identifier("table", to).map_err(|_| unsupported())?,
            );
            return Ok(vec![
                format!("RENAME TABLE {db}.{from}{LOCAL_SUFFIX} TO {db}.{to}{LOCAL_SUFFIX} ON CLUSTER {c}"),
                format!("DROP TABLE IF EXISTS {db}.{from} ON CLUSTER {c}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{to} ON CLUSTER {c} AS {db}.{to}{LOCAL_SUFFIX} \
                     ENGINE = Distributed({c}, {db}, {to}{LOCAL_SUFFIX}, rand())"
                ),
            ]);
        }
        if let Some(rest) = strip_prefix_ci(body.trim(), "INSERT INTO ") {
            let name_end = rest.find(|c: char| c.is_whitespace() || c == '(').ok_or_else(unsupported)?;
            let into = identifier("table", &rest[..name_end]).map_err(|_| unsupported())?;
            let rest = &rest[name_end..];
            let from_at = find_word_ci(rest, "FROM").ok_or_else(unsupported)?;
            let after = rest[from_at + 4..].trim_start();
            let source_end = after.find(char::is_whitespace).unwrap_or(after.len());
            let source = identifier("table", &after[..source_end]).map_err(|_| unsupported())?;
            return Ok(vec![format!(
                "INSERT INTO {db}.{into}{LOCAL_SUFFIX}{}FROM {db}.{source}{LOCAL_SUFFIX}{}",
                &rest[..from_at],
                &after[source_end..]
            )]);
        }
        if let Some(rest) = strip_prefix_ci(body.trim(), "CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
            // The view fires on inserts into its source, a per-server table
            // (`ENGINE = Null`, below), and writes to the shard's replicated
            // table; every other table it reads is the shard's `_local` one, so
            // it sees what this shard holds, never a Distributed read.
            let words: Vec<&str> = rest.splitn(4, char::is_whitespace).collect();
            let [view, to_kw, target, query] = words[..] else { return Err(unsupported()) };
            if !to_kw.eq_ignore_ascii_case("TO") {
                return Err(unsupported());
            }
            let view = identifier("view", view).map_err(|_| unsupported())?;
            let target = identifier("table", target).map_err(|_| unsupported())?;
            let query = strip_prefix_ci(query.trim(), "AS").ok_or_else(unsupported)?;
            let mut rewritten = String::new();
            let mut rest = query;
            let mut source_seen = false;
            while let Some(at) = find_word_ci(rest, "FROM") {
                let after = rest[at + 4..].trim_start();
                let skipped = rest.len() - (at + 4) - after.len();
                rewritten.push_str(&rest[..at + 4 + skipped]);
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    // `FROM (subquery)`: its own FROMs come next.
                } else if !source_seen {
                    source_seen = true;
                    rewritten.push_str(&format!("{db}.{}", identifier("table", name).map_err(|_| unsupported())?));
                } else {
                    rewritten.push_str(&format!(
                        "{db}.{}{LOCAL_SUFFIX}",
                        identifier("table", name).map_err(|_| unsupported())?
                    ));
                }
                rest = &after[end..];
            }
            rewritten.push_str(rest);
            return Ok(vec![format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} ON CLUSTER {c} TO {db}.{target}{LOCAL_SUFFIX} AS {}",
                rewritten.trim()
            )]);
        }
        let rest = strip_prefix_ci(body.trim(), "CREATE TABLE IF NOT EXISTS ").ok_or_else(unsupported)?;
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '(').ok_or_else(unsupported)?;
        let table = identifier("table", &rest[..name_end]).map_err(|_| unsupported())?;
        let rest = &rest[name_end..];
        let engine_at = find_ci(rest, "ENGINE = ").ok_or_else(unsupported)?;
        let columns = rest[..engine_at].trim();
        let engine = &rest[engine_at + "ENGINE = ".len()..];
        if let Some(source) = strip_prefix_ci(columns, "AS ") {
            // An input table made as a copy of its target's columns
            // (`x_in AS x ENGINE = Null`): a copy of the shard's `x_local`.
            let source = identifier("table", source.trim()).map_err(|_| unsupported())?;
            if !engine.trim().eq_ignore_ascii_case("Null") || !table.ends_with(INPUT_SUFFIX) {
                return Err(unsupported());
            }
            return Ok(vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {db}.{source}{LOCAL_SUFFIX} ENGINE = Null"
            )]);
        }
        if !columns.starts_with('(') {
            return Err(unsupported());
        }
        if engine.trim().eq_ignore_ascii_case("Null") {
            if !table.ends_with(INPUT_SUFFIX) {
                // An ALTER of it would be taken for a replicated table's.
                return Err(unsupported());
            }
            // An input table that keeps nothing: the same on every server, for
            // the materialized view that reads its inserts there.
            return Ok(vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c}\n{columns}\nENGINE = Null"
            )]);
        }
        let open = engine.find('(').ok_or_else(unsupported)?;
        let kind = engine[..open].trim();
        if !kind.ends_with("MergeTree") || kind.starts_with("Replicated") {
            return Err(unsupported());
        }
        let close = open + engine[open..].find(')').ok_or_else(unsupported)?;
        let args = engine[open + 1..close].trim();
        let tail = engine[close + 1..].trim();

        let local = format!("{table}{LOCAL_SUFFIX}");
        let zk = format!("'/clickhouse/tables/{{shard}}/{db}.{local}', '{{replica}}'");
        let replicated_args = if args.is_empty() { zk } else { format!("{zk}, {args}") };
        let key = if has_column(columns, "client_id") { "cityHash64(client_id)" } else { "rand()" };
        Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {c}\n{columns}\nENGINE = Replicated{kind}({replicated_args})\n{tail}"
            )
            .trim_end()
            .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {db}.{local} ENGINE = Distributed({c}, {db}, {local}, {key})"
            ),
        ])
    }
}

fn first_line(s: &str) -> String {
    strip_comments(s).trim().lines().next().unwrap_or_default().to_owned()
}

fn strip_comments(s: &str) -> String {
    s.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n")
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &s[prefix.len()..])
}

fn find_ci(s: &str, needle: &str) -> Option<usize> {
    s.to_ascii_uppercase().find(&needle.to_ascii_uppercase())
}

/// `word` standing alone (not inside an identifier), case-insensitively.
fn find_word_ci(s: &str, word: &str) -> Option<usize> {
    let upper = s.to_ascii_uppercase();
    upper.match_indices(&word.to_ascii_uppercase()).map(|(i, _)| i).find(|&i| {
        let before = upper[..i].chars().next_back();
        let after = upper[i + word.len()..].chars().next();
        before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
            && after.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
    })
}

fn has_column(columns: &str, name: &str) -> bool {
    columns.trim_start_matches('(').split(',').any(|c| c.split_whitespace().next() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_view_reads_its_per_server_source_and_the_shard_s_local_tables() {
        let c = Cluster::new("ricochet", "default").unwrap();
        let null = c.rewrite("CREATE TABLE IF NOT EXISTS t_in\n(\n    a UInt32\n)\nENGINE = Null").unwrap();
        assert_eq!(
            null,
            vec!["CREATE TABLE IF NOT EXISTS default.t_in ON CLUSTER ricochet\n(\n    a UInt32\n)\nENGINE = Null"]
        );
        let view = c
            .rewrite(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS\nSELECT a FROM t_in ANY INNER JOIN \
                 (SELECT a FROM owners WHERE (a) IN (SELECT a FROM owners)) USING (a)",
            )
            .unwrap();
        assert_eq!(
            view,
            vec![
                "CREATE MATERIALIZED VIEW IF NOT EXISTS default.v ON CLUSTER ricochet TO default.t_local AS \
                 SELECT a FROM default.t_in ANY INNER JOIN (SELECT a FROM default.owners_local WHERE (a) IN \
                 (SELECT a FROM default.owners_local)) USING (a)"
            ]
        );
    }

    #[test]
    fn every_migration_is_rewritten_to_a_replicated_table_and_a_distributed_one() {
        let cluster = Cluster::new("ricochet", "default").unwrap();
        for (version, sql) in crate::migrations::MIGRATIONS {
            for statement in crate::migrations::statements(sql) {
                let out = cluster.rewrite(&statement).unwrap_or_else(|e| panic!("{version}: {e}"));
                if !strip_comments(&statement).trim_start().starts_with("CREATE TABLE") {
                    continue;
                }
                if statement.trim_end().ends_with("ENGINE = Null") {
                    // An input table: the same on every server, nothing to replicate.
                    assert_eq!(out.len(), 1, "{version}");
                    assert!(out[0].contains("ON CLUSTER ricochet"), "{}", out[0]);
                    continue;
                }
                assert_eq!(out.len(), 2, "{version}");
                assert!(out[0].contains("ON CLUSTER ricochet") && out[0].contains("ENGINE = Replicated"), "{}", out[0]);
                assert!(out[0].contains("'/clickhouse/tables/{shard}/default."), "{}", out[0]);
                assert!(out[1].contains("ENGINE = Distributed(ricochet, default, "), "{}", out[1]);
            }
        }
    }

    #[test]
    fn engine_arguments_and_the_rest_of_the_statement_are_kept() {
        let cluster = Cluster::new("c1", "db").unwrap();
        let out = cluster
            .rewrite(
                "-- doc\nCREATE TABLE IF NOT EXISTS links\n(\n    link_id String,\n    client_id String,\n    version UInt64\n)\nENGINE = ReplacingMergeTree(version)\nORDER BY link_id",
            )
            .unwrap();
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS db.links_local ON CLUSTER c1\n(\n    link_id String,\n    client_id String,\n    version UInt64\n)\n\
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.links_local', '{replica}', version)\nORDER BY link_id"
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.links ON CLUSTER c1 AS db.links_local ENGINE = Distributed(c1, db, links_local, cityHash64(client_id))"
        );
        let out = cluster
            .rewrite(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version String) ENGINE = MergeTree() ORDER BY version",
            )
            .unwrap();
        assert!(out[0]
            .contains("ReplicatedMergeTree('/clickhouse/tables/{shard}/db.schema_migrations_local', '{replica}')"));
        assert!(out[1].ends_with("rand())"), "no client_id: spread evenly");
        let out = cluster.rewrite("ALTER TABLE click_events ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0").unwrap();
        assert_eq!(
            out[0],
            "ALTER TABLE db.click_events_local ON CLUSTER c1 ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0"
        );
        assert_eq!(out[1], "DROP TABLE IF EXISTS db.click_events ON CLUSTER c1");
        assert!(out[2].ends_with("Distributed(c1, db, click_events_local, cityHash64(client_id))"), "{}", out[2]);
    }

    #[test]
    fn views_data_migrations_and_renames() {
        let cluster = Cluster::new("c1", "db").unwrap();
        assert_eq!(
            cluster.rewrite("CREATE VIEW IF NOT EXISTS v AS\nSELECT a FROM t\nWHERE g = 60").unwrap(),
            vec!["CREATE VIEW IF NOT EXISTS db.v ON CLUSTER c1 AS\nSELECT a FROM t\nWHERE g = 60"]
        );
        assert_eq!(
            cluster
                .rewrite("INSERT INTO new (a, b)\nSELECT a, toDateTime(b) FROM old_v1\nARRAY JOIN [1] AS g\nWHERE a != ''")
                .unwrap(),
            vec!["INSERT INTO db.new_local (a, b)\nSELECT a, toDateTime(b) FROM db.old_v1_local\nARRAY JOIN [1] AS g\nWHERE a != ''"]
        );
        let out = cluster.rewrite("RENAME TABLE old TO old_v1").unwrap();
        assert_eq!(out[0], "RENAME TABLE db.old_local TO db.old_v1_local ON CLUSTER c1");
        assert_eq!(out[1], "DROP TABLE IF EXISTS db.old ON CLUSTER c1");
        assert!(out[2].starts_with("CREATE TABLE IF NOT EXISTS db.old_v1 ON CLUSTER c1 AS db.old_v1_local ENGINE = Distributed(c1, db, old_v1_local"));
    }

    #[test]
    fn an_input_table_is_altered_as_it_is_on_every_server() {
        let cluster = Cluster::new("ricochet", "default").unwrap();
        let out = cluster.rewrite("ALTER TABLE click_events_in\n    ADD COLUMN device String").unwrap();
        assert_eq!(
            out,
            vec![
                "DROP TABLE IF EXISTS default.click_events_in ON CLUSTER ricochet",
                "CREATE TABLE IF NOT EXISTS default.click_events_in ON CLUSTER ricochet AS default.click_events_local ENGINE = Null"
            ]
        );
        let out = cluster.rewrite("ALTER TABLE click_rollups ADD COLUMN d String, MODIFY ORDER BY (grain, d)").unwrap();
        assert_eq!(
            out[0],
            format!(
                "{EACH_SHARD}ALTER TABLE default.click_rollups_local ADD COLUMN d String, MODIFY ORDER BY (grain, d)"
            ),
            "a sort key change runs on each shard, not ON CLUSTER"
        );
        let out = cluster.rewrite("ALTER TABLE click_events ADD COLUMN device String").unwrap();
        assert!(out[0].starts_with("ALTER TABLE default.click_events_local ON CLUSTER"), "{out:?}");
        assert!(
            cluster.rewrite("CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Null").is_err(),
            "an input table's name ends in _in"
        );
        let out = cluster.rewrite("CREATE TABLE IF NOT EXISTS click_events_in AS click_events ENGINE = Null").unwrap();
        assert_eq!(
            out,
            vec!["CREATE TABLE IF NOT EXISTS default.click_events_in ON CLUSTER ricochet AS default.click_events_local ENGINE = Null"]
        );
    }

    #[test]
    fn a_bare_select_runs_as_it_is() {
        let cluster = Cluster::new("c1", "db").unwrap();
        assert_eq!(cluster.rewrite("-- a no-op now\nSELECT 1").unwrap(), vec!["SELECT 1"]);
        assert!(cluster.rewrite("SELECTED things").is_err());
    }

    #[test]
    fn what_it_cannot_rewrite_is_an_error() {
        let cluster = Cluster::new("c1", "db").unwrap();
        for s in [
            "CREATE TABLE t (x UInt8) ENGINE = MergeTree() ORDER BY x",
            "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Memory",
            "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY x",
        ] {
            assert!(matches!(cluster.rewrite(s), Err(ClusterError::Unsupported(_))), "{s}");
        }
        assert!(Cluster::new("c1; DROP", "db").is_err());
        assert!(cluster.rewrite("RENAME TABLE a TO b, c TO d").is_err());
        assert!(cluster.rewrite("INSERT INTO a VALUES (1)").is_err());
        assert!(Cluster::new("c1", "").is_err());
    }
}
