//! The one error type of the API: every failure maps to a status and a JSON
//! body `{"error": {"code": …, "message": …}}` that says what to fix. A 5xx
//! names the backing server that failed (`"backend": "clickhouse"` or
//! `"kafka"`, and in the message) and is counted in
//! `ricochet_api_backend_errors_total{backend}`; what the server said (which
//! may name hosts, tables and queries) goes to the log, never to the caller.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::openapi::{ErrorBody, ErrorDetail};
use crate::stats::StatsError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Each value is allowed, but not together (see `openapi.rs`).
    #[error("{0}")]
    Unprocessable(String),
    /// The request is fine, but the resource's state refuses it (a client's
    /// webhooks at their limit, a replay of a disabled endpoint).
    #[error("{0}")]
    Conflict(String),
    /// Writing to the registry topics failed.
    #[error("the Kafka broker did not take the registry write: {0}")]
    Registry(String),
    #[error("ClickHouse, the analytics store, failed: {0}")]
    Store(String),
    /// ClickHouse stopped the query at the API's `max_execution_time`.
    #[error("ClickHouse stopped the query at the API's time limit: {0}")]
    StoreTimeout(String),
    #[error("the Kafka broker failed: {0}")]
    Kafka(String),
    /// Not ready yet (still reading the registry): a 503, not a failure.
    #[error("{0}")]
    Loading(String),
    /// The caller's token bucket is empty: retry after this many seconds.
    #[error("too many requests with this key (or, without a valid key, from this address); retry in {0} s")]
    RateLimited(u64),
    /// Not answered within the request timeout, in seconds.
    #[error("the request was not answered within {0} s; retry later")]
    Timeout(u64),
    /// ClickHouse refused the query: the client used up its share of the
    /// API user's keyed quota (code 201, QUOTA_EXPIRED) for the interval.
    #[error("this client used up its share of ClickHouse for now (its quota); retry in a minute")]
    ClientQuota,
    /// Every export slot is taken (`RICOCHET_API_MAX_CONCURRENT_EXPORTS`).
    #[error("{0} exports are streaming already, the most this API runs at once; retry in a few seconds")]
    ExportsBusy(usize),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::StoreTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "query_timeout"),
            ApiError::Registry(_) | ApiError::Store(_) | ApiError::Kafka(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Loading(_) => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::ClientQuota => (StatusCode::TOO_MANY_REQUESTS, "clickhouse_quota"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::ExportsBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, "exports_busy"),
        };
        let backend = self.backend();
        let message = match backend {
            Some(backend) => {
                tracing::error!(error = %self, backend, "request failed");
                metrics::counter!("ricochet_api_backend_errors_total", "backend" => backend).increment(1);
                self.public_message().to_owned()
            }
            None => self.to_string(),
        };
        let body = Json(ErrorBody {
            error: ErrorDetail { code: code.into(), message, items: None, backend: backend.map(Into::into) },
        });
        match self {
            ApiError::Unauthorized(_) => (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response(),
            ApiError::RateLimited(secs) | ApiError::Timeout(secs) => {
                let wait = if matches!(self, ApiError::Timeout(_)) { 1 } else { secs };
                (status, [(header::RETRY_AFTER, wait.to_string())], body).into_response()
            }
            ApiError::ExportsBusy(_) => (status, [(header::RETRY_AFTER, "5")], body).into_response(),
            // The quota's shortest interval is a minute (infra/clickhouse/users.xml).
            ApiError::ClientQuota => (status, [(header::RETRY_AFTER, "60")], body).into_response(),
            _ => (status, body).into_response(),
        }
    }
}

impl ApiError {
    /// The backing server a 5xx comes from.
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            ApiError::Store(_) | ApiError::StoreTimeout(_) => Some("clickhouse"),
            ApiError::Registry(_) | ApiError::Kafka(_) => Some("kafka"),
            _ => None,
        }
    }

    /// A ClickHouse failure: [`ApiError::StoreTimeout`] when the server
    /// stopped the query at `max_execution_time` (code 159, TIMEOUT_EXCEEDED),
    /// [`ApiError::ClientQuota`] when the client's quota is spent (code 201).
    pub fn from_clickhouse(message: String) -> Self {
        if message.contains("Code: 159") {
            ApiError::StoreTimeout(message)
        } else if message.contains("Code: 201") {
            // Not a failure of the store: the caller's own use. Logged, not shown.
            tracing::warn!(%message, "a client's ClickHouse quota is spent");
            metrics::counter!("ricochet_api_client_quota_refusals_total").increment(1);
            ApiError::ClientQuota
        } else {
            ApiError::Store(message)
        }
    }

    /// A 5xx's message for the caller: which server failed, not what it said.
    fn public_message(&self) -> &'static str {
        match self {
            ApiError::Store(_) => "ClickHouse, the analytics store, failed; the API's log has the details",
            ApiError::StoreTimeout(_) => {
                "the query took longer than ClickHouse allows the API's queries \
                 (RICOCHET_API_CLICKHOUSE_MAX_EXECUTION_SECS); ask for a shorter range or retry later"
            }
            ApiError::Registry(_) => "the Kafka broker did not take the registry write; the API's log has the details",
            _ => "the Kafka broker failed; the API's log has the details",
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::BadRequest(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::BadParam(m) => ApiError::BadRequest(m),
            StatsError::Conflict(m) => ApiError::Unprocessable(m),
            StatsError::ClickHouse(e) => ApiError::from_clickhouse(e.to_string()),
        }
    }
}

/// `axum::extract::Path`, whose rejection (e.g. a segment that is not valid
/// UTF-8 once decoded) is an [`ApiError`] with the JSON error body like every
/// other 400, instead of axum's plain-text answer.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

/// For routes that take no query parameters: any parameter is a 400, as an
/// unknown one is on the routes that take some (their query types deny
/// unknown fields). A parameter that changes nothing would otherwise make
/// each request a new cache entry.
pub struct NoQuery;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        match parts.uri.query() {
            None | Some("") => Ok(NoQuery),
            Some(_) => Err(ApiError::BadRequest(
                "invalid query string: this route takes no query parameters (see /v1/openapi.json)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_5xx_names_its_backend_and_a_4xx_keeps_the_shape() {
        let (status, b) = body(ApiError::Store("Table default.click_events at 10.0.0.7 doesn't exist".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["error"]["backend"], "clickhouse");
        assert!(b["error"]["message"].as_str().unwrap().starts_with("ClickHouse"), "{b}");
        assert!(!b.to_string().contains("click_events") && !b.to_string().contains("10.0.0.7"), "{b}");
        let (_, b) = body(ApiError::Registry("no leader".into())).await;
        assert_eq!(b["error"]["backend"], "kafka");
        assert!(b["error"]["message"].as_str().unwrap().contains("Kafka broker"), "{b}");
        let (status, b) = body(ApiError::Unprocessable("from must be earlier than to".into())).await;
        assert_eq!((status, &b["error"]["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &"unprocessable".into()));
        assert!(b["error"].get("backend").is_none(), "{b}");
    }
}
