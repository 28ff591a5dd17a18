//! The live dashboard at `/dashboard`: one page and its assets, built from
//! `api/dashboard/` by `npm run build` into `dashboard/dist/` and
//! embedded in the binary. `dist/` is committed, so `cargo build` never runs
//! npm, and nothing is fetched from elsewhere at runtime.
//!
//! The page is public and holds no data: it calls the same `/v1` endpoints as
//! any client, with the API key its user gives it.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

/// Every file of `dist/` as `(path, bytes)`. The table is written by the npm
/// build next to the files, because vite names assets by their content hash.
static FILES: &[(&str, &[u8])] = include!("../dashboard/dist/files.rs");

/// The page loads only its own script, style sheet and API; no inline code.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                        img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes under `/dashboard`. Generic over the state so it merges into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/assets/{file}", get(asset))
}

fn file(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, bytes)| *bytes)
}

async fn page() -> Response {
    let html = file("index.html").expect("dashboard/dist/files.rs lists index.html");
    let headers = [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        // Revalidated on every load: the page names the current build's assets.
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, PAGE_CSP),
        // The key may arrive in the query string; it must not leave in a Referer.
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, html).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match file(&format!("assets/{name}")) {
        Some(bytes) => {
            let headers = [
                (CONTENT_TYPE, content_type(&name)),
                // Names carry a content hash: a new build is a new name.
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ];
            (headers, bytes).into_response()
        }
        None => ApiError::NotFound(format!("no dashboard asset {name:?}")).into_response(),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::StatusCode;

    use super::*;

    async fn body(r: Response) -> String {
        String::from_utf8(to_bytes(r.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    /// Guards a stale or partial `dist/`: whatever the page loads is embedded and typed.
    #[tokio::test]
    async fn the_page_and_every_asset_it_names_are_served() {
        let page = page().await;
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
        let html = body(page).await;
        let names: Vec<&str> = html.split("/dashboard/assets/").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
        assert!(names.iter().any(|n| n.ends_with(".js")), "a script: {names:?}");
        assert!(names.iter().any(|n| n.ends_with(".css")), "a style sheet: {names:?}");
        for name in names {
            let r = asset(Path(name.to_owned())).await;
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/"), "{name}");
            assert!(r.headers()[CACHE_CONTROL].to_str().unwrap().contains("immutable"), "{name}");
        }
    }

    #[tokio::test]
    async fn nothing_is_loaded_from_elsewhere() {
        for (path, bytes) in FILES {
            let text = String::from_utf8_lossy(bytes);
            for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import"] {
                assert!(!text.contains(attr), "{path} loads something from another origin ({attr})");
            }
        }
    }

    #[tokio::test]
    async fn unknown_assets_are_a_json_404() {
        let r = asset(Path("nope.js".into())).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(body(r).await.contains("not_found"));
    }
}
