//! What each step of the edge's hot path costs on its own, in one thread with
//! nothing else running: nanoseconds and heap allocations per call. The steps
//! are the edge's own functions (`Registry::resolve`, `click::event`,
//! `click_wire::encode` into the spool record as `Publisher::publish` does),
//! on links shaped like `seed-links`' and a request with a browser user
//! agent; beside them, side by side in the same run, what the previous path
//! cost for the same event (`Codec<ClickEvent>::encode`, the generic Avro
//! encoder, then a copy into a fresh spool record); and, for the registry's
//! load time, `Codec<LinkRecord>::decode`;
//! and the bot signals' `Classifier::observe`.
//!
//! The signals are measured three ways: `signals_observe` (one user agent, the
//! address changing every call, so each call does a fresh network lookup),
//! `signals_observe_1k_uas` (1,000 distinct user agents in turn: all cache hits
//! once warm, as in a blast) and `signals_ua_uncached` (the pattern lists
//! alone, what a never-seen user agent costs once).
//!
//! Output: one line a step, `step=NAME ns_per_call=… allocs_per_call=…`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use clap::Parser;
use ricochet_redirect::click;
use ricochet_registry::{LinkRef, Registry};
use ricochet_schemas::{click_wire, ClickEvent, ClickWire, Codec, EventType, RecipientToken, Signals};
use ricochet_signals::{Classifier, Observed};

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
    link: &'a LinkRef<'_>,
    link_id: &'a str,
    headers: &'a HeaderMap,
    ip: IpAddr,
    signals: &'a Signals,
) -> ClickWire<'a> {
    click::event(
        link,
        link_id,
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
    // The edge builds the event from the registry's view of the link, as here;
    // the owned record is for the reference steps below.
    let view = registry.resolve(&codes[0]).expect("seeded");
    let link = view.to_record();
    let signals = Signals::default();
    let event = |view| wire_event(view, link.link_id.as_str(), &headers, ip, &signals);
    let n = args.iterations;
    let codes_len = codes.len() as u64;
    step("registry_resolve", n, |i| registry.resolve(&codes[(i * 7919 % codes_len) as usize]));
    // What the edge paid while it built events from an owned copy of the link.
    step("registry_resolve_to_record", n, |i| {
        registry.resolve(&codes[(i * 7919 % codes_len) as usize]).map(|l| l.to_record())
    });
    step("registry_client", n, |_| registry.client(link.client_id.as_str()));
    step("click_event", n, |_| event(&view));
    let sample = event(&view);
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
    let load_started = Instant::now();
    let classifier = Classifier::load()?;
    println!("signals_load_ms={}", load_started.elapsed().as_millis());
    // Addresses spread over the whole IPv4 space (Knuth's multiplicative hash of i).
    let address = |i: u64| IpAddr::V4(Ipv4Addr::from((i as u32).wrapping_mul(2_654_435_761)));
    let client = ricochet_schemas::ClientRecord {
        client_id: link.client_id.clone(),
        status: ricochet_schemas::ClientStatus::Active,
        fallback_url: None,
        hot_spread: 1,
        updated_at_ms: 0,
        allowed_networks: vec!["198.51.100.0/24".into()],
    };
    let observe = |headers: &HeaderMap, i: u64| {
        let req = Observed { method: &Method::GET, headers, ip: address(i), sent_at_ms: Some(1_799_999_990_000) };
        classifier.observe(&req, link.honeypot, Some(&client))
    };
    step("signals_observe", n, |i| observe(&headers, i));
    let many: Vec<HeaderMap> = (0..1000)
        .map(|v| {
            let ua = ricochet_bench::USER_AGENT.replace("Chrome/", &format!("Chrome/{v}."));
            let mut h = headers.clone();
            h.insert(header::USER_AGENT, HeaderValue::from_str(&ua).expect("ua"));
            h
        })
        .collect();
    step("signals_observe_1k_uas", n, |i| observe(&many[(i % 1000) as usize], i));
    let uncached: Vec<String> =
        (0..n.min(20_000)).map(|v| ricochet_bench::USER_AGENT.replace("Chrome/", &format!("Chrome/{v}x."))).collect();
    step("signals_ua_uncached", uncached.len() as u64, |i| {
        classifier.user_agents.classify_uncached(&uncached[i as usize % uncached.len()])
    });

    // Not on the request path: what loading the registry costs per link (the tail's decode).
    let links = Codec::<ricochet_schemas::LinkRecord>::new();
    let framed = links.encode(&link)?;
    step("link_decode", n, |_| links.decode(&framed).expect("decode"));
    let fast = ricochet_registry::link_decode::LinkDecoder::new();
    step("link_decode_fast", n, |_| fast.decode(&framed).expect("decode"));
    println!("event_bytes={} link_bytes={}", payload.len(), framed.len());
    Ok(())
}
