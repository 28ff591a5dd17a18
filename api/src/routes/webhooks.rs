//! Webhooks: the endpoints a client registers to receive its decided clicks
//! and opens (`click.human`, `click.bot`, `open.human`, `open.machine`),
//! signed with a secret of their own (Standard Webhooks), and what became of
//! each delivery.
//!
//! An endpoint is one record on the compacted webhooks topic
//! (`RICOCHET_WEBHOOKS_TOPIC`), keyed by its id: the API writes it (create,
//! rotate the secret, replay, delete) and answers once the broker
//! acknowledged it; the deliverer (`ricochet-webhooks`) follows the topic,
//! delivers, and writes back what it found out (disabled: `gone` after a
//! `410`, `failing` after a day of failures; failing since), which `enable`
//! clears. The API holds
//! every endpoint in memory ([`WebhookState::endpoints`]), followed the same way,
//! so `/readyz` waits for it too. Deliveries are read from ClickHouse's
//! `webhook_deliveries` ([`stats::webhook_deliveries`]), where the deliverer
//! logs each attempt.
//!
//! Records hold the signing secrets, which the API shows only when it makes
//! one (create, rotate). Targets are checked at registration
//! ([`ricochet_webhooks::target::check_url`]: http or https, no credentials,
//! no loopback, private or link-local address unless
//! `RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS`), and again by the deliverer
//! after each DNS lookup. Managing a client's webhooks needs the `write` and
//! `recipients` scopes (payloads carry recipient ids); reading them, `read`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use rand::Rng;
use ricochet_schemas::{CampaignId, ClientId, Replay, WebhookRecord};
use ricochet_webhooks::endpoints::{EndpointWriter, Endpoints};
use ricochet_webhooks::payload::EVENT_TYPES;
use ricochet_webhooks::signing::WebhookSecret;
use ricochet_webhooks::target::{self, Policy};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::Required;
use utoipa::{IntoParams, ToSchema};

use super::client_scope;
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{self, ClientPath, ErrorBody, ReadErrors, WebhookErrors, WebhookPath};
use crate::state::ApiState;
use crate::stats::{self, Scope};

/// Most webhooks (not deleted) one client may have.
pub const MAX_PER_CLIENT: usize = 20;
/// Largest `batch_size`: events in one delivery.
pub const MAX_BATCH_SIZE: i64 = 100;
/// How long a rotated-out secret still signs deliveries, beside the new one.
pub const PREVIOUS_SECRET_MS: i64 = 24 * 3600 * 1000;
/// The longest range one replay may cover.
pub const MAX_REPLAY_DAYS: i64 = 31;
/// How far in the future a replay's `to` may lie (clocks differ a little).
pub const REPLAY_SLACK_MS: i64 = 5 * 60 * 1000;
/// Delivery attempts listed by default, and at most.
pub const DELIVERIES_DEFAULT: u32 = 50;
pub const DELIVERIES_MAX: u32 = 500;
/// `outcome` of a delivery attempt (migration 0011).
pub const OUTCOMES: [&str; 5] = ["delivered", "failed", "gone", "refused", "dropped"];

/// What the webhook routes share: every endpoint, kept current by following
/// the topic on a thread of its own ([`crate::service`]), its writer, and the
/// operator's target policy.
pub struct WebhookState {
    pub endpoints: Arc<Endpoints>,
    pub writer: EndpointWriter,
    pub policy: Policy,
    /// One change at a time in this process: a read-modify-write (the count
    /// against [`MAX_PER_CLIENT`], a rotation) does not lose another's.
    writes: tokio::sync::Mutex<()>,
}

impl WebhookState {
    pub fn new(endpoints: Arc<Endpoints>, writer: EndpointWriter, policy: Policy) -> WebhookState {
        WebhookState { endpoints, writer, policy, writes: tokio::sync::Mutex::new(()) }
    }

    async fn put(&self, record: WebhookRecord) -> Result<(), ApiError> {
        self.writer.put(record, &self.endpoints).await.map_err(|e| ApiError::Registry(e.to_string()))
    }
}

/// `prefix` and 22 base62 characters (~131 bits) from the CSPRNG.
fn mint_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..22).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{body}")
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    ricochet_registry::writer::now_ms()
}

/// A caller who may manage `client_id`'s webhooks: the admin, or that
/// client's key with `write` and `recipients`; another client's key sees a 404.
fn manage_scope(principal: &Principal, client_id: &str) -> Result<ClientId, ApiError> {
    let client = client_scope(principal, client_id, KeyScope::Write)?;
    principal.require(KeyScope::Recipients)?;
    Ok(client)
}

fn check_webhook_id(webhook_id: &str) -> Result<(), ApiError> {
    let ok = webhook_id
        .strip_prefix("wh_")
        .is_some_and(|rest| (1..=61).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("webhook_id must be `wh_` and 1 to 61 letters or digits, not {webhook_id:?}")))
    }
}

/// The client's webhook, unless deleted; otherwise the same 404 as for none.
fn visible(s: &ApiState, client: &ClientId, webhook_id: &str) -> Result<Arc<WebhookRecord>, ApiError> {
    check_webhook_id(webhook_id)?;
    s.webhooks
        .endpoints
        .get(webhook_id)
        .filter(|w| &w.client_id == client && !w.deleted)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {webhook_id:?} for client {client}")))
}

/// `POST /v1/clients/{client_id}/webhooks` body. `url`: where deliveries
/// are POSTed, http or https, a host name (an address only if public, unless
/// the operator allows private targets), no credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: http or https, a host name (an address
    /// only if public, unless the operator allows private targets), no credentials.
    #[schema(schema_with = openapi::url_schema)]
    pub url: String,
    /// The events to deliver, each once.
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    /// Only this campaign's events; absent or null: every campaign of the client.
    #[serde(default)]
    #[schema(schema_with = nullable_id_schema)]
    pub campaign_id: Option<String>,
    /// Events in one delivery: 1 sends each event alone (a JSON object), more
    /// sends a JSON array of up to this many. Default: 1.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 1, maximum = 100, default = 1)]
    pub batch_size: Option<i64>,
}

fn events_schema() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .description(Some("The events to deliver, each once."))
            .items(openapi::enum_schema(&EVENT_TYPES))
            .min_items(Some(1))
            .unique_items(true)
            .build(),
    )
}

fn nullable_id_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("Only this campaign's events; absent or null: every campaign of the client."))
            .pattern(Some(openapi::ID_PATTERN))
            .build(),
    )
}

/// A checked [`CreateWebhook`].
struct NewWebhook {
    url: String,
    events: Vec<String>,
    campaign_id: Option<CampaignId>,
    batch_size: u16,
}

impl CreateWebhook {
    fn validate(self, policy: Policy) -> Result<NewWebhook, ApiError> {
        let bad = |m: String| ApiError::BadRequest(m);
        if self.url.chars().count() > openapi::URL_MAX_LENGTH {
            return Err(bad(format!("url is limited to {} characters", openapi::URL_MAX_LENGTH)));
        }
        // Checked on the raw text: the URL parser would drop tabs and newlines silently.
        if let Some(at) = self.url.bytes().position(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad(format!("url contains a control character or a space at byte {at}")));
        }
        let url = target::check_url(&self.url, policy).map_err(|e| bad(format!("url: {e}")))?;
        if self.events.is_empty() {
            return Err(bad(format!("events must name at least one of {}", EVENT_TYPES.join(", "))));
        }
        let mut events = Vec::with_capacity(self.events.len());
        for event in self.events {
            if !EVENT_TYPES.contains(&event.as_str()) {
                return Err(bad(format!(
                    "events: {event:?} is not an event type; allowed: {}",
                    EVENT_TYPES.join(", ")
                )));
            }
            if events.contains(&event) {
                return Err(bad(format!("events: {event:?} is listed twice")));
            }
            events.push(event);
        }
        let campaign_id =
            self.campaign_id.map(CampaignId::parse).transpose().map_err(|e| bad(format!("campaign_id: {e}")))?;
        let batch_size = match self.batch_size.unwrap_or(1) {
            n @ 1..=MAX_BATCH_SIZE => n as u16,
            n => return Err(bad(format!("batch_size must be between 1 and {MAX_BATCH_SIZE}, not {n}"))),
        };
        Ok(NewWebhook { url: url.into(), events, campaign_id, batch_size })
    }
}

/// A webhook as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    #[schema(pattern = r"^wh_[A-Za-z0-9]{1,61}$")]
    pub webhook_id: String,
    pub client_id: String,
    pub url: String,
    /// The events delivered.
    #[schema(schema_with = listed_events_schema)]
    pub events: Vec<String>,
    /// Only this campaign's events; null: every campaign.
    pub campaign_id: Option<String>,
    /// Events in one delivery.
    #[schema(minimum = 1, maximum = 100)]
    pub batch_size: u16,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `active`: deliveries go out; `disabled`: the deliverer stopped (see `disabled_reason`).
    #[schema(schema_with = status_schema)]
    pub status: String,
    /// When the deliverer disabled it; null while active.
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    /// `gone` (the endpoint answered 410) or `failing` (every delivery failed
    /// for a day); null while active.
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed; null while deliveries succeed.
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
    /// The newest replay asked for; null: none.
    pub last_replay: Option<ReplayAccepted>,
}

fn listed_events_schema() -> Schema {
    Schema::Array(ArrayBuilder::new().items(openapi::enum_schema(&EVENT_TYPES)).build())
}

fn status_schema() -> utoipa::openapi::schema::Object {
    openapi::enum_schema(&["active", "disabled"])
}

impl From<&WebhookRecord> for Webhook {
    fn from(w: &WebhookRecord) -> Self {
        Webhook {
            webhook_id: w.webhook_id.clone(),
            client_id: w.client_id.to_string(),
            url: w.url.clone(),
            events: w.events.clone(),
            campaign_id: w.campaign_id.as_ref().map(ToString::to_string),
            batch_size: w.batch_size,
            created_at: rfc3339(w.created_at_ms),
            status: if w.is_active() { "active" } else { "disabled" }.into(),
            disabled_at: w.disabled.as_ref().map(|d| rfc3339(d.0)),
            disabled_reason: w.disabled.as_ref().map(|d| d.1.clone()),
            failing_since: w.failing_since_ms.map(rfc3339),
            last_replay: w.replay.as_ref().map(ReplayAccepted::from),
        }
    }
}

/// A new webhook: its secret, shown this once, and the webhook as listed.
#[derive(Serialize, ToSchema)]
pub struct WebhookCreated {
    /// `whsec_…`: the key deliveries are signed with (Standard Webhooks). Shown only here and on rotation.
    pub secret: String,
    #[serde(flatten)]
    pub webhook: Webhook,
}

#[derive(Serialize, ToSchema)]
pub struct Webhooks {
    /// Oldest first; deleted ones left out.
    pub webhooks: Vec<Webhook>,
}

/// `POST /v1/clients/{client_id}/webhooks`.
#[utoipa::path(
    post,
    path = "/v1/clients/{client_id}/webhooks",
    tag = "webhooks",
    summary = "Register a webhook endpoint; its signing secret is shown once (admin, or the `write` and `recipients` scopes).",
    description = "Deliveries start with the events decided after this. A URL naming a loopback, private or link-local \
        address is refused (400) unless the operator allows private targets; host names are checked again after each DNS lookup.",
    params(ClientPath),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Registered.", body = WebhookCreated),
        WebhookErrors,
        (status = 409, description = "The client has 20 webhooks already, the most it may have; delete one first.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_webhook(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let client = manage_scope(&principal, &client_id)?;
    // An object: serde would otherwise read an array as the fields in order.
    let body: CreateWebhook = match body? {
        Json(object @ serde_json::Value::Object(_)) => {
            serde_json::from_value(object).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
        }
        Json(_) => return Err(ApiError::BadRequest("the body must be a JSON object".into())),
    };
    let new = body.validate(s.webhooks.policy)?;
    let _one_at_a_time = s.webhooks.writes.lock().await;
    let existing = s.webhooks.endpoints.of_client(&client).len();
    if existing >= MAX_PER_CLIENT {
        return Err(ApiError::Conflict(format!(
            "client {client} has {existing} webhooks, the most it may have ({MAX_PER_CLIENT}); delete one first"
        )));
    }
    let secret = WebhookSecret::generate().to_shown();
    let record = WebhookRecord {
        webhook_id: mint_id("wh_"),
        client_id: client,
        url: new.url,
        events: new.events,
        campaign_id: new.campaign_id,
        secret: secret.clone(),
        previous_secret: None,
        batch_size: new.batch_size,
        created_at_ms: now_ms(),
        deleted: false,
        disabled: None,
        failing_since_ms: None,
        replay: None,
    };
    s.webhooks.put(record.clone()).await?;
    tracing::info!(client_id = %record.client_id, webhook_id = record.webhook_id, "webhook registered");
    Ok((StatusCode::CREATED, Json(WebhookCreated { secret, webhook: Webhook::from(&record) })))
}

/// `GET /v1/clients/{client_id}/webhooks`.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/webhooks",
    tag = "webhooks",
    summary = "A client's webhooks, without their secrets, disabled ones flagged.",
    params(ClientPath),
    responses(
        (status = 200, description = "The webhooks, oldest first.", body = Webhooks),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_webhooks(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
) -> Result<Json<Webhooks>, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let webhooks = s.webhooks.endpoints.of_client(&client).iter().map(|w| Webhook::from(&**w)).collect();
    Ok(Json(Webhooks { webhooks }))
}

/// `GET /v1/clients/{client_id}/webhooks/{webhook_id}`.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}",
    tag = "webhooks",
    summary = "A webhook, without its secret.",
    params(WebhookPath),
    responses(
        (status = 200, description = "The webhook.", body = Webhook),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_webhook(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
) -> Result<Json<Webhook>, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let webhook = visible(&s, &client, &webhook_id)?;
    Ok(Json(Webhook::from(&*webhook)))
}

/// `DELETE /v1/clients/{client_id}/webhooks/{webhook_id}`.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}",
    tag = "webhooks",
    summary = "Delete a webhook: no delivery starts after this (admin, or the `write` and `recipients` scopes).",
    params(WebhookPath),
    responses(
        (status = 204, description = "Deleted."),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete_webhook(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
) -> Result<StatusCode, ApiError> {
    let client = manage_scope(&principal, &client_id)?;
    let _one_at_a_time = s.webhooks.writes.lock().await;
    let webhook = visible(&s, &client, &webhook_id)?;
    s.webhooks.put(WebhookRecord { deleted: true, ..(*webhook).clone() }).await?;
    tracing::info!(%client, webhook_id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's new secret.
#[derive(Serialize, ToSchema)]
pub struct SecretRotated {
    pub webhook_id: String,
    /// `whsec_…`, shown this once.
    pub secret: String,
    /// Until when deliveries are also signed with the previous secret, so a
    /// receiver can switch without refusing any.
    #[schema(format = DateTime)]
    pub previous_secret_valid_until: String,
}

/// `POST /v1/clients/{client_id}/webhooks/{webhook_id}/rotate-secret`.
#[utoipa::path(
    post,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}/rotate-secret",
    tag = "webhooks",
    summary = "A new signing secret, shown once; the previous one also signs for 24 hours (admin, or the `write` and `recipients` scopes).",
    description = "Deliveries carry a signature with each secret meanwhile (`webhook-signature: v1,… v1,…`). \
        Rotating again within the 24 hours ends the older secret at once.",
    params(WebhookPath),
    responses(
        (status = 200, description = "Rotated.", body = SecretRotated),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn rotate_secret(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
) -> Result<Json<SecretRotated>, ApiError> {
    let client = manage_scope(&principal, &client_id)?;
    let _one_at_a_time = s.webhooks.writes.lock().await;
    let webhook = visible(&s, &client, &webhook_id)?;
    let secret = WebhookSecret::generate().to_shown();
    let until = now_ms() + PREVIOUS_SECRET_MS;
    let record = WebhookRecord {
        secret: secret.clone(),
        previous_secret: Some((webhook.secret.clone(), until)),
        ..(*webhook).clone()
    };
    s.webhooks.put(record).await?;
    tracing::info!(%client, webhook_id, "webhook secret rotated");
    Ok(Json(SecretRotated { webhook_id, secret, previous_secret_valid_until: rfc3339(until) }))
}

/// `POST /v1/clients/{client_id}/webhooks/{webhook_id}/enable`.
#[utoipa::path(
    post,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}/enable",
    tag = "webhooks",
    summary = "Turn a disabled webhook back on; deliveries resume where they stopped (admin, or the `write` and `recipients` scopes).",
    description = "The deliverer disables a webhook whose receiver answered `410 Gone` or failed for a day. \
        Enabling it clears `disabled_at`, `disabled_reason` and `failing_since`, and the deliverer sends \
        every event from the first one it did not deliver: nothing decided while the webhook was disabled \
        is skipped, as far back as the decided topic keeps events. Enabling an active webhook changes nothing.",
    params(WebhookPath),
    responses(
        (status = 200, description = "Active.", body = Webhook),
        WebhookErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn enable(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
) -> Result<Json<Webhook>, ApiError> {
    let client = manage_scope(&principal, &client_id)?;
    let _one_at_a_time = s.webhooks.writes.lock().await;
    let webhook = visible(&s, &client, &webhook_id)?;
    if webhook.is_active() {
        return Ok(Json(Webhook::from(&*webhook)));
    }
    let record = WebhookRecord { disabled: None, failing_since_ms: None, ..(*webhook).clone() };
    let answer = Webhook::from(&record);
    s.webhooks.put(record).await?;
    tracing::info!(%client, webhook_id, "webhook enabled");
    Ok(Json(answer))
}

/// The query of `GET …/deliveries`; unknown parameters are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default, deserialize_with = "crate::numbers::option_u32_text")]
    pub limit: Option<u32>,
}

/// Documents [`DeliveriesQuery`].
pub struct DeliveriesParams;

impl IntoParams for DeliveriesParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let rows = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(DELIVERIES_MAX))
            .default(Some(DELIVERIES_DEFAULT.into()));
        vec![openapi::param("limit", ParameterIn::Query, "Attempts to list, newest first. Default: 50.", rows)]
    }
}

/// One attempt to deliver.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// The delivery's `webhook-id` header: the same on every attempt of one message.
    pub message_id: String,
    /// When the attempt started, RFC 3339 in UTC with milliseconds.
    #[schema(format = DateTime)]
    pub attempted_at: String,
    /// 1 for the first attempt, then each retry.
    pub attempt: u32,
    /// Events the message carried.
    pub events: u32,
    /// Sent by a replay.
    pub replay: bool,
    /// `delivered` (2xx), `failed` (any other answer, or none: see `error`),
    /// `gone` (410: the webhook is disabled), `refused` (the host resolved to
    /// an address webhooks may not reach), `dropped` (retried for a day: given up).
    #[schema(schema_with = outcome_schema)]
    pub outcome: String,
    /// The HTTP status the endpoint answered; null: no answer.
    pub status: Option<u16>,
    pub latency_ms: u32,
    /// What went wrong; null when nothing did.
    pub error: Option<String>,
}

fn outcome_schema() -> utoipa::openapi::schema::Object {
    openapi::enum_schema(&OUTCOMES)
}

impl From<stats::DeliveryRow> for Delivery {
    fn from(r: stats::DeliveryRow) -> Self {
        Delivery {
            message_id: r.message_id,
            attempted_at: rfc3339(r.attempted_at_ms),
            attempt: r.attempt,
            events: r.events,
            replay: r.replay != 0,
            outcome: r.outcome,
            status: (r.status != 0).then_some(r.status),
            latency_ms: r.latency_ms,
            error: (!r.error.is_empty()).then_some(r.error),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Deliveries {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

/// `GET /v1/clients/{client_id}/webhooks/{webhook_id}/deliveries`.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's newest delivery attempts, with their outcome.",
    params(WebhookPath, DeliveriesParams),
    responses(
        (status = 200, description = "The attempts, newest first.", body = Deliveries),
        ReadErrors,
        (status = 503, description = "ClickHouse failed; the body names it (`backend`).", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn deliveries(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Deliveries>, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let Query(q) = query?;
    let limit = match q.limit.unwrap_or(DELIVERIES_DEFAULT) {
        n if (1..=DELIVERIES_MAX).contains(&n) => n,
        n => return Err(ApiError::BadRequest(format!("limit must be between 1 and {DELIVERIES_MAX}, not {n}"))),
    };
    let webhook = visible(&s, &client, &webhook_id)?;
    // The client's own quota, as every read of its data.
    let ch = s.clickhouse_for(&Scope::Client(client.clone()));
    let rows = stats::webhook_deliveries(&ch, client.as_str(), &webhook.webhook_id, limit).await?;
    Ok(Json(Deliveries { deliveries: rows.into_iter().map(Delivery::from).collect() }))
}

/// The query of `POST …/replay`; unknown parameters are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Documents [`ReplayQuery`]: both required.
pub struct ReplayParams;

impl IntoParams for ReplayParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let required = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .description(Some(description))
                .required(Required::True)
                .schema(Some(openapi::instant_schema()))
                .build()
        };
        vec![
            required("from", "Start of the events to deliver again (when they occurred): RFC 3339 or Unix seconds."),
            required(
                "to",
                "End (exclusive): RFC 3339 or Unix seconds; after `from`, at most 31 days after it and \
                 not in the future (else 422).",
            ),
        ]
    }
}

/// A replay, as accepted.
#[derive(Serialize, ToSchema)]
pub struct ReplayAccepted {
    pub replay_id: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
}

impl From<&Replay> for ReplayAccepted {
    fn from(r: &Replay) -> Self {
        ReplayAccepted { replay_id: r.id.clone(), from: rfc3339(r.from_ms), to: rfc3339(r.to_ms) }
    }
}

/// `from` and `to` of a replay in Unix milliseconds: 400 for a value that
/// is not a time, 422 for times that do not fit together or with now.
fn replay_range(q: &ReplayQuery, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let instant = |name: &str, raw: Option<&str>| -> Result<i64, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::BadRequest(format!("{name} is required (RFC 3339 or Unix seconds)")))?;
        if crate::numbers::parse_seconds(raw).is_some() {
            return Ok(stats::parse_instant(name, raw)? * 1000);
        }
        chrono::DateTime::parse_from_rfc3339(raw).map(|t| t.timestamp_millis()).map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time (2026-11-22T10:00:00Z) or Unix seconds, not {raw:?}"
            ))
        })
    };
    let from = instant("from", q.from.as_deref())?;
    let to = instant("to", q.to.as_deref())?;
    if from < 0 || to > openapi::MAX_UNIX_SECONDS * 1000 {
        return Err(ApiError::Unprocessable("from and to must lie between 1970 and 2106".into()));
    }
    if from >= to {
        return Err(ApiError::Unprocessable("from must be earlier than to".into()));
    }
    if to > now_ms + REPLAY_SLACK_MS {
        return Err(ApiError::Unprocessable(
            "to must not be in the future: only events that occurred can be replayed".into(),
        ));
    }
    if to - from > MAX_REPLAY_DAYS * 86_400_000 {
        return Err(ApiError::Unprocessable(format!("range too long for one replay: at most {MAX_REPLAY_DAYS} days")));
    }
    Ok((from, to))
}

/// `POST /v1/clients/{client_id}/webhooks/{webhook_id}/replay`.
#[utoipa::path(
    post,
    path = "/v1/clients/{client_id}/webhooks/{webhook_id}/replay",
    tag = "webhooks",
    summary = "Deliver a range of past events again (admin, or the `write` and `recipients` scopes).",
    description = "Answers 202 once the request is recorded; the deliverer sends the endpoint's events that occurred in \
        `[from, to)` again, beside the live ones, with `replay` set on their delivery rows. A newer replay replaces \
        one still running. Only an active webhook can replay (409 for a disabled one).",
    params(WebhookPath, ReplayParams),
    responses(
        (status = 202, description = "Recorded; the deliverer starts it within seconds.", body = ReplayAccepted),
        WebhookErrors,
        (status = 409, description = "The webhook is disabled.", body = ErrorBody),
        (status = 422, description = "`from` not before `to`, `to` in the future, a range over 31 days, or a time outside 1970–2106.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn replay(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    Path(WebhookPath { client_id, webhook_id }): Path<WebhookPath>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    let client = manage_scope(&principal, &client_id)?;
    let Query(q) = query?;
    let (from_ms, to_ms) = replay_range(&q, now_ms())?;
    let _one_at_a_time = s.webhooks.writes.lock().await;
    let webhook = visible(&s, &client, &webhook_id)?;
    if !webhook.is_active() {
        let reason = webhook.disabled.as_ref().map(|d| d.1.as_str()).unwrap_or_default();
        return Err(ApiError::Conflict(format!(
            "webhook {webhook_id} is disabled ({reason}); only an active webhook can replay"
        )));
    }
    let replay = Replay { id: mint_id("rp_"), from_ms, to_ms };
    let accepted = ReplayAccepted::from(&replay);
    s.webhooks.put(WebhookRecord { replay: Some(replay), ..(*webhook).clone() }).await?;
    tracing::info!(%client, webhook_id, replay_id = accepted.replay_id, "webhook replay recorded");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    const NOW: i64 = 1_800_000_000_000;

    fn create(body: serde_json::Value, allow_private: bool) -> Result<NewWebhook, ApiError> {
        let body: CreateWebhook = serde_json::from_value(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        body.validate(Policy { allow_private })
    }

    fn status(e: ApiError) -> u16 {
        e.into_response().status().as_u16()
    }

    #[test]
    fn ids_are_prefixed_random_base62() {
        let (a, b) = (mint_id("wh_"), mint_id("wh_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(check_webhook_id(&a).is_ok());
        assert!(check_webhook_id("wh_").is_err() && check_webhook_id("rp_abc").is_err());
        assert!(check_webhook_id("wh_a-b").is_err());
    }

    #[test]
    fn a_webhook_is_checked_field_by_field() {
        let ok = create(
            serde_json::json!({"url": "https://Hooks.Example.com/r", "events": ["click.human", "open.human"], "batch_size": 10.0}),
            false,
        )
        .unwrap();
        assert_eq!(ok.url, "https://hooks.example.com/r");
        assert_eq!((ok.events.len(), ok.batch_size, ok.campaign_id), (2, 10, None));
        assert_eq!(
            create(serde_json::json!({"url": "https://a.example/", "events": ["click.bot"]}), false)
                .unwrap()
                .batch_size,
            1
        );
        for (body, needle) in [
            (serde_json::json!({"url": "ftp://a.example/", "events": ["click.human"]}), "ftp"),
            (serde_json::json!({"url": "http://10.0.0.5/", "events": ["click.human"]}), "10.0.0.5"),
            (serde_json::json!({"url": "https://a.example/", "events": []}), "click.human"),
            (serde_json::json!({"url": "https://a.example/", "events": ["click"]}), "allowed: click.human"),
            (serde_json::json!({"url": "https://a.example/", "events": ["click.bot", "click.bot"]}), "twice"),
            (
                serde_json::json!({"url": "https://a.example/", "events": ["click.bot"], "batch_size": 101}),
                "batch_size",
            ),
            (
                serde_json::json!({"url": "https://a.example/", "events": ["click.bot"], "campaign_id": "a b"}),
                "campaign_id",
            ),
            (serde_json::json!({"url": "https://a.example/\tx", "events": ["click.bot"]}), "control"),
            (serde_json::json!({"url": "https://a.example/", "events": ["click.bot"], "secret": "x"}), "unknown field"),
        ] {
            let e = create(body.clone(), false).err().unwrap_or_else(|| panic!("{body} accepted"));
            assert!(e.to_string().contains(needle), "{body}: {e}");
            assert_eq!(status(e), 400, "{body}");
        }
        assert!(create(serde_json::json!({"url": "http://10.0.0.5/", "events": ["click.human"]}), true).is_ok());
    }

    #[test]
    fn a_replay_range_is_past_ordered_and_bounded() {
        let q = |from: &str, to: &str| ReplayQuery { from: Some(from.into()), to: Some(to.into()) };
        let (from, to) = replay_range(&q("2027-01-14T00:00:00.250Z", "1800000000"), NOW).unwrap();
        assert_eq!((from % 1000, to), (250, NOW));
        assert_eq!(status(replay_range(&ReplayQuery::default(), NOW).unwrap_err()), 400);
        assert_eq!(status(replay_range(&q("yesterday", "1800000000"), NOW).unwrap_err()), 400);
        assert_eq!(status(replay_range(&q("1800000000", "1700000000"), NOW).unwrap_err()), 422);
        assert_eq!(status(replay_range(&q("1799999000", "1800000900"), NOW).unwrap_err()), 422, "the future");
        assert!(replay_range(&q("1799999000", "1800000100"), NOW).is_ok(), "within the slack");
        assert_eq!(status(replay_range(&q("1790000000", "1800000000"), NOW).unwrap_err()), 422, "over 31 days");
        assert_eq!(status(replay_range(&q("1969-12-31T00:00:00Z", "1800000000"), NOW).unwrap_err()), 422);
    }
}
