//! Simulates dashboards polling the aggregate API while clicks flow.
//!
//! `--dashboards` screens each poll one link's stats every `--interval-ms`
//! (all screens of a link ask the same URL, as real dashboards of one link
//! do), while a feeder clicks the links at `--click-rate` per second through
//! the edge. Reports the endpoint's p50/p99 latency, the ClickHouse queries
//! per second the API made (its `ricochet_api_clickhouse_queries_total`), and
//! how fresh the numbers shown were: for each answer, how long the oldest click
//! it did not yet include had been answered by the edge.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    api: String,
    #[arg(long)]
    edge: String,
    #[arg(long)]
    key: String,
    /// Lines of `link_id code`.
    #[arg(long)]
    links: std::path::PathBuf,
    #[arg(long, default_value_t = 1000)]
    dashboards: usize,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[arg(long, default_value_t = 200)]
    click_rate: u64,
}

/// When each click of one link was answered by the edge, in order.
#[derive(Default)]
struct Sent {
    at: Vec<Instant>,
}

async fn queries_total(http: &reqwest::Client, api: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{api}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("ricochet_api_clickhouse_queries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let links: Vec<(String, String)> = std::fs::read_to_string(&args.links)?
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    anyhow::ensure!(!links.is_empty(), "no links in {}", args.links.display());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", args.key).parse()?);
    let api_http = reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(1024).build()?;
    let edge_http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let sent: Arc<Vec<Mutex<Sent>>> = Arc::new(links.iter().map(|_| Mutex::new(Sent::default())).collect());
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration_s);
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    // A fixed range, so every screen of a link asks exactly the same URL.
    let (from, to) = (now_unix - 3600, now_unix + 3600);

    // The clicks.
    let feeder = {
        let (links, sent, edge, http) = (links.clone(), sent.clone(), args.edge.clone(), edge_http.clone());
        let rate = args.click_rate;
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tasks = Vec::new();
            while Instant::now() < end {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    let i = (n % links.len() as u64) as usize;
                    let (url, http, sent) = (format!("{edge}/{}", links[i].1), http.clone(), sent.clone());
                    tasks.push(tokio::spawn(async move {
                        if let Ok(r) = http.get(url).send().await {
                            if r.status() == 302 {
                                sent[i].lock().unwrap().at.push(Instant::now());
                            }
                        }
                    }));
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    // The screens.
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let staleness = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(Mutex::new(0u64));
    let q_before = queries_total(&api_http, &args.api).await?;
    let polls_start = Instant::now();
    let mut screens = Vec::new();
    for d in 0..args.dashboards {
        let i = d % links.len();
        let url = format!("{}/v1/links/{}/stats?from={from}&to={to}", args.api, links[i].0);
        let (http, latency, staleness, errors, sent) =
            (api_http.clone(), latency.clone(), staleness.clone(), errors.clone(), sent.clone());
        let interval = Duration::from_millis(args.interval_ms);
        let phase = interval.mul_f64(d as f64 / args.dashboards as f64);
        screens.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(interval);
            while Instant::now() < end {
                tick.tick().await;
                let asked = Instant::now();
                let answer = http.get(&url).send().await;
                let took = asked.elapsed();
                let body: Option<serde_json::Value> = match answer {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    _ => None,
                };
                let Some(body) = body else {
                    *errors.lock().unwrap() += 1;
                    continue;
                };
                latency.lock().unwrap().record(took.as_micros() as u64).ok();
                let shown = body["totals"]["clicks"].as_u64().unwrap_or(0) as usize;
                let oldest_missing = sent[i].lock().unwrap().at.get(shown).copied();
                let stale = oldest_missing.filter(|t| *t < asked).map_or(0, |t| (asked - t).as_millis() as u64);
                staleness.lock().unwrap().record(stale).ok();
            }
        }));
    }
    for s in screens {
        let _ = s.await;
    }
    let polled_for = polls_start.elapsed().as_secs_f64();
    let q_after = queries_total(&api_http, &args.api).await?;
    feeder.await?;
    let l = latency.lock().unwrap();
    let s = staleness.lock().unwrap();
    let clicks: usize = sent.iter().map(|m| m.lock().unwrap().at.len()).sum();
    println!(
        "dashboards={} links={} interval_ms={} duration_s={} click_rate={}",
        args.dashboards,
        links.len(),
        args.interval_ms,
        args.duration_s,
        args.click_rate
    );
    println!("polls={} errors={} clicks_redirected={clicks}", l.len(), errors.lock().unwrap());
    println!("polls_per_s={:.0}", l.len() as f64 / polled_for);
    println!(
        "latency_ms p50={:.2} p99={:.2} max={:.2}",
        l.value_at_quantile(0.5) as f64 / 1000.0,
        l.value_at_quantile(0.99) as f64 / 1000.0,
        l.max() as f64 / 1000.0
    );
    println!(
        "clickhouse_queries_per_s={:.1} distinct_requests_per_s={:.1}",
        (q_after - q_before) / polled_for,
        links.len() as f64 * 1000.0 / args.interval_ms as f64
    );
    println!("staleness_ms p50={} p95={} max={}", s.value_at_quantile(0.5), s.value_at_quantile(0.95), s.max());
    Ok(())
}
