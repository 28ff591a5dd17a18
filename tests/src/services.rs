//! Ricochet's own binaries, started as real processes against [`Servers`].

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::servers::Servers;
use crate::{free_port, repo_root};

/// Path of a workspace binary built by `cargo build --bins` (the test command does this).
pub fn bin(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (infra/test.sh does)", path.display());
    path
}

/// A running Ricochet service with an HTTP port.
pub struct Service {
    pub proc: Proc,
    pub port: u16,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: every thread of the process stops at once (a VM pause, a
    /// cgroup freeze, a long stall): no Kafka heartbeat, no write, until
    /// [`Service::thaw`].
    pub fn freeze(&self) {
        crate::servers::signal(self.proc.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`Service::freeze`]: the process carries on where it stopped.
    pub fn thaw(&self) {
        crate::servers::signal(self.proc.pid(), libc::SIGCONT);
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.url());
        for _ in 0..600 {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            self.proc.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("service at {} not ready within 60 s:\n{}", self.url(), self.proc.log_tail());
    }
}

fn command(name: &str, servers: &Servers, port: u16, env: &[(&str, String)]) -> Command {
    command_for(name, &servers.kafka.brokers(), &servers.clickhouse.url(), port, env)
}

fn command_for(name: &str, brokers: &str, clickhouse_url: &str, port: u16, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.current_dir(repo_root())
        .env("RICOCHET_LISTEN", format!("127.0.0.1:{port}"))
        .env("RICOCHET_KAFKA_BROKERS", brokers)
        .env("RICOCHET_CLICKHOUSE_URL", clickhouse_url)
        .env("RICOCHET_CLICKS_PARTITIONS", crate::PARTITIONS.to_string())
        .env("RICOCHET_ADMIN_KEY", crate::client::ADMIN_KEY)
        // The error, not a backtrace, is what a failing test should show.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts `ricochet-redirect` and waits until its registry is loaded.
pub async fn redirect(servers: &Servers, name: &str, env: &[(&str, String)]) -> Service {
    let port = free_port();
    let mut cmd = command("ricochet-redirect", servers, port, env);
    cmd.env("RICOCHET_NODE_ID", name);
    // Each edge gets its own spool, kept across restarts of the same name.
    if !env.iter().any(|(k, _)| *k == "RICOCHET_SPOOL_DIR") {
        cmd.env("RICOCHET_SPOOL_DIR", servers.path().join(format!("{name}-spool")));
    }
    let proc = Proc::spawn(name, cmd, &servers.path().join(format!("{name}.log")));
    let mut s = Service { proc, port };
    s.wait_ready().await;
    s
}

/// The verdict delay of aggregators whose test does not set one: short, so
/// that tests about counting do not wait the production 10 s for each click
/// (`tests/tests/verdicts.rs` sets its own).
pub const TEST_VERDICT_DELAY_MS: u64 = 300;

/// Starts `ricochet-aggregator` and waits until its operations listener
/// (`/readyz`, `/metrics`, this member's `/v1/status`) is ready.
pub async fn aggregator(servers: &Servers, name: &str, env: &[(&str, String)]) -> Service {
    let port = free_port();
    let mut cmd = command("ricochet-aggregator", servers, port, env);
    if !env.iter().any(|(k, _)| *k == "RICOCHET_VERDICT_DELAY_MS") {
        cmd.env("RICOCHET_VERDICT_DELAY_MS", TEST_VERDICT_DELAY_MS.to_string());
    }
    let proc = Proc::spawn(name, cmd, &servers.path().join(format!("{name}.log")));
    let mut s = Service { proc, port };
    s.wait_ready().await;
    s
}

/// Starts `ricochet-api` (links, stats, the group-wide `/v1/status`) and waits
/// until its registry is loaded.
pub async fn api(servers: &Servers, name: &str, env: &[(&str, String)]) -> Service {
    let port = free_port();
    let mut cmd = command("ricochet-api", servers, port, &[]);
    // The API's own ClickHouse user, with its profile and per-client quota
    // (infra/clickhouse/users.xml), as on the local stack.
    cmd.env("RICOCHET_CLICKHOUSE_USER", "ricochet_api");
    // Webhook receivers in tests listen on 127.0.0.1, which the API refuses
    // by default; a test of that refusal passes `false`.
    if !env.iter().any(|(k, _)| *k == "RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS") {
        cmd.env("RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true");
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let proc = Proc::spawn(name, cmd, &servers.path().join(format!("{name}.log")));
    let mut s = Service { proc, port };
    s.wait_ready().await;
    s
}

/// Starts `ricochet-aggregator` against one replica of a replicated cluster,
/// in cluster mode (`RICOCHET_CLICKHOUSE_CLUSTER`), and waits until it is ready.
pub async fn cluster_aggregator(
    servers: &crate::servers::ReplicatedServers,
    replica: usize,
    name: &str,
    env: &[(&str, String)],
) -> Service {
    let port = free_port();
    let mut cmd =
        command_for("ricochet-aggregator", &servers.kafka.brokers(), &servers.replicas[replica].url(), port, env);
    cmd.env("RICOCHET_CLICKHOUSE_CLUSTER", crate::servers::CLUSTER);
    if !env.iter().any(|(k, _)| *k == "RICOCHET_VERDICT_DELAY_MS") {
        cmd.env("RICOCHET_VERDICT_DELAY_MS", TEST_VERDICT_DELAY_MS.to_string());
    }
    let proc = Proc::spawn(name, cmd, &servers.path().join(format!("{name}.log")));
    let mut s = Service { proc, port };
    s.wait_ready().await;
    s
}

/// [`cluster_aggregator`] on a sharded cluster: also given
/// `RICOCHET_CLICKHOUSE_SHARD_URLS`, one replica's HTTP URL per shard in shard
/// order ([`ReplicatedServers::shard_urls`](crate::servers::ReplicatedServers::shard_urls)),
/// so that it can write each partition's rollups and positions to the shard
/// that owns the partition, whichever shard `replica` is on.
pub async fn sharded_aggregator(
    servers: &crate::servers::ReplicatedServers,
    replica: usize,
    name: &str,
    env: &[(&str, String)],
) -> Service {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == SHARD_URLS) {
        env.push((SHARD_URLS, servers.shard_urls(replica).join(",")));
    }
    cluster_aggregator(servers, replica, name, &env).await
}

/// The aggregator's list of one replica per shard, in shard order.
pub const SHARD_URLS: &str = "RICOCHET_CLICKHOUSE_SHARD_URLS";

/// Starts `ricochet-webhooks` (the deliverer) and waits until it has read
/// the endpoints. Private targets are allowed unless `env` says otherwise:
/// the tests' receivers listen on loopback.
pub async fn webhooks(servers: &Servers, name: &str, env: &[(&str, String)]) -> Service {
    let port = free_port();
    let mut cmd = command("ricochet-webhooks", servers, port, &[]);
    cmd.env("RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let proc = Proc::spawn(name, cmd, &servers.path().join(format!("{name}.log")));
    let mut s = Service { proc, port };
    s.wait_ready().await;
    s
}
