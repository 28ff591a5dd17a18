//! ClickHouse and the Kafka broker, each in its own state directory; and a
//! replicated ClickHouse cluster (ZooKeeper and one or more shards of replicas).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, repo_root};

/// Up to three tries of `start` (each on fresh ports): a port picked as free
/// can be taken by another process before the server binds it.
async fn start_retrying<T, F, Fut>(what: &str, mut start: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    for attempt in 1.. {
        match start().await {
            Ok(server) => return server,
            Err(log) if attempt < 3 => eprintln!("{what} start-up failed, retrying on other ports:\n{log}"),
            Err(log) => panic!("{what} did not start:\n{log}"),
        }
    }
    unreachable!()
}

/// A private ClickHouse server.
pub struct ClickHouse {
    proc: Proc,
    dir: PathBuf,
    pub http_port: u16,
    pub tcp_port: u16,
    interserver_port: u16,
    http: reqwest::Client,
}

impl ClickHouse {
    /// Starts on fresh free ports, retrying when the server dies during start-up.
    pub async fn start(dir: &Path) -> ClickHouse {
        start_retrying("clickhouse", || async {
            let mut ch = Self::spawned(dir, [free_port(), free_port(), free_port()]);
            ch.try_wait_ready().await.map(|()| ch)
        })
        .await
    }

    /// Starts on the given ports, with `config_d` written to `dir/config.d/`
    /// (the server merges it into its config): a replica, whose peers must
    /// know its ports before it starts.
    pub async fn start_on(dir: &Path, ports: [u16; 3], config_d: &str) -> ClickHouse {
        Self::try_start_on(dir, ports, config_d).await.unwrap_or_else(|log| panic!("clickhouse did not start:\n{log}"))
    }

    /// [`ClickHouse::start_on`], `Err(log tail)` if the server does not come up.
    async fn try_start_on(dir: &Path, ports: [u16; 3], config_d: &str) -> Result<ClickHouse, String> {
        std::fs::create_dir_all(dir.join("config.d")).expect("config.d");
        std::fs::write(dir.join("config.d/ricochet.xml"), config_d).expect("config.d/ricochet.xml");
        let mut ch = Self::spawned(dir, ports);
        ch.try_wait_ready().await.map(|()| ch)
    }

    fn spawned(dir: &Path, [http_port, tcp_port, interserver_port]: [u16; 3]) -> ClickHouse {
        ClickHouse {
            proc: Self::spawn(dir, http_port, tcp_port, interserver_port),
            dir: dir.to_owned(),
            http_port,
            tcp_port,
            interserver_port,
            // ClickHouse closes a connection idle for `keep_alive_timeout`
            // (3 s, infra/clickhouse/config.xml.tmpl); a pooled connection
            // reused at that instant fails with "error sending request".
            // Dropping idle connections sooner, as the clickhouse crate does
            // (2 s), closes that race.
            http: reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(1)).build().expect("http client"),
        }
    }

    fn spawn(dir: &Path, http_port: u16, tcp_port: u16, interserver_port: u16) -> Proc {
        let mut cmd = Command::new(repo_root().join("infra/clickhouse/run.sh"));
        cmd.arg(dir).arg(http_port.to_string()).arg(tcp_port.to_string()).arg(interserver_port.to_string());
        std::fs::create_dir_all(dir).expect("clickhouse dir");
        Proc::spawn("clickhouse-server", cmd, &dir.join("run.log"))
    }

    async fn wait_ready(&mut self) {
        if let Err(log) = self.try_wait_ready().await {
            panic!("clickhouse did not come back:\n{log}");
        }
    }

    /// `Err(log tail)` if the server exits or does not answer `/ping` within 60 s.
    async fn try_wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/ping", self.url());
        let http = self.http.clone();
        for _ in 0..600 {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if !self.proc.is_running() {
                let err_log =
                    std::fs::read_to_string(self.dir.join("log/clickhouse-server.err.log")).unwrap_or_default();
                let tail: Vec<&str> = err_log.lines().rev().take(5).collect();
                return Err(format!("{}\n{}", self.proc.log_tail(), tail.join("\n")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no answer to /ping within 60 s\n{}", self.proc.log_tail()))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's users, profiles and quotas (a copy of
    /// `infra/clickhouse/users.xml`), which it rereads within seconds of a change.
    pub fn users_xml(&self) -> PathBuf {
        self.dir.join("users.xml")
    }

    /// The product's own ClickHouse client for this server (database `default`,
    /// user `default`, no compression), for tests that call warehouse code.
    pub fn warehouse_client(&self) -> clickhouse::Client {
        ricochet_warehouse::ClickHouseConfig {
            clickhouse_url: self.url(),
            clickhouse_database: "default".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: String::new(),
            clickhouse_lz4: false,
            clickhouse_cluster: None,
            clickhouse_ca_file: None,
        }
        .client()
    }

    /// Runs SQL over HTTP and returns the body; errors carry ClickHouse's message.
    pub async fn query(&self, sql: &str) -> anyhow::Result<String> {
        let r = self.http.post(self.url()).body(sql.to_owned()).send().await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(status.is_success(), "clickhouse {status}: {body}");
        Ok(body)
    }

    /// A single number, e.g. `SELECT count() FROM t`.
    pub async fn number(&self, sql: &str) -> u64 {
        let body = self.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        body.trim().parse().unwrap_or_else(|e| panic!("{sql}: not a number {body:?}: {e}"))
    }

    /// Stops the server (SIGTERM, then SIGKILL): an outage.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGSTOP: the server freezes (a stalled host, a VM pause). The kernel
    /// still accepts connections and buffers requests; nothing is read or
    /// answered until [`ClickHouse::thaw`], which runs them.
    pub fn freeze(&self) {
        signal(self.proc.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`ClickHouse::freeze`].
    pub fn thaw(&self) {
        signal(self.proc.pid(), libc::SIGCONT);
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.proc = Self::spawn(&self.dir, self.http_port, self.tcp_port, self.interserver_port);
        self.wait_ready().await;
    }
}

/// Sends `sig` to `pid`; panics if the process is gone.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    assert!(pid != 0, "no process to signal");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// A private standalone ZooKeeper (`infra/zookeeper/run.sh`).
pub struct ZooKeeper {
    proc: Proc,
    pub port: u16,
}

impl ZooKeeper {
    pub async fn start(dir: &Path) -> ZooKeeper {
        std::fs::create_dir_all(dir).expect("zookeeper dir");
        start_retrying("zookeeper", || async {
            let port = free_port();
            let mut cmd = Command::new(repo_root().join("infra/zookeeper/run.sh"));
            cmd.arg(dir).arg(port.to_string());
            let mut zk = ZooKeeper { proc: Proc::spawn("zookeeper", cmd, &dir.join("run.log")), port };
            zk.try_wait_ready().await.map(|()| zk)
        })
        .await
    }

    /// Ready when it opens a session. (`ruok` answers `imok` a few hundred ms
    /// before the server takes sessions: meanwhile it closes every connection
    /// at the handshake, and ClickHouse 18.16 then crashes, SIGSEGV in
    /// `zkutil::ZooKeeper::createImpl`, at its first replicated DDL.)
    async fn try_wait_ready(&mut self) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = format!("127.0.0.1:{}", self.port);
        // A ConnectRequest: protocol version, last zxid seen, timeout (ms),
        // session id, password (length-prefixed, 16 zero bytes).
        let mut request = Vec::new();
        request.extend_from_slice(&0i32.to_be_bytes());
        request.extend_from_slice(&0i64.to_be_bytes());
        request.extend_from_slice(&2000i32.to_be_bytes());
        request.extend_from_slice(&0i64.to_be_bytes());
        request.extend_from_slice(&16i32.to_be_bytes());
        request.extend_from_slice(&[0; 16]);
        let mut framed = (request.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        for _ in 0..600 {
            if let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await {
                let mut length = [0u8; 4];
                if conn.write_all(&framed).await.is_ok()
                    && tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut length))
                        .await
                        .is_ok_and(|r| r.is_ok())
                    && i32::from_be_bytes(length) > 0
                {
                    return Ok(());
                }
            }
            if !self.proc.is_running() {
                return Err(self.proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no session within 60 s\n{}", self.proc.log_tail()))
    }
}

/// The cluster's name in every replica's `<remote_servers>`.
pub const CLUSTER: &str = "ricochet";

/// ZooKeeper, a ClickHouse cluster of replicated shards, and the broker, in
/// one temporary directory. Replicas are numbered across the cluster, shard
/// by shard: with two replicas per shard, `replicas[0]` and `replicas[1]`
/// are `r1` and `r2` of shard `01`, `replicas[2]` and `replicas[3]` are `r3`
/// and `r4` of shard `02`, and so on ([`ReplicatedServers::shards`]).
pub struct ReplicatedServers {
    pub replicas: Vec<ClickHouse>,
    /// The indices in `replicas` of each shard's replicas, in the order of
    /// `<remote_servers>` (shard `01` first).
    pub shards: Vec<Vec<usize>>,
    pub kafka: Kafka,
    pub zookeeper: ZooKeeper,
    // Dropped last: the servers above stop before their files go.
    pub dir: tempfile::TempDir,
}

impl Drop for ReplicatedServers {
    /// A failed test shows what ZooKeeper and the distributed DDL queue did to
    /// each replica: a lost session explains most stalls of an 18.16 cluster.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        const SIGNS: [&str; 4] = ["Session expired", "ZooKeeper session", "DDLWorker", "Alter is not finished"];
        for (i, r) in self.replicas.iter().enumerate() {
            let log = std::fs::read_to_string(r.dir.join("log/clickhouse-server.err.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| SIGNS.iter().any(|s| l.contains(s))).collect();
            let last = &lines[lines.len().saturating_sub(10)..];
            eprintln!(
                "r{}: {} ZooKeeper or DDL errors in its log{}",
                i + 1,
                lines.len(),
                if last.is_empty() { "" } else { ", the last:" }
            );
            for l in last {
                eprintln!("  {}", l.chars().take(300).collect::<String>());
            }
        }
    }
}

impl ReplicatedServers {
    /// One shard of two replicas.
    pub async fn start() -> ReplicatedServers {
        Self::start_sharded(1, 2).await
    }

    /// `shards` shards of `replicas_per_shard` replicas each, every server
    /// with the same `<remote_servers>` (one `<shard>` per shard, internal
    /// replication) and its own `<macros>` (`<shard>01</shard>`…, `<replica>r1</replica>`…).
    pub async fn start_sharded(shards: usize, replicas_per_shard: usize) -> ReplicatedServers {
        assert!(shards >= 1 && replicas_per_shard >= 1, "a cluster needs a shard and a replica");
        let keep = std::env::var_os("RICOCHET_KEEP_TEST_DIRS").is_some();
        let dir =
            tempfile::Builder::new().prefix("ricochet-cluster-").disable_cleanup(keep).tempdir().expect("tempdir");
        let (zk_dir, kafka_dir) = (dir.path().join("zookeeper"), dir.path().join("kafka"));
        let (zookeeper, kafka) = tokio::join!(ZooKeeper::start(&zk_dir), Kafka::start(&kafka_dir));
        let layout: Vec<Vec<usize>> =
            (0..shards).map(|s| (s * replicas_per_shard..(s + 1) * replicas_per_shard).collect()).collect();
        // ClickHouse's own default ZooKeeper session (30 s), not a short one: a
        // server starved of CPU on a busy test machine would lose its session,
        // and 18.16 then never applies an ALTER to that replica again until it
        // is restarted (docs/cluster.md), so the next migration hangs.
        // Every server must know its peers' ports before it starts, so a port
        // taken by another test in the meantime fails the whole set: it starts
        // again on fresh ports, from empty state directories.
        let (members_of, base, zk) = (&layout, dir.path(), zookeeper.port);
        let replicas = start_retrying("clickhouse cluster", || async move {
            let ports: Vec<[u16; 3]> =
                (0..shards * replicas_per_shard).map(|_| [free_port(), free_port(), free_port()]).collect();
            let shards_xml: String = members_of
                .iter()
                .map(|members| {
                    let replicas: String = members
                        .iter()
                        .map(|&i| format!("<replica><host>127.0.0.1</host><port>{}</port></replica>", ports[i][1]))
                        .collect();
                    format!("<shard><internal_replication>true</internal_replication>{replicas}</shard>")
                })
                .collect();
            let starts = ports.iter().enumerate().map(|(i, p)| {
                let config = format!(
                    "<?xml version=\"1.0\"?>\n<yandex>\n\
                     <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>\
                     <session_timeout_ms>30000</session_timeout_ms></zookeeper>\n\
                     <remote_servers><{CLUSTER}>{shards_xml}</{CLUSTER}></remote_servers>\n\
                     <macros><shard>{shard:02}</shard><replica>r{n}</replica></macros>\n\
                     <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>\n</yandex>\n",
                    shard = i / replicas_per_shard + 1,
                    n = i + 1
                );
                let dir = base.join(format!("clickhouse-r{}", i + 1));
                let _ = std::fs::remove_dir_all(&dir);
                async move { ClickHouse::try_start_on(&dir, *p, &config).await }
            });
            // Dropping the servers that did start stops them.
            futures::future::join_all(starts).await.into_iter().collect::<Result<Vec<_>, _>>()
        })
        .await;
        ReplicatedServers { replicas, shards: layout, kafka, zookeeper, dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The shard (index into [`Self::shards`]) `replica` belongs to.
    pub fn shard_of(&self, replica: usize) -> usize {
        self.shards.iter().position(|s| s.contains(&replica)).expect("a replica of this cluster")
    }

    /// One HTTP URL per shard, shard `01` first: `replica`'s own URL for its
    /// shard, and for every other shard the replica at the same place in
    /// that shard (so that members on different replicas spread their reads).
    pub fn shard_urls(&self, replica: usize) -> Vec<String> {
        let own = self.shard_of(replica);
        let place = self.shards[own].iter().position(|&r| r == replica).expect("in its shard");
        self.shards
            .iter()
            .enumerate()
            .map(|(s, members)| {
                let r = if s == own { replica } else { members[place % members.len()] };
                self.replicas[r].url()
            })
            .collect()
    }
}

/// A private single-node Kafka-protocol broker (nisshi, sqlite storage).
pub struct Kafka {
    proc: Proc,
    dir: PathBuf,
    pub port: u16,
    /// More `nisshi broker` flags, kept for restarts (e.g. `--cert`, `--key`).
    args: Vec<String>,
}

impl Kafka {
    pub async fn start(dir: &Path) -> Kafka {
        Self::start_with(dir, &[]).await
    }

    /// Starts with more `nisshi broker` flags: `--cert C --key K` makes its
    /// only listener TLS (tests/tests/tls.rs).
    pub async fn start_with(dir: &Path, args: &[String]) -> Kafka {
        start_retrying("broker", || async {
            let port = free_port();
            let args = args.to_vec();
            let mut k = Kafka { proc: Self::spawn(dir, port, &args), dir: dir.to_owned(), port, args };
            k.try_wait_ready().await.map(|()| k)
        })
        .await
    }

    fn spawn(dir: &Path, port: u16, args: &[String]) -> Proc {
        std::fs::create_dir_all(dir).expect("kafka dir");
        let mut cmd = Command::new(repo_root().join("infra/kafka/run.sh"));
        cmd.arg(dir).arg(port.to_string()).args(["--group-initial-rebalance-delay", "0s"]).args(args);
        Proc::spawn("nisshi", cmd, &dir.join("run.log"))
    }

    async fn wait_ready(&mut self) {
        if let Err(log) = self.try_wait_ready().await {
            panic!("broker did not come back:\n{log}");
        }
    }

    async fn try_wait_ready(&mut self) -> Result<(), String> {
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if !self.proc.is_running() {
                return Err(self.proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("not listening within 60 s\n{}", self.proc.log_tail()))
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub async fn restart(&mut self) {
        self.proc = Self::spawn(&self.dir, self.port, &self.args);
        self.wait_ready().await;
    }
}

/// Both servers in one temporary directory, removed after they stop.
pub struct Servers {
    pub clickhouse: ClickHouse,
    pub kafka: Kafka,
    // Dropped last: the servers above stop before their files go.
    pub dir: tempfile::TempDir,
}

impl Servers {
    pub async fn start() -> Servers {
        // RICOCHET_KEEP_TEST_DIRS=1 keeps logs and data of every run for a post-mortem.
        let keep = std::env::var_os("RICOCHET_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new().prefix("ricochet-test-").disable_cleanup(keep).tempdir().expect("tempdir");
        let (ch_dir, kafka_dir) = (dir.path().join("clickhouse"), dir.path().join("kafka"));
        let (clickhouse, kafka) = tokio::join!(ClickHouse::start(&ch_dir), Kafka::start(&kafka_dir));
        Servers { clickhouse, kafka, dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory (and its logs) after the test, for debugging.
    pub fn keep(self) -> PathBuf {
        let Servers { clickhouse, kafka, dir } = self;
        drop((clickhouse, kafka));
        dir.keep()
    }
}
