//! The handlers, one file per resource. A handler's `#[utoipa::path]` is
//! both its route in [`crate::router`] and its entry in the OpenAPI document,
//! so what a file declares is what the API serves.
//!
//! Every handler takes the caller's [`Principal`] ([`crate::auth`]), reads
//! aggregates through the coalescing cache ([`crate::cache`]) and fails with
//! an [`ApiError`]. The checks below are shared by several resources, so
//! that a link, client or campaign the caller may not see answers the same
//! 404 whichever route asked.

pub mod breakdowns;
pub mod clients;
pub mod events;
pub mod keys;
pub mod links;
pub mod operations;
pub mod recipients;
pub mod stats;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query};
use ricochet_schemas::{CampaignId, ClientId, LinkId, LinkRecord};

use crate::auth::{KeyScope, Principal};
use crate::error::ApiError;
use crate::state::ApiState;
use crate::stats::{Range, Scope, StatsQuery};

/// The link, if the principal may see it; otherwise the same 404 as for no link.
fn visible_link(s: &ApiState, principal: &Principal, link_id: &str) -> Result<Arc<LinkRecord>, ApiError> {
    principal.require(KeyScope::Read)?;
    LinkId::parse(link_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let missing = || ApiError::NotFound(format!("no link with id {link_id:?}"));
    let link = s.links.get(link_id).ok_or_else(missing)?;
    principal.check(link.client_id.as_str(), || format!("no link with id {link_id:?}"))?;
    Ok(link)
}

fn client_scope(principal: &Principal, client_id: &str, needs: KeyScope) -> Result<ClientId, ApiError> {
    principal.check_scope(client_id, needs, || format!("no client {client_id:?}"))?;
    ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn campaign_scope(
    principal: &Principal,
    client_id: &str,
    campaign_id: &str,
    needs: KeyScope,
) -> Result<Scope, ApiError> {
    let client = client_scope(principal, client_id, needs)?;
    let campaign = CampaignId::parse(campaign_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Scope::Campaign(client, campaign))
}

fn parse_range(query: Result<Query<StatsQuery>, QueryRejection>) -> Result<(StatsQuery, Range), ApiError> {
    let Query(q) = query?;
    let range = Range::parse(&q, chrono::Utc::now().timestamp())?;
    Ok((q, range))
}

fn cache_key(uri: &OriginalUri) -> String {
    uri.0.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
}

fn limit(q: &StatsQuery, default: u32, max: u32) -> Result<u32, ApiError> {
    match q.limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ApiError::BadRequest(format!("limit must be between 1 and {max}, not {n}"))),
    }
}
