//! What the verdict engine costs the aggregator, side by side in one run:
//! CPU per event of the per-request rules alone versus the whole per-message
//! engine (`ricochet_aggregator::verdict::Verdicts`: push, release, judge,
//! prune), and the memory it holds at `--delay-ms` × `--rate`.
//!
//! Simulated time, no servers: a blast of `--rate` clicks/s for `--secs`
//! seconds, from `--recipients` recipients clicking one to three links each
//! from residential /24s, a `--scanner-share` of them swept (every link within
//! a second) from a scanner vendor's ASN. Each event is pushed at its own
//! arrival time and released as the delay passes, as the pipeline does.
//!
//! Output (one line): `verdict_costs events=N per_request_ns_p50=… engine_ns_p50=…
//! (medians of --rounds) held_max=H rss_held_mb=… bytes_per_held=… machine_share=…`.

use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ricochet_aggregator::verdict::{per_request, Rules, Verdicts};
use ricochet_schemas::{
    CampaignId, ClickEvent, ClientId, EventId, EventType, LinkId, NetworkClass, RecipientId, RecipientToken, Signals,
    UaClass,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 30)]
    secs: u64,
    #[arg(long, default_value_t = 10_000)]
    delay_ms: u64,
    #[arg(long, default_value_t = 0.3)]
    scanner_share: f64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn blast(args: &Args) -> Vec<ClickEvent> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let total = (args.rate * args.secs) as usize;
    let start = 1_800_000_000_000i64;
    let mut out = Vec::with_capacity(total);
    let mut r = 0u64;
    while out.len() < total {
        r += 1;
        let at = start + (out.len() as u64 * 1000 / args.rate) as i64;
        let scanner = rng.random_bool(args.scanner_share);
        let links = if scanner { 5 } else { rng.random_range(1..=3) };
        for l in 0..links {
            let mut s =
                Signals { ua_class: UaClass::Browser, network_class: NetworkClass::Other, ..Signals::default() };
            let (ip, gap) = if scanner {
                s.network_class = NetworkClass::Scanner;
                s.asn = 8075;
                s.has_accept_language = false;
                (format!("40.107.{}.0", r % 256), 150)
            } else {
                s.asn = 64_500 + (r % 1000) as u32;
                (format!("198.{}.{}.0", (r / 256) % 256, r % 256), 20_000)
            };
            s.sent_at_ms = Some(start - 43_000);
            out.push(ClickEvent {
                event_id: EventId::mint(),
                event_time_ms: at + l * gap,
                client_id: ClientId::parse("bench").unwrap(),
                campaign_id: CampaignId::parse("blast").unwrap(),
                link_id: LinkId::parse(format!("link-{l}").as_str()).unwrap(),
                recipient_id: Some(RecipientId::parse(format!("r{r}@example.com").as_str()).unwrap()),
                destination_url: "https://shop.example/deals?utm_source=mail".into(),
                http_method: "GET".into(),
                user_agent: Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0".into()),
                referer: None,
                client_ip: Some(ip),
                edge_node: "edge-1".into(),
                event_type: EventType::Click,
                is_prefetch: false,
                recipient_token: RecipientToken::Valid,
                signals: s,
            });
        }
    }
    out.truncate(total);
    out.sort_by_key(|e| e.event_time_ms);
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = blast(&args);
    let n = events.len();
    let rules = Rules::with_delay(Duration::from_millis(args.delay_ms));
    let (mut per_request_ns, mut engine_ns) = (Vec::new(), Vec::new());
    let (mut held_max, mut rss_held_kib, mut machines) = (0usize, 0u64, 0usize);
    for _ in 0..args.rounds {
        // (a) per-request rules only: what the aggregator did before.
        let started = Instant::now();
        let mut bots = 0usize;
        for e in &events {
            bots += usize::from(!per_request(e).is_human());
        }
        per_request_ns.push(started.elapsed().as_nanos() as f64 / n as f64);
        std::hint::black_box(bots);

        // (b) the engine, events cloned in as the pipeline hands them over
        // (the clone is outside the timing).
        let input: Vec<ClickEvent> = events.clone();
        let before = ricochet_bench::rss_kib();
        let mut v: Verdicts<()> = Verdicts::new(rules.clone());
        let mut elapsed = Duration::ZERO;
        let mut decided = 0usize;
        let mut round_machines = 0usize;
        let mut round_held_max = 0usize;
        let mut round_rss = 0u64;
        for (i, e) in input.into_iter().enumerate() {
            let now = e.event_time_ms;
            let started = Instant::now();
            v.push(0, i as i64, Some((e, ())), now);
            let out = v.release(now);
            elapsed += started.elapsed();
            decided += out.len();
            round_machines += out.iter().filter(|d| d.event.as_ref().is_some_and(|x| !x.2.is_human())).count();
            if i % 10_000 == 0 && v.num_held() > round_held_max {
                round_held_max = v.num_held();
                round_rss = ricochet_bench::rss_kib().saturating_sub(before);
            }
        }
        let started = Instant::now();
        let out = v.release(i64::MAX / 2);
        elapsed += started.elapsed();
        decided += out.len();
        round_machines += out.iter().filter(|d| d.event.as_ref().is_some_and(|x| !x.2.is_human())).count();
        anyhow::ensure!(decided == n, "decided {decided} of {n}");
        engine_ns.push(elapsed.as_nanos() as f64 / n as f64);
        held_max = round_held_max;
        rss_held_kib = round_rss;
        machines = round_machines;
    }
    println!(
        "verdict_costs events={n} rate={} delay_ms={} per_request_ns_p50={:.0} engine_ns_p50={:.0} held_max={held_max} \
         rss_held_mb={:.1} bytes_per_held={:.0} machine_share={:.3}",
        args.rate,
        args.delay_ms,
        median(per_request_ns),
        median(engine_ns),
        rss_held_kib as f64 / 1024.0,
        rss_held_kib as f64 * 1024.0 / held_max.max(1) as f64,
        machines as f64 / n as f64,
    );
    Ok(())
}
