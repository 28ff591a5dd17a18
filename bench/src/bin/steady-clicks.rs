//! The steady load of `bench/aggregator.sh`'s rollup-size run: `--rate` clicks
//! a second for `--duration-secs`, open loop, spread evenly at random over
//! `--links` links of one sender (`steady-0000`, five campaigns), each stamped
//! with the wall clock when it is made and produced as the edge would
//! (Avro ClickEvent, keyed by client, idempotent `acks=all`).
//!
//! What it shows is not speed but size: with the aggregator flushing every
//! second, every busy link-minute is touched by dozens of flushes, and the
//! rollups must still end at about one row per bucket after merges.
//!
//! Output (one line): `steady_result sent=N achieved_rate=R links=L client=steady-0000`.

use clap::Parser;
use ricochet_bench::clicks::{self, Traffic};
use ricochet_schemas::{ClickEvent, Codec};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: clicks::Kafka,
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2000)]
    links: u32,
    /// The edge's default `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0 && args.links > 0, "--rate and --links must be positive");
    // One sender: every click is the hot client's, over all the links.
    let traffic =
        Traffic { prefix: "steady".into(), clients: 1, links: args.links, hot_share: 1.0, hot_links: args.links };
    let producer = clicks::producer(&args.kafka.brokers, args.linger_ms)?;
    let codec = Codec::<ClickEvent>::new();
    let mut rng = rand::rng();
    let total = (args.rate * args.duration_secs as f64) as u64;
    let achieved = clicks::paced(&producer, args.rate, total, || {
        let pick = traffic.pick(&mut rng);
        let event = traffic.click(pick, &traffic.link_id(pick), clicks::now_ms(), &mut rng);
        clicks::send(&producer, &args.kafka.topic, event.client_id.as_str(), &codec.encode(&event)?)?;
        Ok(())
    })?;
    println!(
        "steady_result sent={total} achieved_rate={achieved:.0} links={} client={}",
        args.links,
        traffic.client_id(0)
    );
    Ok(())
}
