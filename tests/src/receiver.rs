//! A webhook receiver for the tests: a real HTTP server on loopback that
//! checks every delivery's Standard Webhooks signature, records the events,
//! and can be made to misbehave: fail a share of requests with `500`, answer
//! slowly, answer `410 Gone`, or go down altogether (its listener closed,
//! so connections are refused) and come back on the same port.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ricochet_webhooks::signing::WebhookSecret;
use serde_json::Value;
use tokio::sync::oneshot;

/// One accepted delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub webhook_id: String,
    pub events: Vec<Value>,
    pub at: Instant,
    /// As received, for checking with another implementation: the
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, and
    /// the body.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Default)]
struct Behaviour {
    secret: Mutex<Option<WebhookSecret>>,
    fail_percent: AtomicU32,
    delay_ms: AtomicU64,
    gone: AtomicU32,
    deliveries: Mutex<Vec<Delivery>>,
    /// Every correctly signed request, accepted or failed on purpose: its
    /// `webhook-id` and the ids of the events it carried.
    attempts: Mutex<Vec<(String, Vec<String>)>>,
    requests: AtomicU64,
    bad_signatures: AtomicU64,
}

pub struct Receiver {
    addr: SocketAddr,
    behaviour: Arc<Behaviour>,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl Receiver {
    /// A receiver on a free loopback port, up.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let r = Receiver { addr, behaviour: Arc::new(Behaviour::default()), stop: Mutex::new(None) };
        r.serve(listener);
        r
    }

    /// Its URL, by address.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Its URL by the name `localhost`, which resolves to loopback.
    pub fn url_by_name(&self) -> String {
        format!("http://localhost:{}/hook", self.addr.port())
    }

    /// The secret deliveries must be signed with.
    pub fn expect_secret(&self, shown: &str) {
        *self.behaviour.secret.lock().unwrap() = Some(WebhookSecret::parse(shown).expect("a whsec_ secret"));
    }

    /// Answer `500` to this share of requests, at random.
    pub fn fail_percent(&self, percent: u32) {
        self.behaviour.fail_percent.store(percent, Ordering::Relaxed);
    }

    /// Wait this long before answering.
    pub fn delay(&self, delay: Duration) {
        self.behaviour.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answer `410 Gone` from now on.
    pub fn gone(&self) {
        self.behaviour.gone.store(1, Ordering::Relaxed);
    }

    /// Answer `200` again after [`gone`](Self::gone).
    pub fn not_gone(&self) {
        self.behaviour.gone.store(0, Ordering::Relaxed);
    }

    /// Closes the listener and every connection: requests are refused.
    pub async fn down(&self) {
        let stop = self.stop.lock().unwrap().take();
        if let Some((tx, task)) = stop {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Listens again, on the same port.
    pub async fn up(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("receiver rebind: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("receiver could not listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let router = Router::new().route("/hook", post(receive)).with_state(self.behaviour.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let limits = ricochet_serve::Limits {
            header_read_timeout: Some(Duration::from_secs(10)),
            send_timeout: None,
            max_connections: 1024,
        };
        let task = tokio::spawn(async move {
            let _ = ricochet_serve::serve(
                "test_receiver",
                listener,
                limits,
                move |peer| ricochet_serve::RouterService { router: router.clone(), peer },
                async move {
                    let _ = rx.await;
                },
            )
            .await;
        });
        *self.stop.lock().unwrap() = Some((tx, task));
    }

    /// The `webhook-id`s each event came with, over every signed request
    /// (failed ones too): a retry must carry the same.
    pub fn webhook_ids_by_event(&self) -> std::collections::HashMap<String, HashSet<String>> {
        let mut by_event: std::collections::HashMap<String, HashSet<String>> = Default::default();
        for (webhook_id, events) in self.behaviour.attempts.lock().unwrap().iter() {
            for e in events {
                by_event.entry(e.clone()).or_default().insert(webhook_id.clone());
            }
        }
        by_event
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.behaviour.deliveries.lock().unwrap().clone()
    }

    /// The ids of every event accepted, each once.
    pub fn event_ids(&self) -> HashSet<String> {
        self.deliveries()
            .iter()
            .flat_map(|d| d.events.iter().map(|e| e["data"]["event_id"].as_str().expect("event_id").to_owned()))
            .collect()
    }

    /// Requests received, accepted or not.
    pub fn requests(&self) -> u64 {
        self.behaviour.requests.load(Ordering::Relaxed)
    }

    pub fn bad_signatures(&self) -> u64 {
        self.behaviour.bad_signatures.load(Ordering::Relaxed)
    }
}

async fn receive(State(b): State<Arc<Behaviour>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    b.requests.fetch_add(1, Ordering::Relaxed);
    let delay = b.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if b.gone.load(Ordering::Relaxed) == 1 {
        return StatusCode::GONE;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let secret = b.secret.lock().unwrap().clone();
    if let Some(secret) = secret {
        let ts: i64 = timestamp.parse().unwrap_or(0);
        if !secret.verify(&id, ts, &body, &signature) {
            b.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        }
    }
    let events = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(events)) => events,
        Ok(one) => vec![one],
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let ids = events.iter().filter_map(|e| e["data"]["event_id"].as_str().map(str::to_owned)).collect();
    b.attempts.lock().unwrap().push((id.clone(), ids));
    if rand::random_range(0..100) < b.fail_percent.load(Ordering::Relaxed) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let headers = vec![
        ("webhook-id".to_owned(), id.clone()),
        ("webhook-timestamp".to_owned(), timestamp),
        ("webhook-signature".to_owned(), signature),
    ];
    let body = String::from_utf8_lossy(&body).into_owned();
    b.deliveries.lock().unwrap().push(Delivery { webhook_id: id, events, at: Instant::now(), headers, body });
    StatusCode::NO_CONTENT
}
