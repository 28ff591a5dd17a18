//! Test harness: real servers and real Ricochet processes, started in a
//! temporary directory on free ports, stopped when their handle drops (also
//! when a test panics), and killed by the kernel if the test process dies
//! (`PR_SET_PDEATHSIG`), so no run leaks servers into the next.
//!
//! Servers are started through the project's own scripts
//! (`infra/clickhouse/run.sh`, `infra/kafka/run.sh`), which `exec` the server:
//! the child we hold *is* the server.
//!
//! - [`process`]: the child-process guard.
//! - [`servers`]: ClickHouse and the Kafka broker.
//! - [`services`]: the `ricochet-redirect`, `ricochet-aggregator`, `ricochet-api` and `ricochet-webhooks` binaries.
//! - [`receiver`]: a webhook receiver that checks signatures and can fail, stall or go down.
//! - [`sql`]: the product's SQL, from ClickHouse's query log and from its sources.
//! - [`feed`]: clicks straight into Kafka, and checking ClickHouse counted them exactly once.

pub mod client;
pub mod feed;
pub mod load;
pub mod process;
pub mod receiver;
pub mod servers;
pub mod services;
pub mod sql;

use std::net::TcpListener;
use std::path::PathBuf;

/// Partitions of the `clicks` topic in every test (the services create it).
pub const PARTITIONS: i64 = 4;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repo root").to_path_buf()
}

/// A port nobody is listening on right now, chosen at random below the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768 and up).
///
/// Not port 0: a port the kernel hands out is an ephemeral one, and while a
/// test has its ClickHouse stopped for a minute, any outgoing connection on
/// the machine (or another test's port 0) may take that port, and the
/// restart fails with "Address already in use" (seen in CI). Ports below
/// the ephemeral range are only ever taken by an explicit bind, and these
/// tests pick theirs at random among ~17,000.
pub fn free_port() -> u16 {
    use rand::Rng;
    const PORTS: std::ops::Range<u16> = 15_000..32_000;
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let port = rng.random_range(PORTS);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?} after 1,000 tries");
}

/// Retries `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The test venv's Python, with chDB (`infra/install.sh` makes it), or
/// `RICOCHET_TEST_PYTHON`.
pub fn test_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RICOCHET_TEST_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let python = cache.join("ricochet/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run infra/install.sh (it installs chdb into the test venv)",
        python.display()
    );
    python
}
