//! Polls a ClickHouse query that returns one number every `--interval-ms`
//! until it reaches `--expect`, then keeps polling for `--settle-secs` to
//! catch a count that overshoots (something counted twice).
//!
//! Output (one line): `wait_result value=V expected=N reached_unix_ms=T
//! waited_ms=W polls=K` (plus `timed_out` when it never got there). Exit
//! status 0 only when the value reached N and stayed exactly N.

use std::time::{Duration, Instant};

use clap::Parser;
use ricochet_bench::clicks;

#[derive(Parser)]
struct Args {
    /// ClickHouse HTTP address, host:port.
    #[arg(long)]
    clickhouse: String,
    #[arg(long)]
    query: String,
    #[arg(long)]
    expect: u64,
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let interval = Duration::from_millis(args.interval_ms);
    let value = || -> u64 {
        clicks::clickhouse(&args.clickhouse, &args.query).ok().and_then(|b| b.trim().parse().ok()).unwrap_or(0)
    };
    let (mut polls, mut last_report) = (0u64, Instant::now());
    let mut next = started;
    let (reached, reached_ms) = loop {
        let v = value();
        polls += 1;
        if v >= args.expect {
            break (v, clicks::now_ms());
        }
        if Instant::now() >= deadline {
            println!(
                "wait_result value={v} expected={} waited_ms={} polls={polls} timed_out",
                args.expect,
                started.elapsed().as_millis()
            );
            std::process::exit(1);
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            eprintln!("  … {v} of {} after {:.0} s", args.expect, started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        next += interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    };
    let waited = started.elapsed();
    let settle_until = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut value_after = reached;
    while Instant::now() < settle_until {
        std::thread::sleep(Duration::from_millis(250));
        value_after = value_after.max(value());
    }
    println!(
        "wait_result value={value_after} expected={} reached_unix_ms={reached_ms} waited_ms={} polls={polls}",
        args.expect,
        waited.as_millis()
    );
    std::process::exit(if value_after == args.expect { 0 } else { 1 });
}
