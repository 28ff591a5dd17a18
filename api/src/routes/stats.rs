//! Click series and top lists of a link, a client or a campaign. The queries
//! are in [`crate::stats`]; here are the scopes, the cache and the answers.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::{cache_key, campaign_scope, client_scope, limit, parse_range, visible_link};
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, Path};
use crate::format::{CsvBody, Format};
use crate::openapi::{CampaignPath, ClientPath, LinkPath, RangeParams, StatsErrors};
use crate::state::ApiState;
use crate::stats::{self, Range, Scope, StatsQuery, TopBy};

#[derive(Serialize, ToSchema)]
pub struct TopLink {
    pub link_id: String,
    pub code: Option<String>,
    pub destination_url: Option<String>,
    pub clicks: u64,
    pub human_clicks: u64,
    pub opens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TopLinks {
    pub links: Vec<TopLink>,
}

impl CsvBody for TopLinks {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        out.write_record(["link_id", "code", "destination_url", "clicks", "human_clicks", "opens"])?;
        for l in &self.links {
            let text =
                [l.link_id.clone(), l.code.clone().unwrap_or_default(), l.destination_url.clone().unwrap_or_default()];
            out.write_record(text.into_iter().chain([l.clicks, l.human_clicks, l.opens].map(|n| n.to_string())))?;
        }
        Ok(())
    }
}

#[derive(Serialize, ToSchema)]
pub struct TopCampaign {
    pub campaign_id: String,
    pub clicks: u64,
    pub human_clicks: u64,
    pub opens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TopCampaigns {
    pub campaigns: Vec<TopCampaign>,
}

impl CsvBody for TopCampaigns {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        out.write_record(["campaign_id", "clicks", "human_clicks", "opens"])?;
        for c in &self.campaigns {
            let numbers = [c.clicks, c.human_clicks, c.opens].map(|n| n.to_string());
            out.write_record(std::iter::once(c.campaign_id.clone()).chain(numbers))?;
        }
        Ok(())
    }
}

async fn series_response(
    s: &ApiState,
    uri: OriginalUri,
    headers: &HeaderMap,
    scope: Scope,
    (q, range): (StatsQuery, Range),
) -> Result<Response, ApiError> {
    let format = Format::negotiate(q.format.as_deref(), headers)?;
    let ch = s.clickhouse_for(&scope);
    s.cache
        .respond_as(cache_key(&uri), headers, format, || async move { Ok(stats::series(&ch, &scope, range).await?) })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/links/{link_id}/stats",
    tag = "aggregates",
    summary = "A link's click series.",
    params(LinkPath, RangeParams),
    responses(
        (status = 200, description = "The series.", content((stats::Series = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn link_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(LinkPath { link_id }): Path<LinkPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let link = visible_link(&s, &principal, &link_id)?;
    series_response(&s, uri, &headers, Scope::Link(link), parse_range(query)?).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/stats",
    tag = "aggregates",
    summary = "A client's click series.",
    params(ClientPath, RangeParams),
    responses(
        (status = 200, description = "The series.", content((stats::Series = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn client_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(ClientPath { client_id }): Path<ClientPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    series_response(&s, uri, &headers, Scope::Client(client), parse_range(query)?).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/stats",
    tag = "aggregates",
    summary = "A campaign's click series.",
    params(CampaignPath, RangeParams),
    responses(
        (status = 200, description = "The series.", content((stats::Series = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn campaign_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(CampaignPath { client_id, campaign_id }): Path<CampaignPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Read)?;
    series_response(&s, uri, &headers, scope, parse_range(query)?).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/top-links",
    tag = "aggregates",
    summary = "A campaign's most clicked links.",
    params(CampaignPath, RangeParams, ("limit" = Option<u32>, Query, description = "Rows to return. Default: 10.", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The links, most clicked first.", content((TopLinks = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn top_links(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(CampaignPath { client_id, campaign_id }): Path<CampaignPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Read)?;
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 10, 100)?;
    let format = Format::negotiate(q.format.as_deref(), &headers)?;
    let (ch, links) = (s.clickhouse_for(&scope), s.links.clone());
    s.cache
        .respond_as(cache_key(&uri), &headers, format, || async move {
            let rows = stats::top(&ch, &scope, TopBy::Link, range, n).await?;
            let links = rows
                .into_iter()
                .map(|r| {
                    let link = links.get(&r.key);
                    TopLink {
                        code: link.as_ref().map(|l| l.code.to_string()),
                        destination_url: link.as_ref().map(|l| l.destination_url.clone()),
                        clicks: if range.human_only { r.human_clicks } else { r.clicks },
                        human_clicks: r.human_clicks,
                        opens: r.opens,
                        link_id: r.key,
                    }
                })
                .collect();
            Ok(TopLinks { links })
        })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/top-campaigns",
    tag = "aggregates",
    summary = "A client's most clicked campaigns.",
    params(ClientPath, RangeParams, ("limit" = Option<u32>, Query, description = "Rows to return. Default: 10.", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The campaigns, most clicked first.", content((TopCampaigns = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn top_campaigns(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(ClientPath { client_id }): Path<ClientPath>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = Scope::Client(client_scope(&principal, &client_id, KeyScope::Read)?);
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 10, 100)?;
    let format = Format::negotiate(q.format.as_deref(), &headers)?;
    let ch = s.clickhouse_for(&scope);
    s.cache
        .respond_as(cache_key(&uri), &headers, format, || async move {
            let rows = stats::top(&ch, &scope, TopBy::Campaign, range, n).await?;
            let campaigns = rows
                .into_iter()
                .map(|r| TopCampaign {
                    clicks: if range.human_only { r.human_clicks } else { r.clicks },
                    human_clicks: r.human_clicks,
                    opens: r.opens,
                    campaign_id: r.key,
                })
                .collect();
            Ok(TopCampaigns { campaigns })
        })
        .await
}
