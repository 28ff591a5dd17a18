//! Recipients: who clicked in a campaign, and erasing a recipient for good.
//!
//! Erasure (`DELETE /v1/clients/{client_id}/recipients/{recipient_id}`)
//! records the request in ClickHouse's `erasure_requests` and answers 202;
//! the aggregators delete the recipient's raw events and recipient rows
//! within seconds and keep them from being stored again (the argument is in
//! `aggregator/src/erasure.rs`, the user's side in `docs/security.md`).
//! It is the API's only write to ClickHouse, through a client of its own
//! ([`crate::state::erasure_client`]), so every other query keeps
//! `readonly = 1`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use clickhouse::Row;
use ricochet_schemas::{ClientId, RecipientId};
use serde::Serialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};

use super::{cache_key, campaign_scope, limit, parse_range};
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::format::{CsvBody, Format};
use crate::openapi::{self, CampaignPath, ErrorBody, RangeParams, ReadErrors, RecipientPath, StatsErrors};
use crate::state::ApiState;
use crate::stats::{self, StatsQuery};

/// The page of the recipients list; the rest of its query is [`RangeParams`].
/// Only documents `stats::StatsQuery`, which the handler extracts.
pub struct PageParams;

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let rows = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(1000));
        vec![
            openapi::param("limit", ParameterIn::Query, "Rows to return. Default: 100.", rows),
            openapi::param(
                "cursor",
                ParameterIn::Query,
                "`next_cursor` of the previous page (a recipient id).",
                openapi::pattern_schema(openapi::RECIPIENT_PATTERN),
            ),
        ]
    }
}

#[derive(Serialize, ToSchema)]
pub struct Recipients {
    pub recipients: Vec<stats::Recipient>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One row per recipient. A full page's last `recipient_id` is the next page's cursor.
impl CsvBody for Recipients {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        out.write_record(["recipient_id", "first_click", "last_click", "human_clicks", "clicks"])?;
        for r in &self.recipients {
            let numbers =
                [r.first_click.into(), r.last_click.into(), r.human_clicks, r.clicks].map(|n: u64| n.to_string());
            out.write_record(std::iter::once(r.recipient_id.clone()).chain(numbers))?;
        }
        Ok(())
    }
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/recipients",
    tag = "aggregates",
    summary = "Recipients who clicked in a campaign, by recipient id, a page at a time.",
    params(CampaignPath, RangeParams, PageParams),
    responses(
        (status = 200, description = "One page (as CSV: one row per recipient; a full page's last id is the next cursor).", content((Recipients = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn recipients(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(CampaignPath { client_id, campaign_id }): Path<CampaignPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Recipients)?;
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 100, 1000)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| RecipientId::parse(c).map(String::from).map_err(|e| ApiError::BadRequest(format!("cursor: {e}"))))
        .transpose()?;
    let format = Format::negotiate(q.format.as_deref(), &headers)?;
    let ch = s.clickhouse_for(&scope);
    s.cache
        .respond_as(cache_key(&uri), &headers, format, || async move {
            let page = stats::recipients(&ch, &scope, range, after.as_deref(), n).await?;
            let next_cursor = (page.len() == n as usize).then(|| page.last().map(|r| r.recipient_id.clone())).flatten();
            Ok(Recipients { recipients: page, next_cursor })
        })
        .await
}

/// One row of `erasure_requests` (migration 0008).
#[derive(Row, Serialize)]
struct ErasureRequest {
    client_id: String,
    recipient_id: String,
    requested_at: u32,
    /// `admin`, or `client` (a key of the client itself).
    requested_by: String,
}

/// An accepted erasure request.
#[derive(Serialize, ToSchema)]
pub struct Erasure {
    pub client_id: String,
    pub recipient_id: String,
    /// When the API recorded it, RFC 3339 (UTC).
    pub requested_at: String,
    /// Always `accepted`: the aggregators apply it within seconds.
    pub status: String,
}

/// `DELETE /v1/clients/{client_id}/recipients/{recipient_id}`: the admin, or
/// the client's key with the `recipients` scope.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/recipients/{recipient_id}",
    tag = "recipients",
    summary = "Erase a recipient: their raw events and recipient rows are deleted, and never stored again (admin, or the `recipients` scope).",
    description = "Answers 202 once the request is recorded; the aggregators apply it within seconds (`RICOCHET_ERASURE_INTERVAL_SECS`). \
        Rollup counts stay (they hold no recipient). Asking again is harmless. See docs/security.md.",
    params(RecipientPath),
    responses(
        (status = 202, description = "Recorded; applied within seconds.", body = Erasure),
        ReadErrors,
        (status = 503, description = "ClickHouse failed; the body names it (`backend`). Nothing was recorded: retry.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn erase_recipient(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(RecipientPath { client_id, recipient_id }): Path<RecipientPath>,
) -> Result<(StatusCode, Json<Erasure>), ApiError> {
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(format!("client_id: {e}")))?;
    let recipient_id =
        RecipientId::parse(recipient_id).map_err(|e| ApiError::BadRequest(format!("recipient_id: {e}")))?;
    // Whether or not the recipient ever clicked: the request also keeps
    // events still in Kafka or an edge's spool from being stored.
    principal.check_scope(client_id.as_str(), KeyScope::Recipients, || format!("no client {client_id}"))?;
    let requested_at = chrono::Utc::now();
    let row = ErasureRequest {
        client_id: client_id.to_string(),
        recipient_id: recipient_id.to_string(),
        requested_at: requested_at.timestamp() as u32,
        requested_by: principal.audit_name(),
    };
    let write = async {
        let mut insert =
            s.erasures.insert::<ErasureRequest>(ricochet_warehouse::tables::ERASURE_REQUESTS_TABLE).await?;
        insert.write(&row).await?;
        insert.end().await
    };
    write.await.map_err(|e| ApiError::from_clickhouse(e.to_string()))?;
    tracing::info!(%client_id, requested_by = row.requested_by, "recipient erasure recorded");
    metrics::counter!("ricochet_api_erasures_requested_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(Erasure {
            client_id: row.client_id,
            recipient_id: row.recipient_id,
            requested_at: requested_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            status: "accepted".into(),
        }),
    ))
}
