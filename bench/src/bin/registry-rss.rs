//! The memory the edge's in-memory registry needs for N links, measured in a
//! process that holds nothing else: `VmRSS` before and after applying N links
//! shaped like `seed-links`' to a `ricochet_registry::Registry`.
//!
//! With `--decode` each link first goes through encoding and the tail's
//! decoder (`LinkDecoder`), the way the registry tail gets it from Kafka, so
//! the allocator sees the same churn as in the edge. The registry is the
//! edge's (`Registry::for_edge`: by code only); `--by-id` adds the API's index.
//!
//! Output (one line): `registry_rss links=N decode=… by_id=… rss_before_mb=… rss_after_mb=… bytes_per_link=…
//! record_struct_bytes=… links_per_sec=…` (`size_of::<LinkRecord>()`; links applied per second).

use clap::Parser;
use ricochet_registry::Registry;
use ricochet_schemas::{Codec, LinkRecord};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    #[arg(long, default_value_t = 200)]
    clients: u64,
    /// Go through the Avro codec as the registry tail does.
    #[arg(long)]
    decode: bool,
    /// Keep the lookup by link id, as the API process does.
    #[arg(long)]
    by_id: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let codec = Codec::<LinkRecord>::new();
    let registry = if args.by_id { Registry::new() } else { Registry::for_edge() };
    let decoder = ricochet_registry::link_decode::LinkDecoder::new();
    let started = std::time::Instant::now();
    let before = ricochet_bench::rss_kib();
    for i in 0..args.count {
        let record = ricochet_bench::link(i, ricochet_registry::code::mint(), args.clients, 1_800_000_000_000);
        if args.decode {
            registry.apply(decoder.decode(&codec.encode(&record)?)?);
        } else {
            registry.apply(record);
        }
    }
    let after = ricochet_bench::rss_kib();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "registry_rss links={} decode={} by_id={} rss_before_mb={:.0} rss_after_mb={:.0} bytes_per_link={:.0} \
         record_struct_bytes={} links_per_sec={:.0}",
        registry.len(),
        args.decode,
        args.by_id,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / args.count as f64,
        std::mem::size_of::<LinkRecord>(),
        args.count as f64 / secs,
    );
    Ok(())
}
