//! What each step of the edge's hot path costs on its own, in one thread with
//! nothing else running: nanoseconds and heap allocations per call. The steps
//! are the edge's own functions (`Registry::resolve`, `click::event`,
//! `click_wire::encode` into the spool record as `Publisher::publish` does),
//! on links shaped like `seed-links`' and a request with a browser user
//! agent; beside them, side by side in the same run, what the previous path
//! cost for the same event (`Codec<ClickEvent>::encode`, the generic Avro
//! encoder, then a copy into a fresh spool record); and, for the registry's
//! load time, `Codec<LinkRecord>::decode`.
//!
//! Output: one line a step, `step=NAME ns_per_call=… allocs_per_call=…`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use clap::Parser;
use ricochet_redirect::click;
use ricochet_registry::Registry;
use ricochet_schemas::{click_wire, ClickEvent, ClickWire, Codec, EventType, RecipientToken, Signals};

/// Counts allocations (and reallocations) so each step's can be reported.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
struct Args {
    /// Links in the registry.
    #[arg(long, default_value_t = 100_000)]
    links: u64,
    /// Calls per step.
    #[arg(long, default_value_t = 300_000)]
    iterations: u64,
}

fn step<R>(name: &str, iterations: u64, mut f: impl FnMut(u64) -> R) {
    for i in 0..iterations / 10 {
        black_box(f(i));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..iterations {
        black_box(f(i));
    }
    let ns = started.elapsed().as_nanos() as f64 / iterations as f64;
    let allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocations) as f64 / iterations as f64;
    println!("step={name} ns_per_call={ns:.0} allocs_per_call={allocs:.1}");
}

/// The edge's event for one click (`now_ms` fixed, so every event is the same size).
fn wire_event<'a>(
    link: &'a ricochet_schemas::LinkRecord,
    headers: &'a HeaderMap,
    ip: IpAddr,
    signals: &'a Signals,
) -> ClickWire<'a> {
    click::event(
        link,
        click::Seen {
            event_type: EventType::Click,
            method: &Method::GET,
            headers,
            ip,
            recipient: (None, RecipientToken::Absent),
            now_ms: 1_800_000_000_000,
            edge_node: "bench-edge",
            signals,
        },
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let registry = Registry::new();
    let mut codes = Vec::with_capacity(args.links as usize);
    for i in 0..args.links {
        let link = ricochet_bench::link(i, ricochet_registry::code::mint(), 200, 1_800_000_000_000);
        codes.push(link.code.as_str().to_owned());
        registry.apply(link);
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(ricochet_bench::USER_AGENT));
    headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
    let ip: IpAddr = "203.0.113.77".parse()?;
    let codec = Codec::<ClickEvent>::new();
    let link = registry.resolve(&codes[0]).expect("seeded");
    let signals = Signals::default();
    let event = |link| wire_event(link, &headers, ip, &signals);
    let n = args.iterations;
    let codes_len = codes.len() as u64;
    step("registry_resolve", n, |i| registry.resolve(&codes[(i * 7919 % codes_len) as usize]));
    step("registry_client", n, |_| registry.client(link.client_id.as_str()));
    step("click_event", n, |_| event(&link));
    let sample = event(&link);
    let key = link.client_id.as_str().as_bytes();
    // What `Publisher::publish` does under its lock: the record, encoded in
    // place into the shared buffer (reused: the writer swaps it every tick).
    let mut shared = Vec::with_capacity(1 << 20);
    step("wire_encode_record", n, |_| {
        if shared.len() > (1 << 20) - 4096 {
            shared.clear();
        }
        ricochet_ingest::spool::encode_record_with(key, &mut shared, |out| click_wire::encode(&sample, out))
            .expect("record")
    });
    // Before: the generic encoder on the same event, then a fresh record.
    let owned = codec.decode(&{
        let mut b = Vec::new();
        click_wire::encode(&sample, &mut b);
        b
    })?;
    step("before_codec_encode", n, |_| codec.encode(&owned).expect("encode"));
    let payload = codec.encode(&owned)?;
    step("before_spool_encode_record", n, |_| {
        let mut record = Vec::with_capacity(payload.len() + key.len() + 10);
        ricochet_ingest::spool::encode_record(key, &payload, &mut record).expect("record");
        record
    });
    // Not on the request path: what loading the registry costs per link (the tail's decode).
    let links = Codec::<ricochet_schemas::LinkRecord>::new();
    let framed = links.encode(&link)?;
    step("link_decode", n, |_| links.decode(&framed).expect("decode"));
    println!("event_bytes={} link_bytes={}", payload.len(), framed.len());
    Ok(())
}
