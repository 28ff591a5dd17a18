//! The ceiling for the edge's stack: axum on a default multi-thread tokio
//! runtime (as `ricochet-redirect`), answering every GET with a constant `302`
//! carrying the same headers as the edge's answer, and doing nothing else.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

async fn found() -> impl IntoResponse {
    (
        StatusCode::FOUND,
        [
            (
                header::LOCATION,
                HeaderValue::from_static("https://shop0.example/deals/0000000?utm_source=email&utm_medium=blast"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The same route shape as the edge's `/{code}`, and every other GET too.
    let app = Router::new().route("/{code}", get(found)).fallback(get(found));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("bare-redirect listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
