//! Answers that thousands of polling dashboards can share.
//!
//! Identical requests within a second get the same answer from memory, and
//! identical requests that arrive while it is being computed wait for that one
//! computation instead of starting their own (moka's `try_get_with` coalesces
//! them), so ClickHouse sees at most one query per distinct request per
//! second however many screens poll. Every answer carries an `ETag`; a poll
//! that sends it back in `If-None-Match` gets a bodyless 304.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::format::{CsvBody, Format};

/// How old an answer may be. Also what `Cache-Control: max-age` says.
pub const FRESHNESS: Duration = Duration::from_secs(1);

pub struct Cached {
    body: Vec<u8>,
    etag: HeaderValue,
    content_type: &'static str,
}

pub struct ResponseCache {
    inner: moka::future::Cache<String, Arc<Cached>>,
    cache_control: HeaderValue,
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl ResponseCache {
    pub fn new(capacity: u64) -> Self {
        Self::with_freshness(capacity, FRESHNESS)
    }

    /// A cache whose answers may be `freshness` old (whole seconds).
    pub fn with_freshness(capacity: u64, freshness: Duration) -> Self {
        ResponseCache {
            inner: moka::future::Cache::builder().max_capacity(capacity).time_to_live(freshness).build(),
            cache_control: HeaderValue::from_str(&format!("private, max-age={}", freshness.as_secs()))
                .expect("a valid header"),
        }
    }

    /// The answer for `key`: from memory if at most the freshness old, else
    /// computed once for every caller waiting on the same key.
    pub async fn respond<F, Fut, T>(&self, key: String, headers: &HeaderMap, compute: F) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
        T: Serialize,
    {
        self.respond_with(key, headers, Format::Json.content_type(), json_body, compute).await
    }

    /// [`Self::respond`] in the format asked for (`Vary: Accept`, since the
    /// header can choose it): JSON, or the same numbers as CSV.
    pub async fn respond_as<F, Fut, T>(
        &self,
        key: String,
        headers: &HeaderMap,
        format: Format,
        compute: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
        T: Serialize + CsvBody,
    {
        let mut response = match format {
            Format::Json => self.respond_with(key, headers, format.content_type(), json_body, compute).await,
            Format::Csv => {
                let render = |answer: T| answer.to_csv();
                self.respond_with(format!("{key}\ncsv"), headers, format.content_type(), render, compute).await
            }
        }?;
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
        Ok(response)
    }

    async fn respond_with<F, Fut, T, R>(
        &self,
        key: String,
        headers: &HeaderMap,
        content_type: &'static str,
        render: R,
        compute: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
        R: FnOnce(T) -> Vec<u8>,
    {
        let cached = self
            .inner
            .try_get_with(key, async move {
                let body = render(compute().await?);
                let digest = Sha256::digest(&body);
                let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                    .expect("hex is a valid header");
                Ok::<_, ApiError>(Arc::new(Cached { body, etag, content_type }))
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())?;
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|tag| tag.trim() == cached.etag.to_str().unwrap_or_default()));
        let cache_control = self.cache_control.clone();
        if not_modified {
            return Ok((
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, cached.etag.clone()), (header::CACHE_CONTROL, cache_control)],
            )
                .into_response());
        }
        Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(cached.content_type)),
                (header::ETAG, cached.etag.clone()),
                (header::CACHE_CONTROL, cache_control),
            ],
            cached.body.clone(),
        )
            .into_response())
    }
}

/// Through a `Value`, whose keys are sorted: the body, and so the ETag, does
/// not depend on the order a type declares its fields in.
fn json_body<T: Serialize>(answer: T) -> Vec<u8> {
    let value = serde_json::to_value(answer).expect("answers serialize");
    serde_json::to_vec(&value).expect("JSON values serialize")
}
