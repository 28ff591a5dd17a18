#!/usr/bin/env python3
"""Writes api/openapi.json, the API's OpenAPI 3.0 document.

The document is generated so that shared parameters and schemas are written
once. Run it after changing a route; `tests/tests/api.rs` checks that the
document lists exactly the routes in `api/src/router.rs` (ROUTES).
"""
import json
import pathlib

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

def param(name, where, schema, desc, required=None):
    return {"name": name, "in": where, "required": where == "path" if required is None else required,
            "schema": schema, "description": desc}

P = {
    "link_id": param("link_id", "path", {"type": "string"}, "The link's id."),
    "client_id": param("client_id", "path", {"type": "string"}, "The client's id."),
    "campaign_id": param("campaign_id", "path", {"type": "string"}, "The campaign's id."),
    "key_id": param("key_id", "path", {"type": "string"}, "The key's id (its SHA-256, as returned at creation)."),
    "from": param("from", "query", {"type": "string"}, "Start, RFC 3339 or Unix seconds; rounded down to a bucket. Default: an hour before `to`."),
    "to": param("to", "query", {"type": "string"}, "End (exclusive), RFC 3339 or Unix seconds; rounded up to a bucket. Default: now."),
    "granularity": param("granularity", "query", {"type": "string", "enum": ["minute", "hour", "day"], "default": "minute"},
                         "Bucket size. Ranges: at most 7 days by minute, 92 by hour, 3 years by day."),
    "tz": param("tz", "query", {"type": "string", "default": "UTC"}, "IANA time zone for hour and day buckets, e.g. Europe/Paris."),
    "human_only": param("human_only", "query", {"type": "boolean", "default": False}, "Leave out bot clicks (HEAD requests, link-preview fetchers)."),
    "limit": param("limit", "query", {"type": "integer", "minimum": 1}, "Rows to return (top lists: 1-100, default 10; recipients: 1-1000, default 100)."),
    "cursor": param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page."),
}
RANGE = [P["from"], P["to"], P["granularity"], P["tz"], P["human_only"]]

def err(desc):
    return {"description": desc, "content": {"application/json": {"schema": ref("Error")}}}

def ok(schema, desc="OK", status="200", cached=False):
    r = {status: {"description": desc, "content": {"application/json": {"schema": schema}}}}
    if cached:
        r[status]["headers"] = {
            "ETag": {"schema": {"type": "string"}, "description": "Send back in If-None-Match for a 304."},
            "Cache-Control": {"schema": {"type": "string"}, "description": "private, max-age=1"},
        }
        r["304"] = {"description": "Not modified since the ETag sent in If-None-Match."}
    return r

AUTH = {"401": err("Missing, unknown or revoked API key."), "404": err("Not found, or not this key's client.")}
BAD = {"400": err("Malformed or out-of-range parameters; the message says what is allowed.")}
DOWN = {"503": err("ClickHouse or the broker is unreachable.")}

def op(summary, responses, params=(), body=None, secured=True, tag="aggregates"):
    o = {"summary": summary, "tags": [tag], "parameters": list(params), "responses": responses}
    if body:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not secured:
        o["security"] = []
    return o

counts = {"type": "object", "properties": {k: {"type": "integer"} for k in ["clicks", "human_clicks", "bot_clicks", "opens"]}}
schemas = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "unavailable"]},
        "message": {"type": "string"}, "items": {"type": "array", "items": {"type": "object"}}}}}},
    "Counts": counts,
    "Series": {"type": "object", "properties": {
        "granularity": {"type": "string"}, "tz": {"type": "string"}, "human_only": {"type": "boolean"},
        "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
        "series": {"type": "array", "items": {"allOf": [ref("Counts"), {"type": "object", "properties": {"bucket_start": {"type": "string", "format": "date-time"}}}]}},
        "totals": {"allOf": [ref("Counts"), {"type": "object", "properties": {"unique_recipients": {"type": "integer"}}}]}}},
    "NewLink": {"type": "object", "required": ["client_id", "campaign_id", "destination_url"], "additionalProperties": False, "properties": {
        "client_id": {"type": "string", "maxLength": 64}, "campaign_id": {"type": "string", "maxLength": 64},
        "destination_url": {"type": "string", "format": "uri", "maxLength": 2048, "description": "http or https, no credentials, no control characters."},
        "valid_from": {"type": "integer", "description": "Unix seconds."}, "valid_until": {"type": "integer", "description": "Unix seconds."},
        "click_limit": {"type": "integer", "minimum": 1, "description": "Approximate; see docs/click-limits.md."}}},
    "Link": {"type": "object", "properties": {k: {"type": "string"} for k in ["link_id", "code", "client_id", "campaign_id", "destination_url", "status", "tracking_url"]}},
    "Client": {"type": "object", "properties": {"client_id": {"type": "string"}, "status": {"type": "string", "enum": ["active", "paused"]},
        "fallback_url": {"type": "string", "nullable": True}, "hot_spread": {"type": "integer", "minimum": 1, "maximum": 64}}},
}

paths = {
    "/healthz": {"get": op("Liveness.", {"200": {"description": "ok"}}, secured=False, tag="operations")},
    "/readyz": {"get": op("Ready once the link registry is loaded.", {"200": {"description": "ready"}, "503": {"description": "loading"}}, secured=False, tag="operations")},
    "/metrics": {"get": op("Prometheus metrics.", {"200": {"description": "text exposition format"}}, secured=False, tag="operations")},
    "/v1/openapi.json": {"get": op("This document.", {"200": {"description": "OpenAPI 3.0"}}, secured=False, tag="operations")},
    "/v1/status": {"get": op("Consumer lag per partition and event-time freshness.", ok({"type": "object"}), secured=False, tag="operations")},
    "/v1/links": {"post": op("Create a link (admin).", {**ok(ref("Link"), "Created", "201"), **BAD, **AUTH, "403": err("Not the admin key."), **DOWN}, body=ref("NewLink"), tag="links")},
    "/v1/links:batch": {"post": op("Create up to 10,000 links, all or nothing (admin).",
        {**ok({"type": "object", "properties": {"links": {"type": "array", "items": ref("Link")}}}, "Created", "201"), **BAD, **AUTH, "403": err("Not the admin key."), **DOWN},
        body={"type": "object", "required": ["links"], "properties": {"links": {"type": "array", "maxItems": 10000, "items": ref("NewLink")}}}, tag="links")},
    "/v1/links/{link_id}": {
        "get": op("A link.", {**ok(ref("Link")), **AUTH}, [P["link_id"]], tag="links"),
        "patch": op("Pause, resume or delete a link (admin).", {**ok(ref("Link")), **BAD, **AUTH, "403": err("Not the admin key.")}, [P["link_id"]],
                    body={"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["active", "paused", "deleted"]}}}, tag="links")},
    "/v1/links/{link_id}/stats": {"get": op("A link's zero-filled series and totals.", {**ok(ref("Series"), cached=True), **BAD, **AUTH, **DOWN}, [P["link_id"], *RANGE])},
    "/v1/clients/{client_id}": {
        "get": op("A client's state.", {**ok(ref("Client")), **AUTH}, [P["client_id"]], tag="clients"),
        "put": op("Set a client's state: pause or resume all its links at once, fallback URL, hot spread (admin).",
                  {**ok(ref("Client")), **BAD, **AUTH, "403": err("Not the admin key.")}, [P["client_id"]], body=ref("Client"), tag="clients")},
    "/v1/clients/{client_id}/stats": {"get": op("A client's zero-filled series and totals.", {**ok(ref("Series"), cached=True), **BAD, **AUTH, **DOWN}, [P["client_id"], *RANGE])},
    "/v1/clients/{client_id}/top-campaigns": {"get": op("A client's campaigns with the most clicks.", {**ok({"type": "object"}, cached=True), **BAD, **AUTH, **DOWN}, [P["client_id"], *RANGE, P["limit"]])},
    "/v1/clients/{client_id}/campaigns": {"get": op("A client's campaigns and their link counts.", {**ok({"type": "object"}, cached=True), **AUTH}, [P["client_id"]])},
    "/v1/clients/{client_id}/campaigns/{campaign_id}/stats": {"get": op("A campaign's zero-filled series and totals.", {**ok(ref("Series"), cached=True), **BAD, **AUTH, **DOWN}, [P["client_id"], P["campaign_id"], *RANGE])},
    "/v1/clients/{client_id}/campaigns/{campaign_id}/top-links": {"get": op("A campaign's links with the most clicks.", {**ok({"type": "object"}, cached=True), **BAD, **AUTH, **DOWN}, [P["client_id"], P["campaign_id"], *RANGE, P["limit"]])},
    "/v1/clients/{client_id}/campaigns/{campaign_id}/recipients": {"get": op("Recipients who clicked (valid tokens), paginated by recipient id.",
        {**ok({"type": "object", "properties": {"recipients": {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": "string", "nullable": True}}}, cached=True), **BAD, **AUTH, **DOWN},
        [P["client_id"], P["campaign_id"], *RANGE, P["limit"], P["cursor"]])},
    "/v1/clients/{client_id}/api-keys": {"post": op("Create an API key for a client; shown once (admin).",
        {**ok({"type": "object", "properties": {"key": {"type": "string"}, "key_id": {"type": "string"}}}, "Created", "201"), **BAD, **AUTH, "403": err("Not the admin key.")},
        [P["client_id"]], tag="clients")},
    "/v1/clients/{client_id}/api-keys/{key_id}": {"delete": op("Revoke an API key (admin).", {"204": {"description": "Revoked."}, **AUTH, "403": err("Not the admin key.")}, [P["client_id"], P["key_id"]], tag="clients")},
    "/v1/clients/{client_id}/token-keys": {"get": op("The keys a client signs recipient tokens with; see docs/recipient-tokens.md.", {**ok({"type": "object"}), **AUTH}, [P["client_id"]], tag="clients")},
}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "Ricochet aggregate API", "version": "1.0.0",
             "description": "Click analytics for email senders. Authenticate with `Authorization: Bearer <key>`: a client key sees only its own client's data (anything else is a 404); the admin key can do everything. Read endpoints answer from a cache at most 1 s old and support ETag/If-None-Match."},
    "servers": [{"url": "http://127.0.0.1:8081"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
    "paths": paths,
}
out = pathlib.Path(__file__).resolve().parents[2] / "api" / "openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")
