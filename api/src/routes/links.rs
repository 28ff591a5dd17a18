//! Tracking links: creating them one at a time or by the batch, reading one,
//! and pausing, resuming or deleting it.
//!
//! Every write goes to the registry's compacted topics and answers only once
//! the broker acknowledged it; edges apply it within a second by tailing.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ricochet_registry::{Destination, NewLink};
use ricochet_schemas::{CampaignId, ClientId, LinkCode, LinkId, LinkRecord, LinkStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::visible_link;
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{self, BatchItemError, CreateErrors, ErrorBody, ErrorDetail, LinkPath, ReadErrors, UpdateErrors};
use crate::state::ApiState;

/// `POST /v1/links` body. Fields are strings here and validated one by one so
/// that each error names its field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    #[schema(schema_with = openapi::id_schema)]
    pub client_id: String,
    #[schema(schema_with = openapi::id_schema)]
    pub campaign_id: String,
    /// Where the link sends the recipient.
    #[schema(schema_with = openapi::url_schema)]
    pub destination_url: String,
    /// Unix seconds; before it the link answers 410.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 0, maximum = 253402300799.0)]
    pub valid_from: Option<i64>,
    /// Unix seconds; from it on the link answers 410.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 0, maximum = 253402300799.0)]
    pub valid_until: Option<i64>,
    /// Clicks after which the edges close the link (approximately, see docs/click-limits.md).
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 1)]
    pub click_limit: Option<i64>,
    /// A trap link to hide in the message (e.g. a 1×1 anchor no person sees):
    /// a hit voids the recipient's clicks on the campaign (docs/bot-detection.md).
    #[serde(default)]
    pub honeypot: bool,
}

impl CreateLink {
    pub(crate) fn validate(self) -> Result<NewLink, ApiError> {
        let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(e.to_string());
        for (name, value) in [("valid_from", self.valid_from), ("valid_until", self.valid_until)] {
            if value.is_some_and(|v| !(0..=openapi::MAX_VALIDITY_SECONDS).contains(&v)) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be Unix seconds between 0 and {}",
                    openapi::MAX_VALIDITY_SECONDS
                )));
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if from >= until {
                return Err(ApiError::Unprocessable("valid_from must be earlier than valid_until".into()));
            }
        }
        if self.click_limit.is_some_and(|l| l <= 0) {
            return Err(ApiError::BadRequest("click_limit must be a positive number".into()));
        }
        Ok(NewLink {
            client_id: ClientId::parse(self.client_id).map_err(|e| bad(&e))?,
            campaign_id: CampaignId::parse(self.campaign_id).map_err(|e| bad(&e))?,
            destination: Destination::parse(&self.destination_url).map_err(|e| bad(&e))?,
            // Times are Unix seconds on the API, milliseconds in the registry.
            valid_from_ms: self.valid_from.map(|s| s * 1000),
            valid_until_ms: self.valid_until.map(|s| s * 1000),
            click_limit: self.click_limit,
            honeypot: self.honeypot,
        })
    }
}

/// A link as the API returns it.
#[derive(Serialize, ToSchema)]
pub struct Link {
    #[schema(value_type = String)]
    pub link_id: LinkId,
    #[schema(value_type = String)]
    pub code: LinkCode,
    #[schema(value_type = String)]
    pub client_id: ClientId,
    #[schema(value_type = String)]
    pub campaign_id: CampaignId,
    pub destination_url: String,
    #[schema(value_type = String, example = "active")]
    pub status: LinkStatus,
    /// The URL to put in the message.
    pub tracking_url: String,
    /// Unix seconds.
    pub created_at: i64,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub click_limit: Option<i64>,
    pub honeypot: bool,
}

impl Link {
    /// `base` is where the edges answer, e.g. `https://t.example.com`.
    pub fn new(link: &LinkRecord, base: &str) -> Self {
        Link {
            link_id: link.link_id.clone(),
            code: link.code.clone(),
            client_id: link.client_id.clone(),
            campaign_id: link.campaign_id.clone(),
            destination_url: link.destination_url.clone(),
            status: link.status,
            tracking_url: format!("{}/{}", base.trim_end_matches('/'), link.code),
            // Times are milliseconds in the registry, Unix seconds on the API.
            created_at: link.created_at_ms / 1000,
            valid_from: link.valid_from_ms.map(|m| m / 1000),
            valid_until: link.valid_until_ms.map(|m| m / 1000),
            click_limit: link.click_limit,
            honeypot: link.honeypot,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Links {
    pub links: Vec<Link>,
}

#[utoipa::path(
    post,
    path = "/v1/links",
    tag = "links",
    summary = "Create a tracking link (admin).",
    request_body = CreateLink,
    responses(
        (status = 201, description = "Created.", body = Link),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    body: Result<Json<CreateLink>, JsonRejection>,
) -> Result<(StatusCode, Json<Link>), ApiError> {
    principal.require(KeyScope::Write)?;
    let Json(body) = body?;
    let new = body.validate()?;
    principal.require_write(new.client_id.as_str())?;
    let (link, version) = s.writer.create(new, &s.links).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    // Visible to this process's reads at once, without waiting for the tail.
    s.links.apply_at(&link, version);
    Ok((StatusCode::CREATED, Json(Link::new(&link, &s.public_redirect_url))))
}

#[utoipa::path(
    get,
    path = "/v1/links/{link_id}",
    tag = "links",
    summary = "A link.",
    params(LinkPath),
    responses(
        (status = 200, description = "The link.", body = Link),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(LinkPath { link_id }): Path<LinkPath>,
) -> Result<Json<Link>, ApiError> {
    let link = visible_link(&s, &principal, &link_id)?;
    Ok(Json(Link::new(&link, &s.public_redirect_url)))
}

/// Most links one batch may create.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinks {
    #[schema(min_items = 1, max_items = 10_000)]
    pub links: Vec<CreateLink>,
}

/// `POST /v1/links:batch`: all or nothing. Every item is validated first and
/// a single invalid item rejects the batch with a per-item report. If the
/// broker acknowledges only part of the batch, the acknowledged links are
/// marked deleted again, so no link of a failed batch is ever usable.
#[utoipa::path(
    post,
    path = "/v1/links:batch",
    tag = "links",
    summary = "Create up to 10,000 links at once, all or none (admin).",
    request_body = CreateLinks,
    responses(
        (status = 201, description = "Created, in the order given.", body = Links),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create_links(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    body: Result<Json<CreateLinks>, JsonRejection>,
) -> Result<Response, ApiError> {
    principal.require(KeyScope::Write)?;
    let Json(CreateLinks { links }) = body?;
    if links.is_empty() || links.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!("a batch holds 1 to {MAX_BATCH} links, not {}", links.len())));
    }
    let total = links.len();
    let mut valid = Vec::with_capacity(total);
    let mut errors = Vec::new();
    // 422 when every invalid item only has conflicting values, else 400.
    let mut conflicts_only = true;
    for (index, item) in links.into_iter().enumerate() {
        match item.validate() {
            Ok(new) => valid.push(new),
            Err(e) => {
                conflicts_only &= matches!(e, ApiError::Unprocessable(_));
                // A batch holds at most MAX_BATCH items, so the index fits.
                errors.push(BatchItemError { index: index as u32, message: e.to_string() })
            }
        }
    }
    if !errors.is_empty() {
        let (status, code) = if conflicts_only {
            (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable")
        } else {
            (StatusCode::BAD_REQUEST, "bad_request")
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: format!("{} of {total} links are invalid; none were created", errors.len()),
                items: Some(errors),
                backend: None,
            },
        };
        return Ok((status, Json(body)).into_response());
    }
    for new in &valid {
        principal.require_write(new.client_id.as_str())?;
    }
    let records: Vec<_> = valid.into_iter().map(|new| s.writer.mint(new, &s.links)).collect();
    let results = s.writer.put_links(&records).await;
    if let Some(failure) = results.iter().find_map(|r| r.as_ref().err()) {
        let written: Vec<_> = records
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(rec, _)| LinkRecord { status: LinkStatus::Deleted, ..rec.clone() })
            .collect();
        let undone = s.writer.put_links(&written).await.iter().filter(|r| r.is_ok()).count();
        tracing::error!(error = %failure, written = written.len(), undone, "batch partly acknowledged; rolled back");
        return Err(ApiError::Registry(format!("{failure}; the batch was rolled back")));
    }
    // Every write was acknowledged (checked above).
    for (record, version) in records.iter().zip(results.into_iter().flatten()) {
        s.links.apply_at(record, version);
    }
    let links = records.iter().map(|r| Link::new(r, &s.public_redirect_url)).collect();
    Ok((StatusCode::CREATED, Json(Links { links })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchLink {
    #[schema(schema_with = link_status_schema)]
    pub status: String,
}

/// `PATCH /v1/links/{id}`: pause, resume or delete one link.
#[utoipa::path(
    patch,
    path = "/v1/links/{link_id}",
    tag = "links",
    summary = "Pause, resume or delete a link (admin).",
    params(LinkPath),
    request_body = PatchLink,
    responses(
        (status = 200, description = "The updated link.", body = Link),
        UpdateErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn patch_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(LinkPath { link_id }): Path<LinkPath>,
    body: Result<Json<PatchLink>, JsonRejection>,
) -> Result<Json<Link>, ApiError> {
    principal.require(KeyScope::Write)?;
    LinkId::parse(link_id.as_str()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Json(patch) = body?;
    let status: LinkStatus = patch.status.parse().map_err(ApiError::BadRequest)?;
    let link = s.links.get(&link_id).ok_or_else(|| ApiError::NotFound(format!("no link with id {link_id:?}")))?;
    principal.check(link.client_id.as_str(), || format!("no link with id {link_id:?}"))?;
    principal.require_write(link.client_id.as_str())?;
    let updated = LinkRecord { status, ..(*link).clone() };
    let version = s.writer.put_link(&updated).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_at(&updated, version);
    Ok(Json(Link::new(&updated, &s.public_redirect_url)))
}

fn link_status_schema() -> utoipa::openapi::schema::Object {
    openapi::enum_schema(&["active", "paused", "deleted"])
}
