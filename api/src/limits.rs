//! What one caller, and all callers together, may ask of the API.
//!
//! - **A token bucket per key** ([`RateLimiter`]): each client key may send
//!   `RICOCHET_API_RATE_LIMIT_PER_SEC` requests a second on average and
//!   `RICOCHET_API_RATE_LIMIT_BURST` at once; past it the answer is `429`
//!   with `Retry-After` in seconds. Requests without a valid key (none, an
//!   unknown one) share a bucket per client address, so a loop of them
//!   costs the API no more than one polite caller. The admin key is not
//!   limited: it is the operator's, and does not belong on a dashboard.
//!   `/healthz` and `/readyz` are not limited either (load balancers).
//! - **Requests in flight** ([`concurrency`]): at most
//!   `RICOCHET_MAX_CONCURRENT_REQUESTS` are handled at once; the others wait
//!   their turn (within the request timeout), so a flood queues in front of
//!   ClickHouse instead of landing on it.
//! - **A request timeout** ([`timeout`]): a request not answered within
//!   `RICOCHET_REQUEST_TIMEOUT_SECS`, waiting included, gets a `503`.
//!
//! The header-read timeout and the connection cap are `ricochet-serve`'s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::auth::hash_key;
use crate::error::ApiError;
use crate::state::ApiState;

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Requests a second per key, on average; 0: no limit.
    pub rate_per_sec: u32,
    /// Requests a key may send at once.
    pub rate_burst: u32,
    /// Requests handled at once, all callers together.
    pub max_concurrent_requests: usize,
    /// Time from a request's head to its answer.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            rate_per_sec: 20,
            rate_burst: 100,
            max_concurrent_requests: 256,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 8 << 20,
        }
    }
}

/// Who a bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Caller {
    /// A client key, by its hash.
    Key(String),
    /// No valid key: the client address.
    Address(IpAddr),
}

/// Token buckets, one per caller.
pub struct RateLimiter {
    buckets: DefaultKeyedRateLimiter<Caller>,
    checks: AtomicU64,
}

impl RateLimiter {
    /// `None` when `per_sec` is 0 (no limit).
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        Some(RateLimiter {
            buckets: governor::RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(seconds to wait)` once the caller's bucket is empty.
    fn check(&self, caller: &Caller) -> Result<(), u64> {
        // Buckets that have filled up again are forgotten now and then, so
        // a stream of ever new addresses does not grow the table for ever.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        self.buckets.check_key(caller).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The 429 middleware (see the module's description).
pub async fn rate_limit(State(s): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let Some(limiter) = s.rate_limiter.as_ref() else {
        return next.run(request).await;
    };
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if bearer.is_some_and(|k| bool::from(k.as_bytes().ct_eq(s.admin_key.as_bytes()))) {
        return next.run(request).await;
    }
    let caller = bearer.map(hash_key).filter(|hash| s.links.api_key_client(hash).is_some()).map_or_else(
        || {
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            Caller::Address(peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
        },
        Caller::Key,
    );
    match limiter.check(&caller) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            metrics::counter!("ricochet_api_rate_limited_total").increment(1);
            ApiError::RateLimited(retry_after.max(1)).into_response()
        }
    }
}

/// Waits for one of the request slots, then handles the request.
pub async fn concurrency(State(slots): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let _slot = slots.acquire_owned().await.expect("the semaphore is never closed");
    next.run(request).await
}

/// A 503 for a request not answered in time.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("ricochet_api_request_timeouts_total").increment(1);
            ApiError::Timeout(limit.as_secs()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(1, 3).unwrap();
        let caller = Caller::Key("k".into());
        for _ in 0..3 {
            assert_eq!(limiter.check(&caller), Ok(()));
        }
        assert_eq!(limiter.check(&caller), Err(1));
        assert_eq!(limiter.check(&Caller::Key("other".into())), Ok(()), "one bucket per caller");
        assert!(RateLimiter::new(0, 10).is_none(), "0: no limit");
    }
}
