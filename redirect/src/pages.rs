//! The pages a recipient sees when there is nowhere to send them.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1><p>{body}</p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// Unknown or malformed code: never a redirect.
pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not found",
        "This tracking link does not exist. Check the address in your email.",
    )
}

/// A link that existed but is paused, expired or deleted.
pub fn gone() -> Response {
    page(
        StatusCode::GONE,
        "Link no longer active",
        "The sender has deactivated this link.",
    )
}
