//! The one error type of the API: every failure maps to a status and a JSON
//! body `{"error": {"code": …, "message": …}}` that says what to fix. A 5xx
//! names the backing server that failed (`"backend": "clickhouse"` or
//! `"kafka"`, and in the message) and is counted in
//! `ricochet_api_backend_errors_total{backend}`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
    /// Writing to the registry topics failed.
    #[error("the Kafka broker did not take the registry write: {0}")]
    Registry(String),
    #[error("ClickHouse, the analytics store, failed: {0}")]
    Store(String),
    #[error("the Kafka broker failed: {0}")]
    Kafka(String),
    /// Not ready yet (still reading the registry): a 503, not a failure.
    #[error("{0}")]
    Loading(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Registry(_) | ApiError::Store(_) | ApiError::Kafka(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Loading(_) => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        };
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some(backend) = self.backend() {
            tracing::error!(error = %self, backend, "request failed");
            metrics::counter!("ricochet_api_backend_errors_total", "backend" => backend).increment(1);
            error["backend"] = json!(backend);
        }
        let body = Json(json!({ "error": error }));
        if status == StatusCode::UNAUTHORIZED {
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (status, body).into_response()
    }
}

impl ApiError {
    /// The backing server a 5xx comes from.
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            ApiError::Store(_) => Some("clickhouse"),
            ApiError::Registry(_) | ApiError::Kafka(_) => Some("kafka"),
            _ => None,
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
            StatsError::ClickHouse(e) => ApiError::Store(e.to_string()),
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
        let (status, b) = body(ApiError::Store("timeout".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["error"]["backend"], "clickhouse");
        assert!(b["error"]["message"].as_str().unwrap().starts_with("ClickHouse"), "{b}");
        let (_, b) = body(ApiError::Registry("no leader".into())).await;
        assert_eq!(b["error"]["backend"], "kafka");
        assert!(b["error"]["message"].as_str().unwrap().contains("Kafka broker"), "{b}");
        let (status, b) = body(ApiError::Unprocessable("from must be earlier than to".into())).await;
        assert_eq!((status, &b["error"]["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &"unprocessable".into()));
        assert!(b["error"].get("backend").is_none(), "{b}");
    }
}
