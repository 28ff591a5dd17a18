//! Counts the messages in a topic: end minus start offset, summed over the
//! partitions. With `--expect N` it waits until the count reaches N (or the
//! timeout passes), then keeps watching for `--settle-secs` to catch extra
//! copies, and exits 0 only if the count is exactly N.
//!
//! Output (one line): `count=C expected=N waited_ms=T`.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "clicks")]
    topic: String,
    /// Wait for this many messages.
    #[arg(long)]
    expect: Option<i64>,
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// After reaching the expected count, how long to keep checking that it stays.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer = ricochet_bench::metadata_consumer(&args.brokers)?;
    let rpc = Duration::from_secs(10);
    let started = Instant::now();
    let Some(expect) = args.expect else {
        let count = ricochet_bench::topic_messages(&consumer, &args.topic, rpc)?;
        println!("count={count}");
        return Ok(());
    };
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    let mut count = loop {
        match ricochet_bench::topic_messages(&consumer, &args.topic, rpc) {
            Ok(count) if count >= expect => break count,
            Ok(count) if last_report.elapsed() >= Duration::from_secs(10) => {
                eprintln!("  … {count} of {expect} after {:.0} s", started.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            Ok(_) => {}
            Err(e) => eprintln!("  … count failed ({e}); retrying"),
        }
        if Instant::now() >= deadline {
            let count = ricochet_bench::topic_messages(&consumer, &args.topic, rpc)?;
            println!("count={count} expected={expect} waited_ms={} timed_out", started.elapsed().as_millis());
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let waited = started.elapsed();
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    count = count.max(ricochet_bench::topic_messages(&consumer, &args.topic, rpc)?);
    println!("count={count} expected={expect} waited_ms={}", waited.as_millis());
    std::process::exit(if count == expect { 0 } else { 1 });
}
