//! The edge's local registry snapshot and its client address.
//!
//! A restarted edge resumes from its snapshot and applies what changed while it
//! was down before it reports ready; a corrupt or cut snapshot is refused (the
//! edge loads the topics instead) and replaced; a forged `X-Forwarded-For`
//! changes neither the event's address nor anything derived from it.

use std::path::Path;
use std::time::Duration;

use ricochet_tests::client::{self, http};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::json;

async fn status_of(edge: &Service, code: &str) -> u16 {
    http().get(format!("{}/{code}", edge.url())).send().await.unwrap().status().as_u16()
}

/// An edge whose operations listener (metrics) is on a port the test knows; and its URL.
async fn edge_with_ops(servers: &Servers) -> (Service, String) {
    let (env, ops) = client::ops_listener();
    (services::redirect(servers, "edge", &[env]).await, ops)
}

async fn metrics(ops: &str) -> String {
    http().get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap()
}

fn snapshot_of(servers: &Servers, edge: &str) -> std::path::PathBuf {
    // The default place: in the edge's spool directory, kept across restarts.
    servers.path().join(format!("{edge}-spool")).join("registry.snapshot")
}

fn stop(edge: &mut Service) {
    assert!(edge.proc.terminate_and_wait(Duration::from_secs(60)), "edge exits cleanly on SIGTERM");
}

/// How this edge process started: `loaded`, `refused` or `missing` (its metric).
async fn snapshot_outcome(ops: &str) -> String {
    let m = metrics(ops).await;
    let outcomes: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("ricochet_registry_snapshot_loads_total{") && l.ends_with(" 1"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(outcomes.len(), 1, "one start, one outcome: {m}");
    outcomes[0].to_owned()
}

async fn patch_status(api: &str, link_id: &str, status: &str) {
    let r = http().patch(format!("{api}/v1/links/{link_id}")).json(&json!({ "status": status })).send().await.unwrap();
    assert_eq!(r.status(), 200, "PATCH link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_edge_resumes_from_its_snapshot_with_what_changed_while_it_was_down() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let kept = client::create_link(&api.url(), "acme", "c", "https://acme.example/kept").await;
    let paused = client::create_link(&api.url(), "acme", "c", "https://acme.example/paused").await;
    let mut edge = services::redirect(&servers, "edge", &[]).await;
    assert_eq!(status_of(&edge, &kept.code).await, 302);
    assert_eq!(status_of(&edge, &paused.code).await, 302);
    stop(&mut edge);
    let path = snapshot_of(&servers, "edge");
    assert!(path.exists(), "a graceful shutdown writes the snapshot");

    // While the edge is down: one link paused, one created, a client paused.
    patch_status(&api.url(), &paused.link_id, "paused").await;
    let created = client::create_link(&api.url(), "acme", "c", "https://acme.example/new").await;
    let globex = client::create_link(&api.url(), "globex", "c", "https://globex.example/").await;
    let r = http().put(format!("{}/v1/clients/globex", api.url())).json(&json!({"status": "paused"})).send().await;
    assert_eq!(r.unwrap().status(), 200);

    let (edge, ops) = edge_with_ops(&servers).await;
    // Ready means current: the very first answers already reflect the changes.
    assert_eq!(status_of(&edge, &paused.code).await, 410, "paused while the edge was down");
    assert_eq!(status_of(&edge, &created.code).await, 302, "created while the edge was down");
    assert_eq!(status_of(&edge, &globex.code).await, 410, "its client paused while the edge was down");
    let r = http().get(format!("{}/{}", edge.url(), kept.code)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://acme.example/kept", "the destination from the snapshot");
    assert_eq!(snapshot_outcome(&ops).await, "loaded");
}

/// Breaks the snapshot with `damage`, restarts the edge and checks it refused
/// the file, serves the topics' truth, and wrote a good snapshot on the way down.
async fn refused_and_replaced(
    servers: &Servers,
    path: &Path,
    damage: impl FnOnce(&mut Vec<u8>),
    codes: &[(&str, u16)],
) {
    let mut bytes = std::fs::read(path).unwrap();
    damage(&mut bytes);
    std::fs::write(path, &bytes).unwrap();
    let (mut edge, ops) = edge_with_ops(servers).await;
    assert_eq!(snapshot_outcome(&ops).await, "refused");
    for (code, status) in codes {
        assert_eq!(status_of(&edge, code).await, *status, "{code} after a full load");
    }
    stop(&mut edge);
    assert_ne!(std::fs::read(path).unwrap(), bytes, "the bad snapshot was replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_or_cut_snapshot_is_refused_and_replaced() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let live = client::create_link(&api.url(), "acme", "c", "https://acme.example/live").await;
    let paused = client::create_link(&api.url(), "acme", "c", "https://acme.example/paused").await;
    let mut edge = services::redirect(&servers, "edge", &[]).await;
    assert_eq!(status_of(&edge, &paused.code).await, 302);
    stop(&mut edge);
    // The snapshot says "active"; the topic now says "paused". A refused
    // snapshot must not leave the stale state behind.
    patch_status(&api.url(), &paused.link_id, "paused").await;
    let path = snapshot_of(&servers, "edge");
    let codes = [(live.code.as_str(), 302), (paused.code.as_str(), 410)];

    // One flipped bit in the body.
    refused_and_replaced(
        &servers,
        &path,
        |b| {
            let i = b.len() - 40;
            b[i] ^= 0x01
        },
        &codes,
    )
    .await;
    // Cut short, as by a crash mid-copy.
    refused_and_replaced(&servers, &path, |b| b.truncate(b.len() / 2), &codes).await;
    // Offsets past the end of the topic (a snapshot of another log): the
    // header is rewritten with a valid checksum, so only the broker check catches it.
    refused_and_replaced(&servers, &path, |b| bump_offsets(b), &codes).await;

    // The replacement is good: the next start uses it.
    let (edge, ops) = edge_with_ops(&servers).await;
    assert_eq!(snapshot_outcome(&ops).await, "loaded");
    assert_eq!(status_of(&edge, &paused.code).await, 410);
    assert_eq!(status_of(&edge, &live.code).await, 302);
}

/// Adds 1,000 to every offset in the snapshot's header and fixes its CRC.
fn bump_offsets(b: &mut [u8]) {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let header_len = u32_at(b, 8);
    let header = 12..12 + header_len;
    let mut at = 12;
    at += 4 + u32_at(b, at); // cluster id
    let count = u32_at(b, at);
    at += 4;
    for _ in 0..count {
        at += 4 + u32_at(b, at) + 4; // topic, partition
        let next = i64::from_le_bytes(b[at..at + 8].try_into().unwrap()) + 1000;
        b[at..at + 8].copy_from_slice(&next.to_le_bytes());
        at += 8 + 4; // next, crc of the last record
    }
    let crc = crc32fast::hash(&b[header.clone()]);
    b[header.end..header.end + 4].copy_from_slice(&crc.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_x_forwarded_for_is_ignored() {
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let api = services::api(&servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://acme.example/").await;
    // The test's requests come from 127.0.0.1: here, a trusted proxy.
    let behind = [("RICOCHET_TRUSTED_PROXIES", "127.0.0.0/8,10.0.0.0/8".to_owned())];
    let proxied = services::redirect(&servers, "edge-proxied", &behind).await;
    let direct = services::redirect(&servers, "edge-direct", &[]).await;

    let click = |edge: &Service, forwarded: &'static str| {
        let url = format!("{}/{}", edge.url(), link.code);
        async move {
            let r = http().get(url).header("x-forwarded-for", forwarded).send().await.unwrap();
            assert_eq!(r.status(), 302);
        }
    };
    // The client forged "6.6.6.6"; the proxy chain appended the real address, then its own hop.
    click(&proxied, "6.6.6.6, 198.51.100.23, 10.0.0.5").await;
    // No proxy in front: the whole header is the client's invention.
    click(&direct, "6.6.6.6").await;

    let sql = format!(
        "SELECT edge_node, client_ip FROM click_events WHERE link_id = '{}' ORDER BY edge_node FORMAT TSV",
        link.link_id
    );
    let rows = eventually("both clicks in ClickHouse", Duration::from_secs(30), || async {
        let out = servers.clickhouse.query(&sql).await.ok()?;
        (out.lines().count() >= 2).then_some(out)
    })
    .await;
    assert_eq!(
        rows.trim(),
        "edge-direct\t127.0.0.0\nedge-proxied\t198.51.100.0",
        "the right-most untrusted hop, anonymized; never the forged first entry"
    );
}
