//! The edge's HTTP/1.1 connections, on the real binary: clicks pipelined on
//! one kept-alive connection are each answered in order, and a client that
//! trickles its request head is cut off at the header-read timeout while
//! everyone else is served.

use std::time::{Duration, Instant};

use ricochet_tests::client::{self, http};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn status_of(edge: &Service, code: &str) -> u16 {
    http().get(format!("{}/{code}", edge.url())).send().await.unwrap().status().as_u16()
}

async fn until_redirected(edge: &Service, code: &str) {
    eventually("the link to resolve on the edge", Duration::from_secs(10), || async {
        (status_of(edge, code).await == 302).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_clicks_on_one_connection_are_answered_in_order() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let shop = client::create_link(&api.url(), "acme", "c", "https://shop.example/a").await;
    let docs = client::create_link(&api.url(), "acme", "c", "https://docs.example/b").await;
    let edge = services::redirect(&servers, "edge", &[]).await;
    until_redirected(&edge, &shop.code).await;
    until_redirected(&edge, &docs.code).await;

    let mut conn = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    // Four requests in one write; the last asks the server to close, so the
    // whole answer ends at EOF.
    let requests = format!(
        "GET /{a} HTTP/1.1\r\nHost: e\r\n\r\nGET /{b} HTTP/1.1\r\nHost: e\r\n\r\n\
         GET /nosuchcode HTTP/1.1\r\nHost: e\r\n\r\nHEAD /{a} HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n",
        a = shop.code,
        b = docs.code
    );
    conn.write_all(requests.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
        .await
        .expect("the edge closes after the `Connection: close` request")
        .unwrap();

    let heads: Vec<(&str, Option<&str>)> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|response| {
            let status = &response[..3];
            let location = response.lines().find_map(|l| l.strip_prefix("location: "));
            (status, location)
        })
        .collect();
    assert_eq!(
        heads,
        [
            ("302", Some("https://shop.example/a")),
            ("302", Some("https://docs.example/b")),
            ("404", None),
            ("302", Some("https://shop.example/a")),
        ],
        "four answers in request order:\n{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off_while_others_are_served() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://shop.example/").await;
    let edge = services::redirect(&servers, "edge", &[("RICOCHET_HEADER_READ_TIMEOUT_SECS", "1".into())]).await;
    until_redirected(&edge, &link.code).await;

    let mut slow = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
    slow.write_all(format!("GET /{} HTTP/1.1\r\nHost: e\r\nX-Slow: ", link.code).as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut received = Vec::new();
    let closed_after = loop {
        assert!(start.elapsed() < Duration::from_secs(10), "a trickled head still open after 10 s");
        // One more byte of a header that never ends, every 200 ms.
        if slow.write_all(b"x").await.is_err() {
            break start.elapsed();
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_still_open) => {}
        }
        // The slow client holds nothing up for the others.
        assert_eq!(status_of(&edge, &link.code).await, 302);
    };
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(5),
        "closed {closed_after:?} after the head started; the timeout is 1 s"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains("302"), "an incomplete request must never be redirected: {received}");
    assert_eq!(status_of(&edge, &link.code).await, 302, "the edge still serves after cutting one off");
}
