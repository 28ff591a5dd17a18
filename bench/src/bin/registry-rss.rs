//! The memory the edge's in-memory registry needs for N links, measured in a
//! process that holds nothing else: `VmRSS` before and after applying N links
//! shaped like `seed-links`' to a `ricochet_registry::Registry`.
//!
//! With `--decode` each link first goes through the Avro codec the way the
//! registry tail gets it from Kafka (encode, decode, then the tail's clone), so
//! the allocator sees the same churn as in the edge.
//!
//! Output (one line): `registry_rss links=N rss_before_mb=… rss_after_mb=… bytes_per_link=…
//! record_struct_bytes=…` (the last is `size_of::<LinkRecord>()`, before its strings' heap).

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let codec = Codec::<LinkRecord>::new();
    let registry = Registry::new();
    let before = ricochet_bench::rss_kib();
    for i in 0..args.count {
        let record = ricochet_bench::link(i, ricochet_registry::code::mint(), args.clients, 1_800_000_000_000);
        if args.decode {
            let decoded = codec.decode(&codec.encode(&record)?)?;
            registry.apply(decoded.clone());
        } else {
            registry.apply(record);
        }
    }
    let after = ricochet_bench::rss_kib();
    println!(
        "registry_rss links={} decode={} rss_before_mb={:.0} rss_after_mb={:.0} bytes_per_link={:.0} \
         record_struct_bytes={}",
        registry.len(),
        args.decode,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / args.count as f64,
        std::mem::size_of::<LinkRecord>(),
    );
    Ok(())
}
