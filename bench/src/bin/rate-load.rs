//! Open-loop HTTP/1 load at a fixed rate, for latency at a given throughput
//! (`wrk` can only go flat out; `wrk2` is not packaged for Debian).
//!
//! Request `i` is due at `start + i / rate`, whatever happened to the ones
//! before, and goes out on whichever of `--connections` keep-alive connections
//! is free. Latency is counted from the moment the request was due when no
//! connection was free then (the server held them all: coordinated omission is
//! charged to the server, as `wrk2` does), and from the moment it was sent
//! otherwise (so the 1 ms timer of the generator is not charged to the server).
//! Each request is `GET /{random code}` with a browser user agent, like `wrk`
//! with `bench/random-codes.lua`.
//!
//! Output (one line): `rate_result target_rate=… achieved_rate=… ok=… ok_total=…
//! non_302=… errors=… late=… p50_us=… p90_us=… p99_us=… p999_us=… max_us=… service_p99_us=…`.
//! `ok_total` includes the warm-up, for reconciling with the server's own counts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;

#[derive(Parser)]
struct Args {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Codes, one a line (from `seed-links`).
    #[arg(long)]
    codes: std::path::PathBuf,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Seconds at the same rate before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    ok_measured: u64,
    non_302: u64,
    errors: u64,
    late: u64,
}

struct Plan {
    addr: SocketAddr,
    codes: Arc<Vec<String>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    interval_ns: f64,
    next: AtomicU64,
}

impl Plan {
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.interval_ns) as u64)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One connection's loop: takes the next due request, sends it, records it.
async fn connection(plan: Arc<Plan>) -> (Tally, Histogram<u64>, Histogram<u64>) {
    let (mut tally, mut latency, mut service) = (Tally::default(), histogram(), histogram());
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let host = plan.addr.to_string();
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        let due = plan.due(i);
        if due >= plan.end {
            break;
        }
        let free_at = Instant::now();
        if free_at < due {
            tokio::time::sleep_until(due.into()).await;
        }
        let code = &plan.codes[rand::rng().random_range(0..plan.codes.len())];
        let request = hyper::Request::get(format!("/{code}"))
            .header(hyper::header::HOST, &host)
            .header(hyper::header::USER_AGENT, ricochet_bench::USER_AGENT)
            .body(Empty::<Bytes>::new())
            .expect("request");
        if sender.is_none() {
            match connect(plan.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        let sent_at = Instant::now();
        let outcome = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        let done = Instant::now();
        match outcome {
            Ok(status) if status == hyper::StatusCode::FOUND => tally.ok += 1,
            Ok(_) => tally.non_302 += 1,
            Err(_) => {
                tally.errors += 1;
                sender = None;
                continue;
            }
        }
        if due >= plan.measure_from {
            // Every connection was busy when this one was due: the wait counts.
            let from = if free_at > due {
                tally.late += 1;
                due
            } else {
                sent_at
            };
            latency.saturating_record((done - from).as_micros() as u64);
            service.saturating_record((done - sent_at).as_micros() as u64);
            tally.ok_measured += 1;
        }
    }
    (tally, latency, service)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let codes = Arc::new(ricochet_bench::read_codes(&args.codes)?);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let plan = Arc::new(Plan {
        addr: args.addr,
        codes,
        start,
        measure_from,
        end: measure_from + Duration::from_secs(args.duration_secs),
        interval_ns: 1e9 / args.rate,
        next: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..args.connections).map(|_| tokio::spawn(connection(plan.clone()))).collect();
    let (mut tally, mut latency, mut service) = (Tally::default(), histogram(), histogram());
    for task in tasks {
        let (t, l, s) = task.await?;
        tally.ok += t.ok;
        tally.ok_measured += t.ok_measured;
        tally.non_302 += t.non_302;
        tally.errors += t.errors;
        tally.late += t.late;
        latency.add(&l)?;
        service.add(&s)?;
    }
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    println!(
        "rate_result target_rate={:.0} achieved_rate={:.0} ok={} ok_total={} non_302={} errors={} late={} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} service_p99_us={}",
        args.rate,
        tally.ok_measured as f64 / args.duration_secs as f64,
        tally.ok_measured,
        tally.ok,
        tally.non_302,
        tally.errors,
        tally.late,
        q(&latency, 0.5),
        q(&latency, 0.9),
        q(&latency, 0.99),
        q(&latency, 0.999),
        latency.max(),
        q(&service, 0.99),
    );
    Ok(())
}
