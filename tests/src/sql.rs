//! The product's SQL, as it reaches ClickHouse: read back from 18.16's
//! `system.query_log` after a test drove the services, and checked against
//! every SQL string literal in the product's sources, so that a query the
//! test did not drive is an error rather than a gap (see
//! `tests/tests/current_clickhouse.rs`).

use std::path::Path;
use std::str::FromStr;

use proc_macro2::{TokenStream, TokenTree};

use crate::servers::ClickHouse;

/// Crates whose SQL is the product's.
pub const PRODUCT_CRATES: &[&str] = &["aggregator", "api", "warehouse", "registry", "redirect", "ingest", "webhooks"];

/// Files whose SQL is not run on a single server, and why; everything else must be covered.
pub const NOT_ON_ONE_SERVER: &[(&str, &str)] = &[
    ("warehouse/src/cluster.rs", "cluster-mode DDL: run on 18.16 replicas by tests/tests/cluster.rs"),
    (
        "aggregator/src/sql.rs#system.replicas",
        "cluster mode's pending-quorum check (system.replicas, system.zookeeper): tests/tests/cluster.rs",
    ),
    (
        "aggregator/src/sql.rs#KILL QUERY",
        "the fence killing an insert that outlived it (a writer frozen mid-insert): on 18.16 by \
         tests/tests/aggregator_frozen_member.rs; on chdb by current_clickhouse.rs",
    ),
    (
        "aggregator/src/sql.rs#MODIFY TTL",
        "TTL, only on servers >= 20.8 (18.16 runs the job: tests/tests/retention.rs); \
         on chdb by current_clickhouse.rs (retention::ttl_statements)",
    ),
];

/// A SQL string literal in the product's sources.
#[derive(Debug, Clone)]
pub struct Literal {
    pub file: String,
    pub value: String,
}

impl Literal {
    /// The constant pieces of the literal: what is left between `format!`
    /// placeholders and bound `?`s, whitespace collapsed. Each must occur in
    /// some statement ClickHouse received.
    pub fn fragments(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut piece = String::new();
        let mut depth = 0;
        for c in self.value.chars() {
            match c {
                '{' => {
                    depth += 1;
                    out.push(std::mem::take(&mut piece));
                }
                '}' if depth > 0 => depth -= 1,
                '?' if depth == 0 => out.push(std::mem::take(&mut piece)),
                _ if depth == 0 => piece.push(c),
                _ => {}
            }
        }
        out.push(piece);
        out.into_iter().map(|p| collapse(&p)).filter(|p| p.len() >= 4).collect()
    }
}

/// Runs of whitespace become one space; ends trimmed.
pub fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Looks like SQL: a keyword, a function call on a column, or a bound comparison.
fn is_sql(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "SELECT", "INSERT", "ALTER", "CREATE", "KILL", "OPTIMIZE", "SYSTEM", "WHERE", "FROM", "GROUP BY", "ORDER BY",
        "UNION", " AND ",
    ];
    let words = KEYWORDS.iter().any(|k| {
        s.match_indices(k).any(|(i, _)| {
            let before = s[..i].chars().next_back();
            let after = s[i + k.len()..].chars().next();
            // `_` too: `RICOCHET_CLICKHOUSE_INSERT_QUORUM` is an identifier, not an INSERT.
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            before.is_none_or(|c| !word(c)) && after.is_none_or(|c| !word(c))
        })
    });
    let call = s.contains("(bucket_start") || s.contains("(event_time") || s.contains("(clicks)");
    words || call || s.contains(" = ?")
}

fn walk(tokens: TokenStream, file: &str, out: &mut Vec<Literal>) {
    let mut previous_ident = String::new();
    for tree in tokens {
        match tree {
            TokenTree::Group(g) => {
                // `#[doc = "…"]` (doc comments) and `#[cfg(test)]`-style attributes hold no queries.
                let first = g.stream().into_iter().next().map(|t| t.to_string()).unwrap_or_default();
                if first != "doc" {
                    walk(g.stream(), file, out);
                }
            }
            TokenTree::Literal(l) => {
                if let Ok(s) = syn::parse_str::<syn::LitStr>(&l.to_string()) {
                    let value = s.value();
                    if is_sql(&value) && previous_ident != "expect" {
                        out.push(Literal { file: file.to_owned(), value });
                    }
                }
            }
            TokenTree::Ident(i) => previous_ident = i.to_string(),
            TokenTree::Punct(_) => {}
        }
    }
}

/// Every SQL string literal outside `#[cfg(test)]` code in [`PRODUCT_CRATES`].
pub fn product_literals(root: &Path) -> Vec<Literal> {
    let mut out = Vec::new();
    for krate in PRODUCT_CRATES {
        let mut stack = vec![root.join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = std::fs::read_to_string(&path).expect("source");
                    // Unit tests sit at the end of a file, after `#[cfg(test)]`.
                    let product = source.split("#[cfg(test)]").next().unwrap_or_default();
                    let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    let tokens = TokenStream::from_str(product).unwrap_or_else(|e| panic!("{rel}: {e}"));
                    walk(tokens, &rel, &mut out);
                }
            }
        }
    }
    out
}

/// Whether `literal` is exempt from coverage (see [`NOT_ON_ONE_SERVER`]).
pub fn exempt(literal: &Literal) -> Option<&'static str> {
    NOT_ON_ONE_SERVER.iter().find_map(|(what, why)| {
        let (file, needle) = what.split_once('#').unwrap_or((what, ""));
        (literal.file == file
            && (needle.is_empty() || literal.value.contains(needle) || literal.value.contains("system.zookeeper")))
        .then_some(*why)
    })
}

/// Every distinct statement the services (the `clickhouse` crate's user agent)
/// ran to completion on `ch`, oldest first.
pub async fn captured(ch: &ClickHouse) -> Vec<String> {
    ch.query("SYSTEM FLUSH LOGS").await.expect("flush logs");
    let body = ch
        .query(
            "SELECT query FROM system.query_log WHERE type = 2 AND http_user_agent LIKE 'clickhouse-rs/%' \
             GROUP BY query ORDER BY min(event_time) FORMAT JSONEachRow",
        )
        .await
        .expect("query_log");
    body.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["query"].as_str().unwrap().to_owned())
        .collect()
}
