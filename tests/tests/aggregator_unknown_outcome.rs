//! Rollup inserts whose outcome the aggregator cannot know: the request
//! reached ClickHouse, but the answer never came back. The aggregator must
//! settle each one (kill it if it still runs, then read the stored positions)
//! and neither lose nor double count a click.
//!
//! A proxy stands in between the aggregator and the real ClickHouse because a
//! real server cannot be made to lose the answer to one particular insert on
//! demand. It forwards every request untouched, except that chosen rollup
//! inserts (`INSERT INTO click_counts_in`, the fenced input of `click_rollups`) are forwarded whole and then
//! their connection to the aggregator is dropped:
//! - `LoseAnswer`: after ClickHouse answered (the insert landed);
//! - `CutAfterRequest`: as soon as the request is through, while the insert may
//!   still be running;
//! - `HoldAnswer`: the answer is held past the aggregator's insert timeout.

use ricochet_aggregator::sql::ROLLUP_INPUT_TABLE;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet_tests::client;
use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Pass,
    LoseAnswer,
    CutAfterRequest,
    HoldAnswer,
}

/// The fault for each rollup insert, in order; inserts past the end pass.
const PLAN: &[Fault] = &[
    Fault::Pass,
    Fault::Pass,
    Fault::LoseAnswer,
    Fault::Pass,
    Fault::CutAfterRequest,
    Fault::Pass,
    Fault::HoldAnswer,
    Fault::Pass,
    Fault::LoseAnswer,
    Fault::Pass,
    Fault::CutAfterRequest,
];

/// Aggregator's `RICOCHET_INSERT_TIMEOUT_SECS`; `HoldAnswer` holds longer.
const INSERT_TIMEOUT_SECS: u64 = 2;

#[derive(Default)]
struct Counters {
    rollup_inserts: AtomicUsize,
    /// Faults injected, by `Fault as usize`.
    injected: [AtomicUsize; 4],
}

struct FaultyProxy {
    url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    async fn start(upstream_port: u16) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = relay(conn, upstream_port, &c).await;
                });
            }
        });
        FaultyProxy { url, counters, task }
    }

    fn injected(&self, fault: Fault) -> usize {
        self.counters.injected[fault as usize].load(Ordering::SeqCst)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP request per connection: the proxy asks ClickHouse to close after
/// answering, so the client never reuses a connection and every request's
/// head is the first thing on its connection.
async fn relay(mut client: TcpStream, upstream_port: u16, c: &Counters) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default();
    let fault = if request_line.contains(ROLLUP_INPUT_TABLE) && request_line.contains("INSERT") {
        let n = c.rollup_inserts.fetch_add(1, Ordering::SeqCst);
        PLAN.get(n).copied().unwrap_or(Fault::Pass)
    } else {
        Fault::Pass
    };
    let mut new_head: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    new_head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    upstream.write_all(new_head.as_bytes()).await?;
    upstream.write_all(&buf[head_end..]).await?;

    match fault {
        Fault::Pass => {
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        }
        Fault::CutAfterRequest => {
            // Forward up to the end of the chunked body, then hang up on the
            // aggregator at once; ClickHouse runs the insert regardless.
            let mut tail = buf[head_end..].to_vec();
            while !tail.ends_with(b"0\r\n\r\n") {
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                upstream.write_all(&chunk[..n]).await?;
                tail.extend_from_slice(&chunk[..n]);
                tail.drain(..tail.len().saturating_sub(5));
            }
            drop(client);
            c.injected[fault as usize].fetch_add(1, Ordering::SeqCst);
            let mut answer = Vec::new();
            let _ = upstream.read_to_end(&mut answer).await;
        }
        Fault::LoseAnswer | Fault::HoldAnswer => {
            let (mut client_rx, client_tx) = client.into_split();
            let (mut up_rx, mut up_tx) = upstream.into_split();
            let forward = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_rx, &mut up_tx).await;
            });
            // ClickHouse answers an insert once it has finished it.
            let mut first = [0u8; 1];
            let _ = up_rx.read(&mut first).await;
            if fault == Fault::HoldAnswer {
                tokio::time::sleep(Duration::from_secs(INSERT_TIMEOUT_SECS + 1)).await;
            }
            forward.abort();
            drop(client_tx);
            c.injected[fault as usize].fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_whose_answer_is_lost_are_settled_not_counted_twice() {
    let started = Instant::now();
    let servers = Servers::start().await;
    let proxy = FaultyProxy::start(servers.clickhouse.http_port).await;
    let aggregator = services::aggregator(
        &servers,
        "aggregator",
        &[
            ("RICOCHET_CLICKHOUSE_URL", proxy.url.clone()),
            ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
            ("RICOCHET_INSERT_TIMEOUT_SECS", INSERT_TIMEOUT_SECS.to_string()),
        ],
    )
    .await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(8, 2), 500);
    let planned = PLAN.iter().filter(|f| **f != Fault::Pass).count();
    eventually("every planned fault to be injected", Duration::from_secs(60), || async {
        let injected: usize =
            [Fault::LoseAnswer, Fault::CutAfterRequest, Fault::HoldAnswer].iter().map(|f| proxy.injected(*f)).sum();
        (injected == planned).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;

    feed::assert_counted_exactly(&servers.clickhouse, &tally, Duration::from_secs(30)).await;
    for fault in [Fault::LoseAnswer, Fault::CutAfterRequest, Fault::HoldAnswer] {
        assert!(proxy.injected(fault) > 0, "{fault:?} was injected");
    }
    // The inserts whose answer was lost had landed: settling found them applied
    // (rather than writing the batch a second time).
    let api = aggregator.url();
    let applied = client::metric(&api, "ricochet_aggregator_settled_total{outcome=\"applied\"}").await;
    let not_applied = client::metric(&api, "ricochet_aggregator_settled_total{outcome=\"not_applied\"}").await;
    assert!(applied >= 2.0, "settled as applied: {applied}");
    eprintln!(
        "{} clicks exact; {} rollup inserts, faults: {} answer lost, {} cut after the request, \
         {} answer held; settled {applied} applied, {not_applied} not applied; {:.0}s",
        tally.total(),
        proxy.counters.rollup_inserts.load(Ordering::SeqCst),
        proxy.injected(Fault::LoseAnswer),
        proxy.injected(Fault::CutAfterRequest),
        proxy.injected(Fault::HoldAnswer),
        started.elapsed().as_secs_f64()
    );
}
