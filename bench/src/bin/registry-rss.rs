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
    /// Also write the table's snapshot into this directory and time loading
    /// it back into an empty table (the edge's restart without the broker).
    #[arg(long)]
    snapshot: Option<std::path::PathBuf>,
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
    if let Some(dir) = &args.snapshot {
        snapshot_round_trip(&registry, dir, args.by_id)?;
    }
    Ok(())
}

/// Writes the snapshot and loads it back, timing both (one partition,
/// nothing read from it: no broker is needed to check it).
fn snapshot_round_trip(registry: &Registry, dir: &std::path::Path, by_id: bool) -> anyhow::Result<()> {
    use ricochet_registry::snapshot::{self, Position, Snapshot};
    let path = dir.join("registry.snapshot");
    let positions = [(("links".to_owned(), 0), Position { next: 0, last_crc: 0 })].into_iter().collect();
    let watermarks = [(("links".to_owned(), 0), (0, 0))].into_iter().collect();
    let started = std::time::Instant::now();
    snapshot::write(&path, registry, "bench", &positions)?;
    let write_ms = started.elapsed().as_millis();
    let loaded = if by_id { Registry::new() } else { Registry::for_edge() };
    let started = std::time::Instant::now();
    Snapshot::load(&path, "bench", &watermarks, &loaded, |_| Ok(true))?;
    let load_ms = started.elapsed().as_millis();
    anyhow::ensure!(loaded.len() == registry.len(), "loaded {} of {} links", loaded.len(), registry.len());
    println!(
        "registry_snapshot links={} snapshot_mb={:.0} write_ms={write_ms} load_ms={load_ms} load_links_per_sec={:.0}",
        loaded.len(),
        std::fs::metadata(&path)?.len() as f64 / 1e6,
        loaded.len() as f64 / (load_ms.max(1) as f64 / 1000.0),
    );
    std::fs::remove_file(&path)?;
    Ok(())
}
