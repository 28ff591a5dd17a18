//! A bounded load generator: clicks at a steady rate, answers recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// When each 302 arrived.
    pub redirected_at: Vec<Instant>,
    /// Anything else (status or transport error), with what it was.
    pub failures: Vec<String>,
}

impl LoadReport {
    pub fn redirected(&self) -> u64 {
        self.redirected_at.len() as u64
    }
}

/// GETs `url` at about `rate` per second for `duration`, at most 64 in flight.
/// Stops early when `stop` is set.
pub async fn clicks(
    url: String,
    rate: u64,
    duration: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> LoadReport {
    let http = crate::client::http();
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tasks = Vec::new();
    while start.elapsed() < duration && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let (http, url, report) = (http.clone(), url.clone(), report.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = http.get(url).send().await;
                let mut r = report.lock().unwrap();
                match outcome {
                    Ok(resp) if resp.status() == 302 => r.redirected_at.push(Instant::now()),
                    Ok(resp) => r.failures.push(format!("status {}", resp.status())),
                    Err(e) => r.failures.push(e.to_string()),
                }
                drop(permit);
            }));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let r = report.lock().unwrap().clone();
    r
}
