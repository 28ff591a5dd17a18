//! The OpenAPI document, derived from the handlers: every route is registered
//! through `utoipa_axum::routes!`, so the router and the document come from one
//! definition and cannot drift. This module holds what the handlers' own
//! annotations share: the document's frame (title, the bearer scheme), the
//! error body and statuses, the path parameters, and the patterns and ranges
//! that the handlers enforce. Each answer's shape is declared once, next to
//! its handler in [`crate::routes`], and is what the handler serialises.
//!
//! Statuses follow one rule, so a generated client can trust them:
//! - **400**: a value outside its documented pattern, enum or range, or a body
//!   that is not the documented JSON.
//! - **422**: each value is allowed, but together they are not (`from` not
//!   before `to`, a range longer than the granularity allows, `valid_from` not
//!   before `valid_until`), or a time outside 1970–2106.
//! - **503**: a backing server (ClickHouse, the Kafka broker) failed; the body
//!   names it.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{KnownFormat, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

/// Client, campaign and link ids: `ricochet_schemas` token ids.
pub const ID_PATTERN: &str = r"^[A-Za-z0-9._-]{1,64}$";
/// A recipient id, also the `cursor` of the recipients list.
pub const RECIPIENT_PATTERN: &str = r"^[A-Za-z0-9._@+-]{1,128}$";
/// An API key's id: the SHA-256 of the key, in lowercase hex.
pub const KEY_ID_PATTERN: &str = r"^[0-9a-f]{64}$";
/// A webhook endpoint's id: `wh_` and base62 characters (22 when the API mints it).
pub const WEBHOOK_ID_PATTERN: &str = r"^wh_[A-Za-z0-9]{1,61}$";
/// A destination (or fallback) URL: http or https, a host name, optional port,
/// path, query and fragment, no credentials, no spaces or control characters.
/// The host's last label starts with a letter (no bare IP addresses), and
/// characters that normalisation would percent-encode are left out, so every
/// URL matching this is accepted as written.
pub const URL_PATTERN: &str = concat!(
    r"^https?://",
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(/[A-Za-z0-9._~!$&()*+,;=:@/-]*)?",
    r"(\?[A-Za-z0-9._~!$&()*+,;=:@/?-]*)?",
    r"(#[A-Za-z0-9._~!$&()*+,;=:@/?-]*)?$"
);
/// Normalisation may add a `/` after the host, and the stored URL is at most
/// `ricochet_registry::destination::MAX_URL_LEN` (2048) bytes.
pub const URL_MAX_LENGTH: usize = 2047;
/// One CIDR: IPv4 `a.b.c.d/n`, or IPv6 written out in eight groups.
pub const CIDR_PATTERN: &str = concat!(
    r"^((((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    r"/(3[0-2]|[12]?[0-9]))",
    r"|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}/(12[0-8]|1[01][0-9]|[1-9]?[0-9])))$"
);
/// Unix seconds the API takes: 1970 to 2106 less two days (bucket alignment).
pub const MAX_UNIX_SECONDS: i64 = u32::MAX as i64 - 2 * 86_400;
/// Link validity bounds, Unix seconds (up to the year 9999).
pub const MAX_VALIDITY_SECONDS: i64 = 253_402_300_799;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ricochet API",
        description = "Links, clients, API keys, click aggregates and the aggregators' status. \
                       Every /v1 route but the OpenAPI document needs \
                       `Authorization: Bearer <key>` (the admin key, or a client's key, which sees only \
                       its own client's data). Errors are `{\"error\": {\"code\", \"message\"}}`: 400 a value \
                       outside what this document allows (and any query parameter it does not list), 409 \
                       a request the resource's state refuses (a client's webhooks at their limit, a replay \
                       of a disabled webhook), 422 allowed values that conflict, 429 too many requests with one key (or, without a \
                       valid key, from one address), or a client's share of ClickHouse spent for the \
                       minute (`clickhouse_quota`; `Retry-After` says when to retry), 503 a backing \
                       server failed (the body names which) or the request took longer than the request \
                       timeout."
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::routes::events::ExportedEvent)),
    tags(
        (name = "links", description = "Creating and managing tracking links (admin)."),
        (name = "clients", description = "Clients, their API keys and recipient-token keys."),
        (name = "aggregates", description = "Click and open series, top lists, recipients and breakdowns, cached for a second; JSON or CSV."),
        (name = "recipients", description = "Erasing a recipient's data."),
        (name = "exports", description = "A campaign's decided events, streamed as NDJSON or CSV."),
        (name = "webhooks", description = "Endpoints that receive a client's decided clicks and opens, signed (Standard Webhooks); their deliveries and replays."),
        (name = "operations", description = "Health, readiness, metrics, status and this document."),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key").build()),
        );
    }
}

/// `{"error": {"code", "message"}}`, the body of every 4xx and 5xx.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `unprocessable`,
    /// `rate_limited`, `clickhouse_quota`, `unavailable`, `timeout`, `query_timeout`,
    /// `exports_busy` or `loading`.
    pub code: String,
    /// What was wrong and what is allowed; for a 503, which server failed.
    pub message: String,
    /// `POST /v1/links:batch` only: each invalid item, by index.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub items: Option<Vec<BatchItemError>>,
    /// 503 only: the backing server that failed, `clickhouse` or `kafka`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub backend: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchItemError {
    pub index: u32,
    pub message: String,
}

// The error statuses of the routes, one set per kind of route, each with the error body.
/// What a read of one resource can answer besides 200.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum ReadErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown, revoked or expired one.")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "A client key without the scope this route needs (the message names it), or of a paused client."
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such resource, or not this key's client.")]
    NotFound(ErrorBody),
}

/// What a series or top list can answer besides 200 and 304.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum StatsErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown, revoked or expired one.")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "A client key without the scope this route needs (the message names it), or of a paused client."
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such resource, or not this key's client.")]
    NotFound(ErrorBody),
    #[response(
        status = 422,
        description = "Each value is allowed but together they are not (e.g. `from` not before `to`, or a range too long for the granularity)."
    )]
    Unprocessable(ErrorBody),
    #[response(status = 503, description = "ClickHouse failed; the body names it (`backend`).")]
    ClickHouse(ErrorBody),
}

/// What creating links can answer besides 201.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum CreateErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown or revoked one.")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "A client key without the `write` scope, or for another client's links, or of a paused client."
    )]
    Forbidden(ErrorBody),
    #[response(
        status = 422,
        description = "Each value is allowed but together they are not (e.g. `from` not before `to`, or a range too long for the granularity)."
    )]
    Unprocessable(ErrorBody),
    #[response(status = 503, description = "The Kafka broker failed; the body names it (`backend`).")]
    Kafka(ErrorBody),
}

/// What changing a link or revoking a key can answer besides success.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum UpdateErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown or revoked one.")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "A client key on an operation that needs the admin key.")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such resource, or not this key's client.")]
    NotFound(ErrorBody),
    #[response(status = 503, description = "The Kafka broker failed; the body names it (`backend`).")]
    Kafka(ErrorBody),
}

/// What an admin write to a client can answer besides success.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum AdminErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown or revoked one.")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "A client key on an operation that needs the admin key.")]
    Forbidden(ErrorBody),
    #[response(status = 503, description = "The Kafka broker failed; the body names it (`backend`).")]
    Kafka(ErrorBody),
}

/// What changing a webhook can answer besides success (creating one and
/// replaying add 409 and 422, stated on their routes).
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum WebhookErrors {
    #[response(
        status = 400,
        description = "A value outside its documented pattern, enum or range, or a body that is not the documented JSON; the message says what is allowed."
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown, revoked or expired one.")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "A client key without the `write` and `recipients` scopes (the message names the one missing), or of a paused client."
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such webhook, or not this key's client.")]
    NotFound(ErrorBody),
    #[response(
        status = 503,
        description = "The Kafka broker failed; the body names it (`backend`). Nothing changed: retry."
    )]
    Kafka(ErrorBody),
}

/// What the status can answer besides 200 and 304.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only documents: handlers answer with `ApiError`.
pub enum StatusErrors {
    #[response(status = 400, description = "A query parameter: this route takes none.")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or an unknown or revoked one.")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "A client key: the status needs the admin key.")]
    Forbidden(ErrorBody),
    #[response(status = 503, description = "ClickHouse or the Kafka broker failed; the body names which (`backend`).")]
    Backend(ErrorBody),
}

/// The parameters of a path: the struct its handlers extract, and the same
/// fields as the document states them, so that a name cannot differ between
/// the two. Written out rather than derived: `#[derive(IntoParams)]` takes a
/// `pattern` only as a string literal, and with `schema_with` instead it
/// drops the description and `required`.
macro_rules! path_params {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $description:literal, $pattern:expr;)+ }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        pub struct $name {
            $(pub $field: String,)+
        }

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![$(param(stringify!($field), ParameterIn::Path, $description, pattern_schema($pattern)),)+]
            }
        }
    };
}

path_params!(
    /// `{link_id}`.
    LinkPath { link_id: "The link's id.", ID_PATTERN; }
);

path_params!(
    /// `{client_id}`.
    ClientPath { client_id: "The client's id.", ID_PATTERN; }
);

path_params!(
    /// `{client_id}/campaigns/{campaign_id}`.
    CampaignPath {
        client_id: "The client's id.", ID_PATTERN;
        campaign_id: "The campaign's id.", ID_PATTERN;
    }
);

path_params!(
    /// `{client_id}/api-keys/{key_id}`.
    ApiKeyPath {
        client_id: "The client's id.", ID_PATTERN;
        key_id: "The key's id (its SHA-256, as returned at creation).", KEY_ID_PATTERN;
    }
);

path_params!(
    /// `{client_id}/webhooks/{webhook_id}`.
    WebhookPath {
        client_id: "The client's id.", ID_PATTERN;
        webhook_id: "The webhook's id, as returned at creation.", WEBHOOK_ID_PATTERN;
    }
);

path_params!(
    /// `{client_id}/recipients/{recipient_id}`.
    RecipientPath {
        client_id: "The client's id.", ID_PATTERN;
        recipient_id: "The recipient id, as the tracking links carry it.", RECIPIENT_PATTERN;
    }
);

/// A parameter as the document states it: required in the path, optional in the query.
pub fn param(name: &str, at: ParameterIn, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    let required = if matches!(at, ParameterIn::Path) { Required::True } else { Required::False };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .description(Some(description))
        .required(required)
        .schema(Some(schema))
        .build()
}

/// A string that matches `pattern`.
pub fn pattern_schema(pattern: &str) -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).pattern(Some(pattern)).build())
}

/// A client, campaign or link id ([`ID_PATTERN`]).
pub fn id_schema() -> Schema {
    pattern_schema(ID_PATTERN)
}

/// The query of every series and top list: the time range and how to bucket it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents `stats::StatsQuery`, which the handlers extract.
pub struct RangeParams {
    /// Start: Unix seconds or RFC 3339; rounded down to a bucket. Default: an hour before `to`.
    #[param(schema_with = instant_schema)]
    from: Option<String>,
    /// End (exclusive): Unix seconds or RFC 3339; rounded up to a bucket. Default: now.
    #[param(schema_with = instant_schema)]
    to: Option<String>,
    /// Bucket size. Ranges: at most 7 days by minute, 92 by hour, 3 years by day (else 422).
    #[param(schema_with = granularity_schema)]
    granularity: Option<String>,
    /// IANA time zone of hour and day buckets. Default: UTC.
    #[param(schema_with = tz_schema)]
    tz: Option<String>,
    /// Leave out bot clicks.
    human_only: Option<bool>,
    /// `csv`: the same numbers as CSV with a header row (`text/csv`); also chosen by `Accept: text/csv`. Default: `json`.
    #[param(schema_with = format_schema)]
    format: Option<String>,
}

pub fn format_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(crate::format::FORMATS))
            .default(Some("json".into()))
            .build(),
    )
}

pub fn instant_schema() -> Schema {
    let seconds = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .minimum(Some(0))
        .maximum(Some(MAX_UNIX_SECONDS));
    let rfc3339 = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    Schema::OneOf(OneOfBuilder::new().item(seconds).item(rfc3339).build())
}

fn granularity_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(["minute", "hour", "day"]))
            .default(Some("minute".into()))
            .build(),
    )
}

/// The time zones the API takes: the IANA names chrono-tz knows and, once
/// [`probe_zones`] ran, that ClickHouse knows too (it buckets hours and days,
/// with the server's own time zone data).
static ZONES: OnceLock<Vec<&'static str>> = OnceLock::new();

pub fn zones() -> &'static [&'static str] {
    ZONES.get_or_init(|| chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect())
}

/// Keeps the zones ClickHouse can use, so that a zone the document allows is
/// never refused by the server. Call before the router is built.
pub async fn probe_zones(clickhouse: &clickhouse::Client) -> Result<usize, clickhouse::error::Error> {
    use futures::StreamExt;
    // One zone per query: an unknown zone fails the whole query.
    let checks = futures::stream::iter(
        chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| async move { (tz.name(), crate::stats::check_zone(clickhouse, tz.name()).await) }),
    )
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let mut known = Vec::new();
    for (name, outcome) in checks {
        match outcome {
            Ok(()) => known.push(name),
            Err(clickhouse::error::Error::BadResponse(reason)) => {
                tracing::debug!(zone = name, %reason, "time zone unknown to ClickHouse; left out")
            }
            Err(e) => return Err(e),
        }
    }
    known.sort_unstable();
    let count = known.len();
    let _ = ZONES.set(known);
    Ok(count)
}

pub fn tz_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(zones().iter().copied()))
            .default(Some("UTC".into()))
            .build(),
    )
}

/// `destination_url`.
pub fn url_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(URL_PATTERN))
            .max_length(Some(URL_MAX_LENGTH))
            .build(),
    )
}

/// `fallback_url`: a URL, or `null` for none.
pub fn nullable_url_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .pattern(Some(URL_PATTERN))
            .max_length(Some(URL_MAX_LENGTH))
            .build(),
    )
}

/// The serialised document, for `GET /v1/openapi.json`.
pub fn to_json(doc: &utoipa::openapi::OpenApi) -> String {
    doc.to_pretty_json().expect("the OpenAPI document serialises")
}

/// Adds what every operation can answer, whatever its handler: 400 (a query
/// parameter it does not list), 429 (the caller's token bucket is empty,
/// with `Retry-After`) and 503 (the request timeout).
pub fn add_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
    };
    let retry_after = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
        .description(Some("Seconds to wait before the next request."))
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            responses
                .entry("400".into())
                .or_insert_with(|| error("A query parameter this route does not list.").build().into());
            responses.entry("429".into()).or_insert_with(|| {
                error(
                    "Too many requests with this key (without a valid key: from this address), or the \
                     client's share of ClickHouse is spent for now (`clickhouse_quota`).",
                )
                .header("Retry-After", retry_after.clone())
                .build()
                .into()
            });
            responses.entry("503".into()).or_insert_with(|| {
                error("Not answered within the request timeout, or a backing server failed.")
                    .header("Retry-After", retry_after.clone())
                    .build()
                    .into()
            });
        }
    }
}

/// A string that is one of `values`.
pub fn enum_schema(values: &[&str]) -> utoipa::openapi::schema::Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).build()
}
