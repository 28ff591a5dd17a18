//! The pages a recipient sees when there is nowhere to send them.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1><p>{body}</p></body></html>"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], html)
        .into_response()
}

/// Unknown or malformed code: never a redirect.
pub fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Link not found", "This tracking link does not exist. Check the address in your email.")
}

/// A link that existed but is paused, expired or deleted.
pub fn gone() -> Response {
    page(StatusCode::GONE, "Link no longer active", "The sender has deactivated this link.")
}

/// The 1×1 transparent GIF of an open pixel, never cached so every open is seen.
pub fn pixel() -> Response {
    const GIF: &[u8] = &[
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
        0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
    ];
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, no-cache, must-revalidate, max-age=0"),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
        ],
        GIF,
    )
        .into_response()
}
