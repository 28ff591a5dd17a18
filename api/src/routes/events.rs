//! Exports: a campaign's decided raw events, every click and open with its
//! verdict, its reason and its dimensions, as CSV or NDJSON, for a CRM, a
//! spreadsheet or a warehouse of the sender's own.
//!
//! The answer is streamed: ClickHouse writes the rows in the asked format
//! (`CSVWithNames` or `JSONEachRow`, [`stats::export_events`]) and the API
//! forwards each chunk as it comes, so its memory stays flat whatever the
//! size of the campaign. Only what is decided is in `click_events` (the
//! aggregator writes an event once its verdict is final), so every row is.
//!
//! An export holds a ClickHouse query and a connection for as long as the
//! caller reads, so exports have their own cap (`RICOCHET_API_MAX_CONCURRENT_EXPORTS`,
//! a 503 with `Retry-After` past it) and time limit
//! (`RICOCHET_API_EXPORT_MAX_EXECUTION_SECS`), and skip the response cache.
//! The request timeout covers the time to the first chunk. If ClickHouse
//! fails once rows have gone out, the API cuts the connection without the
//! final chunk, so the caller sees a truncated transfer, never a short file
//! that looks whole.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::campaign_scope;
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, Path};
use crate::openapi::{self, CampaignPath, StatsErrors};
use crate::state::ApiState;
use crate::stats::{self, ExportSpec, StatsError};

/// The range when `from` is not given: this many days before `to`.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest range one export may cover.
pub const MAX_DAYS: i64 = 366;
/// `type` values.
pub const EVENT_TYPES: [&str; 2] = ["click", "open"];
/// `format` values.
pub const FORMATS: [&str; 2] = ["ndjson", "csv"];

/// Exports' own limits, shared by every request.
#[derive(Clone)]
pub struct Exports {
    slots: Arc<Semaphore>,
    max: usize,
    max_execution_secs: u64,
}

impl Exports {
    pub fn new(max_concurrent: usize, max_execution_secs: u64) -> Exports {
        let max = max_concurrent.max(1);
        Exports { slots: Arc::new(Semaphore::new(max)), max, max_execution_secs }
    }
}

/// The query string, unvalidated; unknown parameters are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub human_only: Option<bool>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub format: Option<String>,
}

/// Documents [`EventsQuery`].
pub struct EventsParams;

impl IntoParams for EventsParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let one_of = |values: &[&str]| {
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).build()
        };
        vec![
            openapi::param(
                "from",
                ParameterIn::Query,
                "Start: Unix seconds or RFC 3339. Default: 30 days before `to`.",
                openapi::instant_schema(),
            ),
            openapi::param(
                "to",
                ParameterIn::Query,
                "End (exclusive): Unix seconds or RFC 3339. Default: now. At most 366 days after `from` (else 422).",
                openapi::instant_schema(),
            ),
            openapi::param(
                "human_only",
                ParameterIn::Query,
                "Only events decided human. Default: false (every event, with its verdict).",
                ObjectBuilder::new().schema_type(Type::Boolean).build(),
            ),
            openapi::param(
                "type",
                ParameterIn::Query,
                "Only clicks, or only opens. Default: both.",
                one_of(&EVENT_TYPES),
            ),
            openapi::param(
                "format",
                ParameterIn::Query,
                "`ndjson` (one JSON object per line, `application/x-ndjson`) or `csv` (a header row, `text/csv`); \
                 without it, `Accept: text/csv` picks CSV. Default: `ndjson`.",
                one_of(&FORMATS),
            ),
        ]
    }
}

/// One exported event: a line of NDJSON, or a row of CSV under a header row
/// of these names, in this order. Every value is a string; an unknown one is `""`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    /// Unique per event (UUIDv7 minted by the edge): a receiver can deduplicate on it.
    pub event_id: String,
    /// `click` or `open`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the edge answered, RFC 3339 in UTC with milliseconds.
    pub occurred_at: String,
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    /// From the signed recipient token; `""` without a valid one.
    pub recipient_id: String,
    /// `human`, or `bot` (a click) or `machine` (an open).
    pub verdict: String,
    /// The rule that decided (`human`, `allow_listed`, `burst`, `apple_privacy`, …; docs/bot-detection.md).
    pub reason: String,
    pub country: String,
    pub device: String,
    pub os: String,
    pub browser: String,
    pub mail_client: String,
    pub referrer_domain: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub destination_url: String,
}

/// What to stream, from the query and `Accept`.
fn spec(q: &EventsQuery, headers: &HeaderMap, now: i64, exports: &Exports) -> Result<(ExportSpec, bool), ApiError> {
    let to = q.to.as_deref().map(|t| stats::parse_instant("to", t)).transpose()?.unwrap_or(now);
    let from = q.from.as_deref().map(|f| stats::parse_instant("from", f)).transpose()?;
    let from = from.unwrap_or(to - DEFAULT_DAYS * 86_400).max(0);
    stats::check_bounds(from, to)?;
    if to - from > MAX_DAYS * 86_400 {
        return Err(StatsError::Conflict(format!("range too long for one export: at most {MAX_DAYS} days")).into());
    }
    let event_type = match q.event_type.as_deref() {
        None => None,
        Some("click") => Some("click"),
        Some("open") => Some("open"),
        Some(other) => return Err(ApiError::BadRequest(format!("type must be click or open, not {other:?}"))),
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("ndjson") => false,
        Some(other) => return Err(ApiError::BadRequest(format!("format must be ndjson or csv, not {other:?}"))),
        None => wants_csv(headers),
    };
    let format = if csv { "CSVWithNames" } else { "JSONEachRow" };
    let human_only = q.human_only.unwrap_or(false);
    Ok((ExportSpec { from, to, human_only, event_type, format, max_execution_secs: exports.max_execution_secs }, csv))
}

/// `Accept` names `text/csv` before any NDJSON or JSON type.
fn wants_csv(headers: &HeaderMap) -> bool {
    crate::format::accepted(headers)
        .iter()
        .find_map(|kind| match kind.as_str() {
            "text/csv" => Some(true),
            "application/x-ndjson" | "application/json" => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// `GET /v1/clients/{client_id}/campaigns/{campaign_id}/events`: the admin, or
/// a key of the client with the `recipients` scope (rows carry recipient ids).
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/events",
    tag = "exports",
    summary = "Export a campaign's decided clicks and opens, streamed as NDJSON or CSV (admin, or the `recipients` scope).",
    description = "Every event in the range, once, with its verdict, the rule that decided it and its dimensions \
        (see the `ExportedEvent` schema: one NDJSON object per line, or a CSV row under a header row of the same names). \
        Rows come in storage order (by link, then time), not sorted by time. \
        Streamed: a failure after the first rows cuts the connection without the final chunk.",
    params(CampaignPath, EventsParams),
    responses(
        (status = 200, description = "The events, streamed.", content((String = "application/x-ndjson"), (String = "text/csv"))),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn campaign_events(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    headers: HeaderMap,
    Path(CampaignPath { client_id, campaign_id }): Path<CampaignPath>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Recipients)?;
    let Query(q) = query?;
    let (spec, csv) = spec(&q, &headers, chrono::Utc::now().timestamp(), &s.exports)?;
    let permit = s.exports.slots.clone().try_acquire_owned().map_err(|_| ApiError::ExportsBusy(s.exports.max))?;
    let mut cursor = stats::export_events(&s.clickhouse_for(&scope), &scope, &spec)?;
    // The first chunk before the status line: a query ClickHouse refuses is
    // still a clear 503, not a 200 with a broken body.
    let first = cursor.next().await.map_err(|e| ApiError::from_clickhouse(e.to_string()))?;
    metrics::counter!("ricochet_api_exports_total").increment(1);
    let body = Body::from_stream(Stream { cursor, first, permit: Some(permit) }.into_stream());
    let content_type = if csv { "text/csv; charset=utf-8" } else { "application/x-ndjson" };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if csv {
        let name = format!("attachment; filename=\"{client_id}-{campaign_id}-events.csv\"");
        if let Ok(v) = HeaderValue::from_str(&name) {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

/// The chunks ClickHouse sends, forwarded; the export's slot is held until
/// the last one has gone (or the caller hangs up and the stream is dropped).
struct Stream {
    cursor: clickhouse::query::BytesCursor,
    first: Option<Bytes>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Stream {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            s.permit.as_ref()?;
            if let Some(chunk) = s.first.take() {
                metrics::counter!("ricochet_api_export_bytes_total").increment(chunk.len() as u64);
                return Some((Ok(chunk), s));
            }
            match s.cursor.next().await {
                Ok(Some(chunk)) => {
                    metrics::counter!("ricochet_api_export_bytes_total").increment(chunk.len() as u64);
                    Some((Ok(chunk), s))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, backend = "clickhouse", "export cut short");
                    metrics::counter!("ricochet_api_backend_errors_total", "backend" => "clickhouse").increment(1);
                    // Ends the stream after this error, and frees the slot.
                    s.permit = None;
                    Some((Err(std::io::Error::other("ClickHouse failed during the export")), s))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_123;

    fn parse(query: &str, accept: Option<&str>) -> Result<(ExportSpec, bool), ApiError> {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        let Query(q) = Query::<EventsQuery>::try_from_uri(&uri).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        spec(&q, &headers, NOW, &Exports::new(1, 60))
    }

    #[test]
    fn defaults_are_thirty_days_to_now_every_event_as_ndjson() {
        let (s, csv) = parse("", None).unwrap();
        assert_eq!(
            (s.from, s.to, s.human_only, s.event_type, s.format, csv),
            (NOW - 30 * 86_400, NOW, false, None, "JSONEachRow", false)
        );
        assert_eq!(s.max_execution_secs, 60);
    }

    #[test]
    fn format_comes_from_the_parameter_then_accept() {
        assert!(parse("format=csv", None).unwrap().1);
        assert!(!parse("format=ndjson", Some("text/csv")).unwrap().1);
        assert!(parse("", Some("text/csv")).unwrap().1);
        assert!(!parse("", Some("text/csv;q=0, application/x-ndjson")).unwrap().1);
        assert_eq!(parse("", Some("text/csv")).unwrap().0.format, "CSVWithNames");
    }

    #[test]
    fn bad_values_are_400_and_conflicts_422() {
        let status = |q: &str| parse(q, None).unwrap_err().into_response().status().as_u16();
        assert_eq!(status("type=view"), 400);
        assert_eq!(status("format=xml"), 400);
        assert_eq!(status("from=yesterday"), 400);
        assert_eq!(status("nonce=1"), 400);
        assert_eq!(status("from=2000&to=1000"), 422);
        assert_eq!(status(&format!("from=0&to={}", 400 * 86_400)), 422);
        let (s, _) = parse("type=open&human_only=true&from=1000&to=2000", None).unwrap();
        assert_eq!((s.event_type, s.human_only, s.from, s.to), (Some("open"), true, 1000, 2000));
    }
}
