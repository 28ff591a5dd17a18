//! The receiver of `bench/webhooks.sh`: answers every webhook delivery at
//! once with `204` and counts it, so what is timed is the deliverer, not the
//! receiver. It does not verify signatures (the tests do): counting the
//! events in a body is a byte search for `"event_id"`.
//!
//! `GET /count` answers `{"requests", "events", "first_ms", "last_ms"}`:
//! deliveries so far, and the wall clock of the first and last (ms).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    events: AtomicU64,
    first_ms: AtomicI64,
    last_ms: AtomicI64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn receive(State(c): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    let needle = b"\"event_id\"";
    let events = body.windows(needle.len()).filter(|w| w == needle).count() as u64;
    let now = now_ms();
    let _ = c.first_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    c.last_ms.store(now, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.events.fetch_add(events, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn count(State(c): State<Arc<Counts>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "requests": c.requests.load(Ordering::Relaxed),
        "events": c.events.load(Ordering::Relaxed),
        "first_ms": c.first_ms.load(Ordering::Relaxed),
        "last_ms": c.last_ms.load(Ordering::Relaxed),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let router =
        Router::new().route("/hook", post(receive)).route("/count", get(count)).with_state(Arc::new(Counts::default()));
    axum::serve(listener, router).await?;
    Ok(())
}
