//! ClickHouse and the Kafka broker, each in its own state directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, repo_root};

/// A private ClickHouse server.
pub struct ClickHouse {
    proc: Proc,
    dir: PathBuf,
    pub http_port: u16,
    tcp_port: u16,
    http: reqwest::Client,
}

impl ClickHouse {
    /// Starts on fresh free ports, retrying when the server dies during start-up:
    /// a port picked as free can be taken by another process before the server binds it.
    pub async fn start(dir: &Path) -> ClickHouse {
        for attempt in 1.. {
            let (http_port, tcp_port) = (free_port(), free_port());
            let mut ch = ClickHouse {
                proc: Self::spawn(dir, http_port, tcp_port),
                dir: dir.to_owned(),
                http_port,
                tcp_port,
                http: reqwest::Client::new(),
            };
            match ch.try_wait_ready().await {
                Ok(()) => return ch,
                Err(log) if attempt < 3 => {
                    eprintln!("clickhouse start-up failed, retrying on other ports:\n{log}")
                }
                Err(log) => panic!("clickhouse did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    fn spawn(dir: &Path, http_port: u16, tcp_port: u16) -> Proc {
        let mut cmd = Command::new(repo_root().join("infra/clickhouse/run.sh"));
        cmd.arg(dir).arg(http_port.to_string()).arg(tcp_port.to_string()).arg(free_port().to_string());
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

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.proc = Self::spawn(&self.dir, self.http_port, self.tcp_port);
        self.wait_ready().await;
    }
}

/// A private single-node Kafka-protocol broker (nisshi, sqlite storage).
pub struct Kafka {
    proc: Proc,
    dir: PathBuf,
    pub port: u16,
}

impl Kafka {
    pub async fn start(dir: &Path) -> Kafka {
        for attempt in 1.. {
            let port = free_port();
            let mut k = Kafka { proc: Self::spawn(dir, port), dir: dir.to_owned(), port };
            match k.try_wait_ready().await {
                Ok(()) => return k,
                Err(log) if attempt < 3 => {
                    eprintln!("broker start-up failed, retrying on another port:\n{log}")
                }
                Err(log) => panic!("broker did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    fn spawn(dir: &Path, port: u16) -> Proc {
        std::fs::create_dir_all(dir).expect("kafka dir");
        let mut cmd = Command::new(repo_root().join("infra/kafka/run.sh"));
        cmd.arg(dir).arg(port.to_string()).args(["--group-initial-rebalance-delay", "0s"]);
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
        self.proc = Self::spawn(&self.dir, self.port);
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
