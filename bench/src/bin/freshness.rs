//! Freshness for `bench/aggregator.sh`: how long after a click happens it can
//! be read from the rollups in ClickHouse, under a steady load.
//!
//! One thread produces `--rate` clicks a second for `--duration-secs`, open
//! loop (click `i` is due at `start + i / rate`), each stamped with the wall
//! clock when it is made, from senders named `fresh-NNNN` (skewed like the
//! preload). Each click's link id names the `--slice-ms` slice of time it was
//! made in, so the rollups (per link and minute) count every slice apart.
//! Another thread reads those counts from `click_rollup_minute` every
//! `--poll-ms`. When a slice's count grows from `a` to `b` in a poll answered
//! at `t`, its clicks `a..b` (oldest first) became visible at `t`: freshness
//! is `t - event time`, exact per slice to within the slice width in how it
//! is spread over the slice's clicks.
//!
//! A click is counted only once its verdict is final, `RICOCHET_VERDICT_DELAY_MS`
//! after it reached the aggregator (`docs/bot-detection.md`): freshness
//! includes that delay. Pass the aggregator's delay as `--verdict-delay-ms`;
//! the goal is p95 within the delay + 2 s.
//!
//! Output (one line): `freshness_result events=N achieved_rate=R p50_ms=…
//! p95_ms=… p99_ms=… max_ms=… unseen=U overcounted=O polls=K poll_p50_ms=…
//! verdict_delay_ms=D goal_p95_ms=G beyond_delay_p95_ms=…`,
//! and on stderr the p50/p95 of each 10 s window. Clicks made during
//! `--warmup-secs` are produced but not measured.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Parser;
use ricochet_bench::clicks::{self, Traffic};
use ricochet_schemas::{ClickEvent, Codec};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: clicks::Kafka,
    /// ClickHouse HTTP address (host:port) and database the aggregator writes to.
    #[arg(long)]
    clickhouse: String,
    #[arg(long, default_value = "default")]
    database: String,
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    #[arg(long, default_value_t = 100)]
    slice_ms: i64,
    /// After the last click, how long to wait for every click to show.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    #[arg(long, default_value_t = 200)]
    clients: u32,
    #[arg(long, default_value_t = 0.5)]
    hot_share: f64,
    /// The edge's default `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// The aggregator's `RICOCHET_VERDICT_DELAY_MS` (reported, and the goal is
    /// p95 <= this + 2 s).
    #[arg(long, default_value_t = 10_000)]
    verdict_delay_ms: i64,
}

/// What one poll saw: slice -> clicks visible, and when the answer came.
struct Snapshot {
    at_ms: i64,
    took: Duration,
    counts: HashMap<i64, u64>,
}

fn poll_once(args: &Args, since_s: i64) -> anyhow::Result<Snapshot> {
    let sql = format!(
        "SELECT link_id, sum(clicks) FROM {}.click_rollup_minute \
         WHERE client_id >= 'fresh-' AND client_id < 'fresh.' AND bucket_start >= toDateTime({since_s}) \
         GROUP BY link_id FORMAT TabSeparated",
        args.database
    );
    let started = Instant::now();
    let body = clicks::clickhouse(&args.clickhouse, &sql)?;
    let at_ms = clicks::now_ms();
    let counts = body
        .lines()
        .filter_map(|l| {
            let (link, n) = l.split_once('\t')?;
            Some((link.strip_prefix('s')?.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    Ok(Snapshot { at_ms, took: started.elapsed(), counts })
}

/// Produces the steady load; returns each slice's event times, in order made.
fn produce(args: &Args, traffic: &Traffic) -> anyhow::Result<(BTreeMap<i64, Vec<i64>>, f64)> {
    let producer = clicks::producer(&args.kafka.brokers, args.linger_ms)?;
    let codec = Codec::<ClickEvent>::new();
    let mut rng = rand::rng();
    let mut slices: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let total = (args.rate * args.duration_secs as f64) as u64;
    let achieved = clicks::paced(&producer, args.rate, total, || {
        let now = clicks::now_ms();
        let slice = now.div_euclid(args.slice_ms);
        let pick = traffic.pick(&mut rng);
        let event = traffic.click(pick, &format!("s{slice}"), now, &mut rng);
        clicks::send(&producer, &args.kafka.topic, event.client_id.as_str(), &codec.encode(&event)?)?;
        slices.entry(slice).or_default().push(now);
        Ok(())
    })?;
    Ok((slices, achieved))
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let traffic =
        Traffic { prefix: "fresh".into(), clients: args.clients, links: 1, hot_share: args.hot_share, hot_links: 1 };
    let since_s = clicks::now_ms() / 1000 - 120;
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Snapshot>();
    let poller = {
        let (args, done) = (args.clone(), done.clone());
        std::thread::spawn(move || {
            let interval = Duration::from_millis(args.poll_ms);
            let mut next = Instant::now();
            while !done.load(Ordering::Relaxed) {
                match poll_once(&args, since_s) {
                    Ok(s) => {
                        if tx.send(s).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("  poll failed: {e}"),
                }
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let produced = produce(&args, &traffic);
    let (slices, achieved) = match produced {
        Ok(p) => p,
        Err(e) => {
            done.store(true, Ordering::Relaxed);
            let _ = poller.join();
            return Err(e);
        }
    };

    // Collect snapshots until every slice shows all its clicks, or the settle time passes.
    let mut snapshots = Vec::new();
    let settle_until = Instant::now() + Duration::from_secs(args.settle_secs);
    while let Ok(s) = rx.recv_timeout(Duration::from_secs(5)) {
        let complete =
            slices.iter().all(|(slice, times)| s.counts.get(slice).copied().unwrap_or(0) >= times.len() as u64);
        snapshots.push(s);
        if complete || Instant::now() >= settle_until {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = poller.join();

    let measured_from = slices.keys().next().map_or(0, |first| first * args.slice_ms) + args.warmup_secs as i64 * 1000;
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut latencies: Vec<(i64, i64)> = Vec::new(); // (event time, freshness), both ms
    let mut overcounted = 0u64;
    for snapshot in &snapshots {
        for (slice, &visible) in &snapshot.counts {
            let Some(times) = slices.get(slice) else { continue };
            let before = seen.entry(*slice).or_default();
            if visible <= *before {
                continue;
            }
            let upto = visible.min(times.len() as u64);
            overcounted += visible - upto;
            for &t in &times[*before as usize..upto as usize] {
                if t >= measured_from {
                    latencies.push((t, snapshot.at_ms - t));
                }
            }
            *before = visible;
        }
    }
    let measured = slices.values().flatten().filter(|t| **t >= measured_from).count();
    let unseen = measured - latencies.len();

    let mut windows: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (t, f) in &latencies {
        windows.entry((t - measured_from) / 10_000).or_default().push(*f);
    }
    for (w, mut v) in windows {
        v.sort_unstable();
        eprintln!(
            "  {:>3}-{:<3} s: {:>6} clicks, freshness p50 {:>5} ms, p95 {:>5} ms, max {:>5} ms",
            w * 10,
            w * 10 + 10,
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.95),
            v.last().copied().unwrap_or(0)
        );
    }
    let mut all: Vec<i64> = latencies.iter().map(|(_, f)| *f).collect();
    all.sort_unstable();
    let mut took: Vec<i64> = snapshots.iter().map(|s| s.took.as_micros() as i64).collect();
    took.sort_unstable();
    println!(
        "freshness_result events={measured} achieved_rate={achieved:.0} p50_ms={} p95_ms={} p99_ms={} max_ms={} \
         unseen={unseen} overcounted={overcounted} polls={} poll_p50_ms={:.1} verdict_delay_ms={} goal_p95_ms={} \
         beyond_delay_p95_ms={}",
        percentile(&all, 0.5),
        percentile(&all, 0.95),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0),
        snapshots.len(),
        percentile(&took, 0.5) as f64 / 1000.0,
        args.verdict_delay_ms,
        args.verdict_delay_ms + 2000,
        percentile(&all, 0.95) - args.verdict_delay_ms,
    );
    Ok(())
}
