//! A member that wakes up late must not land rollups or positions for
//! partitions it no longer owns (issue 15, "fencing a member that wakes up
//! late").
//!
//! Two aggregators, A and B, share one group and one ClickHouse under a steady
//! load. A is frozen (SIGSTOP: every thread at once, as a VM pause, a cgroup
//! freeze or a long stall would) for longer than the consumer session timeout
//! (10 s), so the group gives its partitions to B, which fences, reads the
//! stored positions and counts them. Then A is thawed and carries on from the
//! instruction where it stopped, with its in-memory positions and pending batch
//! now stale. Whatever A does next, every click must be counted exactly once
//! and every stored position must end exactly at its partition's high
//! watermark: a stale rollup insert would count clicks twice, and its position
//! delta would push the stored position past the truth (later clicks skipped).
//!
//! - `frozen_mid_flush`: ClickHouse itself is frozen (SIGSTOP) until one of
//!   A's writes hangs on it, with its request sitting unread in ClickHouse's
//!   socket; then A is frozen and ClickHouse thawed, so the hung write lands
//!   while A sleeps, and A, once thawed, finds it answered and goes on with
//!   the rest of its flush.
//! - `frozen_between_writes`: A is frozen right after one of its writes was
//!   answered, before the next one, once for each write of a flush (after the
//!   raw events, after the recipients, after the rollups, ...), so every pair
//!   of consecutive writes is a freeze point. A proxy stands in between A and
//!   ClickHouse because a real server cannot be made to stop one member
//!   between two of its writes on demand: it forwards every request untouched,
//!   watches A's inserts (`INSERT INTO click_…`, classified by the table name
//!   that follows the prefix, so that a renamed table such as
//!   `click_counts_in` is still recognised), and when the chosen kind of
//!   insert has been answered, it delivers the answer and SIGSTOPs A at once.
//!   B talks to ClickHouse directly.
//!
//! Stored positions are read with the product's own reader
//! (`ricochet_warehouse::positions::read`, today the sum of the grain-0
//! `position_delta`s of `click_rollups`) and compared with the broker's high
//! watermarks; counts with `feed::assert_counted_exactly`.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ricochet_schemas::RecipientId;
use ricochet_tests::feed::{self, Feed, Load, Tally, Target};
use ricochet_tests::servers::{ClickHouse, Servers};
use ricochet_tests::services::{self, Service};
use ricochet_tests::{client, eventually, PARTITIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Clicks a second in every test here.
const RATE: u64 = 300;
/// Once B owns every partition, it counts this long before A is thawed.
const B_COUNTS_FOR: Duration = Duration::from_secs(3);
/// Longest wait for B to be given A's partitions: the 10 s session timeout
/// (`session.timeout.ms` in aggregator/src/pipeline.rs) plus a rebalance.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(40);

fn member_env() -> Vec<(&'static str, String)> {
    vec![
        // Many short flushes: many writes to freeze between.
        ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
        ("RICOCHET_VERDICT_DELAY_MS", "300".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// Variant a: ClickHouse frozen until A's write hangs on it.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_mid_flush() {
    let started = Instant::now();
    let servers = Servers::start().await;
    let env = member_env();
    let a = services::aggregator(&servers, "aggregator-a", &env).await;
    let b = services::aggregator(&servers, "aggregator-b", &env).await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(16, 2), RATE);
    wait_for_assignment(&[&a, &b]).await;
    eventually("A to store a flush", Duration::from_secs(30), || async {
        (client::metric(&a.url(), "ricochet_aggregator_flushes_total").await > 0.0).then_some(())
    })
    .await;
    let a_owned = client::owned_partitions(&a.url()).await;

    let hung = freeze_clickhouse_until_a_write_hangs(&servers.clickhouse, &a).await;
    a.freeze();
    let frozen_at = Instant::now();
    let frozen_unix = client::now_secs();
    servers.clickhouse.thaw();
    eprintln!("A (partitions {a_owned:?}) frozen with a request unanswered on connection(s) from port(s) {hung:?}");

    wait_owns_all(&b).await;
    eprintln!("B owns every partition {:.1}s after A froze", frozen_at.elapsed().as_secs_f64());
    tokio::time::sleep(B_COUNTS_FOR).await;
    a.thaw();
    eprintln!("A thawed after {:.1}s", frozen_at.elapsed().as_secs_f64());
    report_rejoin(&a, &b).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;

    eprintln!("A was frozen inside: {}", hung_statement(&servers.clickhouse, &hung, frozen_unix).await);
    let failures = check_exact(&servers, &tally).await;
    eprintln!("{} clicks sent; {:.0}s", tally.total(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "frozen mid-flush:\n{}", failures.join("\n"));
}

/// Freezes ClickHouse and waits until A has a request on one of its
/// connections to ClickHouse that the server has not read (so A's flush hangs
/// in that write); returns A's local ports of those connections, leaving
/// ClickHouse frozen. A request ClickHouse had already begun to read when it
/// froze cannot be told from an idle connection, so such a try is thawed and
/// made again.
async fn freeze_clickhouse_until_a_write_hangs(ch: &ClickHouse, a: &Service) -> Vec<u16> {
    for attempt in 1..=5 {
        ch.freeze();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let hung = unread_requests(a.proc.pid(), ch.http_port);
            if !hung.is_empty() {
                return hung;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ch.thaw();
        eprintln!("try {attempt}: no unread request from A on the frozen ClickHouse; again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("A never had a write hanging on the frozen ClickHouse");
}

/// A's local ports of its connections to `server_port` whose server side
/// holds unread bytes (a request ClickHouse has not read), from /proc.
fn unread_requests(pid: u32, server_port: u16) -> Vec<u16> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                let link = link.to_str()?;
                link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    let sockets: Vec<TcpLine> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(TcpLine::parse)
                .collect::<Vec<_>>()
        })
        .collect();
    let a_ports: HashSet<u16> = sockets
        .iter()
        .filter(|s| inodes.contains(&s.inode) && s.remote_port == server_port)
        .map(|s| s.local_port)
        .collect();
    sockets
        .iter()
        .filter(|s| s.local_port == server_port && a_ports.contains(&s.remote_port) && s.rx_queue > 0)
        .map(|s| s.remote_port)
        .collect()
}

/// One line of /proc/net/tcp{,6}.
struct TcpLine {
    local_port: u16,
    remote_port: u16,
    rx_queue: u64,
    inode: u64,
}

impl TcpLine {
    fn parse(line: &str) -> Option<TcpLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
        let (_, rx) = f.get(4)?.split_once(':')?;
        Some(TcpLine {
            local_port: port(f.get(1)?)?,
            remote_port: port(f.get(2)?)?,
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
            inode: f.get(9)?.parse().ok()?,
        })
    }
}

/// The statement ClickHouse ran first, after `since` (Unix seconds), on the
/// connections whose requests hung (its query log, by client port): which of
/// A's writes the freeze caught.
async fn hung_statement(ch: &ClickHouse, ports: &[u16], since: i64) -> String {
    let _ = ch.query("SYSTEM FLUSH LOGS").await;
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let sql = format!(
        "SELECT substring(query, 1, 40) FROM system.query_log \
         WHERE port IN ({}) AND event_time >= toDateTime({}) ORDER BY event_time LIMIT 1 FORMAT TSV",
        ports.join(","),
        since - 1
    );
    match ch.query(&sql).await {
        Ok(body) if !body.trim().is_empty() => body.trim().to_owned(),
        Ok(_) => "(nothing in the query log for those connections)".to_owned(),
        Err(e) => format!("(query log unreadable: {e})"),
    }
}

// ---------------------------------------------------------------------------
// Variant b: A frozen between two of its writes, by a proxy.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_between_writes() {
    let started = Instant::now();
    // The kinds of A's inserts in one flush, learned by the first run.
    let mut cycle: Vec<String> = Vec::new();
    let mut runs: Vec<GapRun> = Vec::new();
    let mut gap = 0;
    loop {
        let run = freeze_after_write(gap, &cycle).await;
        if gap == 0 {
            cycle = run.cycle.clone();
        }
        eprintln!(
            "== frozen after its insert into click_{}: {} ({:.0}s so far)",
            run.after,
            if run.failures.is_empty() { "exact".to_owned() } else { run.failures.join("; ") },
            started.elapsed().as_secs_f64()
        );
        runs.push(run);
        gap += 1;
        if gap >= cycle.len() {
            break;
        }
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.failures.is_empty())
        .map(|r| format!("frozen after its insert into click_{}:\n  {}", r.after, r.failures.join("\n  ")))
        .collect();
    eprintln!("A's writes in a flush: {cycle:?}; {} gaps in {:.0}s", runs.len(), started.elapsed().as_secs_f64());
    assert!(
        failed.is_empty(),
        "{} of {} freeze points broke exactly-once:\n{}",
        failed.len(),
        runs.len(),
        failed.join("\n")
    );
}

struct GapRun {
    /// A's inserts in one flush, by kind (`events`, `recipients`, `rollups`, …).
    cycle: Vec<String>,
    /// The kind of insert A was frozen after.
    after: String,
    failures: Vec<String>,
}

/// One run on fresh servers: A is frozen right after its insert number `gap`
/// of a flush (in `cycle`; learned here when empty).
async fn freeze_after_write(gap: usize, cycle: &[String]) -> GapRun {
    let mut failures = Vec::new();
    let servers = Servers::start().await;
    let proxy = FreezingProxy::start(servers.clickhouse.http_port).await;
    let env = member_env();
    let mut a_env = env.clone();
    a_env.push(("RICOCHET_CLICKHOUSE_URL", proxy.url.clone()));
    let a = services::aggregator(&servers, "aggregator-a", &a_env).await;
    proxy.shared.member_pid.store(a.proc.pid(), Ordering::SeqCst);
    let b = services::aggregator(&servers, "aggregator-b", &env).await;
    let load = RecipientLoad::start(Feed::new(&servers.kafka.brokers()), Target::many(16, 2), RATE);
    wait_for_assignment(&[&a, &b]).await;

    let learned = eventually("a steady cycle of A's inserts", Duration::from_secs(30), || async {
        steady_cycle(&proxy.writes())
    })
    .await;
    let cycle = if cycle.is_empty() {
        eprintln!("A's inserts in one flush: {learned:?}");
        learned
    } else {
        if learned != cycle {
            failures.push(format!("A's inserts per flush changed between runs: {cycle:?}, then {learned:?}"));
        }
        cycle.to_vec()
    };
    let after = cycle[gap].clone();
    *proxy.shared.armed.lock().unwrap() = Some(after.clone());
    let fired =
        eventually(&format!("A to be frozen after an insert into click_{after}"), Duration::from_secs(30), || async {
            *proxy.shared.fired.lock().unwrap()
        })
        .await;
    let frozen_at = Instant::now();
    let last: Vec<String> = proxy.writes()[fired.saturating_sub(cycle.len() - 1)..=fired].to_vec();
    eprintln!("A frozen after its insert #{fired} (its last inserts: {last:?})");

    wait_owns_all(&b).await;
    eprintln!("B owns every partition {:.1}s after A froze", frozen_at.elapsed().as_secs_f64());
    tokio::time::sleep(B_COUNTS_FOR).await;
    a.thaw();
    proxy.release();
    eprintln!("A thawed after {:.1}s", frozen_at.elapsed().as_secs_f64());
    report_rejoin(&a, &b).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    let late: Vec<String> = proxy.writes()[fired + 1..].iter().take(6).cloned().collect();
    eprintln!("A's first inserts after the thaw: {late:?}");

    failures.extend(check_exact(&servers, &tally).await);
    eprintln!("{} clicks sent", tally.total());
    GapRun { cycle, after, failures }
}

/// The period of the newest inserts, when the last three flushes wrote the
/// same kinds in the same order; rotated to start at the raw events (or the
/// smallest kind), so that each run names the same gap the same way.
fn steady_cycle(writes: &[String]) -> Option<Vec<String>> {
    const MAX_PER_FLUSH: usize = 6;
    for period in 1..=MAX_PER_FLUSH {
        let tail = writes.get(writes.len().checked_sub(3 * period)?..)?;
        if (0..tail.len() - period).all(|i| tail[i] == tail[i + period]) {
            let mut cycle = tail[..period].to_vec();
            let start = cycle
                .iter()
                .position(|k| k == "events")
                .unwrap_or_else(|| (0..period).min_by_key(|&i| cycle[i].clone()).expect("a non-empty cycle"));
            cycle.rotate_left(start);
            return Some(cycle);
        }
    }
    None
}

/// A proxy in front of ClickHouse for one member: forwards every request,
/// records the member's inserts into `click_*` tables in order, and when the
/// armed kind of insert has been answered, holds any further request, delivers
/// the answer and SIGSTOPs the member.
struct FreezingProxy {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream_port: u16,
    member_pid: AtomicU32,
    /// The member's inserts, by kind (what follows `click_` in the table name).
    writes: Mutex<Vec<String>>,
    /// Freeze the member after its next insert of this kind.
    armed: Mutex<Option<String>>,
    /// The index in `writes` of the insert the member was frozen after.
    fired: Mutex<Option<usize>>,
    /// True from the freeze until [`FreezingProxy::release`]: a request that
    /// slipped out before SIGSTOP took effect waits meanwhile.
    hold: tokio::sync::watch::Sender<bool>,
    released: AtomicBool,
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FreezingProxy {
    async fn start(upstream_port: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream_port,
            member_pid: AtomicU32::new(0),
            writes: Mutex::default(),
            armed: Mutex::default(),
            fired: Mutex::default(),
            hold: tokio::sync::watch::channel(false).0,
            released: AtomicBool::new(false),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = relay(conn, &s).await;
                });
            }
        });
        FreezingProxy { url, shared, task }
    }

    fn writes(&self) -> Vec<String> {
        self.shared.writes.lock().unwrap().clone()
    }

    /// Lets held requests through (after the member was thawed).
    fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
        self.shared.hold.send_replace(false);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `%XX` and `+` decoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kind of a `click_*` insert: the table name after `click_` (`events`,
/// `recipients`, `rollups`, `rollups_in`, …), database and quotes stripped.
/// The SQL is the `query` URL parameter (how the clickhouse crate sends it),
/// or else the start of the body.
fn insert_kind(head: &str, body_start: &[u8]) -> Option<String> {
    let target = head.lines().next()?.split_whitespace().nth(1)?;
    let from_url =
        target.split_once('?').and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("query=")).map(url_decode));
    let sql = from_url.unwrap_or_else(|| String::from_utf8_lossy(body_start).into_owned());
    let sql = sql.replace(['`', '"'], "");
    let at = sql.to_ascii_uppercase().find("INSERT INTO ")?;
    let table: String = sql[at + "INSERT INTO ".len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let table = table.rsplit('.').next()?;
    table.strip_prefix("click_").map(str::to_owned)
}

/// One HTTP request per connection (ClickHouse is asked to close after
/// answering, so every request's head is the first thing on its connection).
async fn relay(mut client: TcpStream, s: &Shared) -> std::io::Result<()> {
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
    // A request the member sent in the instant before SIGSTOP took effect
    // waits until it is thawed.
    let mut hold = s.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let freeze_after = insert_kind(&head, &buf[head_end..]).and_then(|kind| {
        let mut writes = s.writes.lock().unwrap();
        writes.push(kind.clone());
        let mut armed = s.armed.lock().unwrap();
        (armed.as_deref() == Some(kind.as_str())).then(|| {
            *armed = None;
            writes.len() - 1
        })
    });
    let mut new_head: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    new_head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(("127.0.0.1", s.upstream_port)).await?;
    upstream.write_all(new_head.as_bytes()).await?;
    upstream.write_all(&buf[head_end..]).await?;

    let Some(index) = freeze_after else {
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut up_rx, mut up_tx) = upstream.into_split();
    let forward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rx, &mut up_tx).await;
    });
    // The whole answer: ClickHouse closes after it.
    let mut answer = Vec::new();
    up_rx.read_to_end(&mut answer).await?;
    forward.abort();
    if !s.released.load(Ordering::SeqCst) {
        s.hold.send_replace(true);
    }
    client_tx.write_all(&answer).await?;
    client_tx.flush().await?;
    let pid = s.member_pid.load(Ordering::SeqCst);
    assert!(pid != 0, "the member's pid is set before it writes");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGSTOP);
    }
    *s.fired.lock().unwrap() = Some(index);
    Ok(())
}

/// A steady load like [`Load`], but every click names a recipient, so that
/// every flush also writes recipients (one more write to freeze after).
struct RecipientLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tally>,
}

impl RecipientLoad {
    fn start(feed: Feed, targets: Vec<Target>, per_second: u64) -> RecipientLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            let tick = Duration::from_millis(20);
            let per_tick = (per_second as usize / 50).max(1);
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let now_ms = client::now_millis();
                let events: Vec<_> = (0..per_tick)
                    .map(|k| {
                        let mut e = targets[(i + k) % targets.len()].click(now_ms);
                        e.recipient_id = Some(RecipientId::parse(format!("r{}", (i + k) % 97)).expect("recipient id"));
                        e
                    })
                    .collect();
                i += per_tick;
                let started = Instant::now();
                feed.send_all(&events, &mut tally).await;
                tokio::time::sleep(tick.saturating_sub(started.elapsed())).await;
            }
            tally
        });
        RecipientLoad { stop, task }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task")
    }
}

// ---------------------------------------------------------------------------
// Shared steps and checks.
// ---------------------------------------------------------------------------

/// Waits until the members own every partition between them, each at least one.
async fn wait_for_assignment(members: &[&Service]) {
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    eventually("every member to own partitions, all partitions owned once", Duration::from_secs(30), || {
        let urls = urls.clone();
        async move { assigned_to_all(&urls).await.then_some(()) }
    })
    .await;
}

async fn assigned_to_all(urls: &[String]) -> bool {
    let mut all = Vec::new();
    for u in urls {
        let owned = client::owned_partitions(u).await;
        if owned.is_empty() {
            return false;
        }
        all.extend(owned);
    }
    all.sort();
    all == (0..PARTITIONS).collect::<Vec<i64>>()
}

/// Waits until B alone owns every partition (A's session has expired).
async fn wait_owns_all(b: &Service) {
    let url = b.url();
    eventually("B to be given the frozen member's partitions", TAKEOVER_WITHIN, || async {
        (client::owned_partitions(&url).await == (0..PARTITIONS).collect::<Vec<i64>>()).then_some(())
    })
    .await;
}

/// Reports (does not require) A rejoining the group after its thaw: the
/// contract is about what lands in ClickHouse, not about how A recovers.
async fn report_rejoin(a: &Service, b: &Service) {
    let thawed = Instant::now();
    let urls = [a.url(), b.url()];
    while thawed.elapsed() < Duration::from_secs(30) {
        let a_answers = tokio::time::timeout(Duration::from_secs(2), reqwest::get(format!("{}/healthz", urls[0])))
            .await
            .is_ok_and(|r| r.is_ok());
        if a_answers && assigned_to_all(&urls).await {
            eprintln!("A rejoined and owns partitions {:.1}s after its thaw", thawed.elapsed().as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("A did not own partitions again within 30 s of its thaw");
}

/// Every click counted once (rollups at every grain, raw events) and every
/// stored position at its partition's high watermark; what failed, if anything.
async fn check_exact(servers: &Servers, tally: &Tally) -> Vec<String> {
    let mut failures = Vec::new();
    let counted = AssertUnwindSafe(feed::assert_counted_exactly(&servers.clickhouse, tally, Duration::from_secs(30)))
        .catch_unwind()
        .await;
    if let Err(panic) = counted {
        failures.push(format!("counts: {}", panic_message(&*panic)));
    }
    if let Err(e) = positions_exact(servers, Duration::from_secs(10)).await {
        failures.push(format!("positions: {e}"));
    }
    failures
}

/// Waits until every partition's stored position (as the product reads it)
/// equals its high watermark on the broker.
async fn positions_exact(servers: &Servers, within: Duration) -> Result<(), String> {
    let client = servers.clickhouse.warehouse_client();
    let deadline = Instant::now() + within;
    loop {
        let high = high_watermarks(&servers.kafka.brokers()).await;
        let stored: BTreeMap<i32, i64> = ricochet_warehouse::positions::read(&client, "clicks")
            .await
            .map_err(|e| format!("reading stored positions: {e}"))?
            .into_iter()
            .collect();
        let stored_or_zero: BTreeMap<i32, i64> =
            high.keys().map(|p| (*p, stored.get(p).copied().unwrap_or(0))).collect();
        if stored_or_zero == high && stored.keys().all(|p| high.contains_key(p)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let diff: Vec<String> = high
                .iter()
                .filter(|(p, h)| stored_or_zero.get(p) != Some(h))
                .map(|(p, h)| format!("partition {p}: stored {} vs high watermark {h}", stored_or_zero[p]))
                .collect();
            return Err(format!(
                "stored positions are not the high watermarks ({}); stored {stored:?}, high {high:?}",
                diff.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The high watermark (one past the last offset) of every partition of the
/// clicks topic: where a stored position ends once every click is counted.
async fn high_watermarks(brokers: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("watermark client");
        (0..PARTITIONS as i32)
            .map(|p| {
                let (_, high) =
                    consumer.fetch_watermarks("clicks", p, Duration::from_secs(10)).expect("clicks watermarks");
                (p, high)
            })
            .collect()
    })
    .await
    .expect("watermark task")
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}
