//! A labelled blast against the real edge (issue 8's benchmark, see
//! `ricochet_bench::blast`): plans a seeded blast, creates its links through
//! the API (a hidden honeypot per message), replays every request over HTTP
//! at its compressed time, and writes the ground truth for `blast-score`.
//!
//! Time compression (`--time-scale S`, `--min-gap-secs G`): the blast's own
//! timeline (sends over 10 minutes, clicks up to hours later) is divided by
//! S; a session (one gateway sweep, one click with its double click or
//! time-of-click check) keeps its exact relative timing, and two sessions of
//! the same message stay at least G seconds apart (or their real gap, when
//! shorter). Each request's recipient token carries a send time of
//! (wall clock when it is sent) − (its seconds since the send in the blast),
//! so "seconds since send" at the edge is the blast's, while the requests
//! leave now. Sessions of one message therefore carry different send times
//! (by the time compressed away between them); cross-message densities (how
//! many recipients one network serves a minute) are S times the blast's.
//!
//! Every request carries exactly ONE `X-Forwarded-For` address (the edge
//! must trust its loopback proxy) and only the headers the model gives it.
//!
//! Opens (issue 16) fetch the open pixel of the campaign's first link,
//! `/o/{code}/{token}.gif`, with the same signed recipient token; the edge
//! answers them 200 (clicks 302).
//!
//! Output: the truth file (`--truth`), and one line `blast_result client=…
//! requests=… humans=… scanners=… opens=… unexpected_status=… late_p99_ms=… replay_secs=…`
//! (`humans`: people's clicks; `scanners`: gateways' clicks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use http_body_util::Empty;
use hyper::body::Bytes;
use ricochet_bench::blast::model::{self, Actor, Campaign, Params};
use ricochet_bench::blast::truth::{self, Header, Sent};
use ricochet_bench::clicks::now_ms;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The edge, `host:port`.
    #[arg(long)]
    edge: std::net::SocketAddr,
    /// The API's base URL (creates links, hands out token keys).
    #[arg(long)]
    api: String,
    #[arg(long, env = "RICOCHET_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// The sender's client id (default `blast-SEED-SHARE`).
    #[arg(long)]
    client: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 2000)]
    recipients: u32,
    /// Visible links per message of the main campaign.
    #[arg(long, default_value_t = 4)]
    links: u32,
    #[arg(long, default_value_t = 0.2)]
    single_link_share: f64,
    /// Share of recipients behind a mail-security gateway, 0.1 … 0.8.
    #[arg(long, default_value_t = 0.3)]
    scanner_share: f64,
    #[arg(long, default_value_t = 0.2)]
    click_rate: f64,
    #[arg(long, default_value_t = 600.0)]
    send_window_secs: f64,
    /// Hours after a send that are simulated.
    #[arg(long, default_value_t = 3.0)]
    horizon_hours: f64,
    /// No honeypot links.
    #[arg(long)]
    no_honeypot: bool,
    /// The blast's timeline is replayed this many times faster.
    #[arg(long, default_value_t = 30.0)]
    time_scale: f64,
    /// Sessions of a message stay at least this far apart in the replay.
    #[arg(long, default_value_t = 15.0)]
    min_gap_secs: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Where the ground truth goes.
    #[arg(long)]
    truth: std::path::PathBuf,
    /// Print the plan's summary and stop: no stack needed.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    fn params(&self) -> Params {
        Params {
            seed: self.seed,
            recipients: self.recipients,
            links: self.links,
            single_link_share: self.single_link_share,
            scanner_share: self.scanner_share,
            click_rate: self.click_rate,
            send_window_secs: self.send_window_secs,
            horizon_secs: self.horizon_hours * 3600.0,
            honeypot: !self.no_honeypot,
        }
    }
}

/// The blast's links: (campaign, index) -> (link id, code).
struct Links {
    created: Vec<(Campaign, u32, String, String, bool)>,
}

impl Links {
    fn get(&self, campaign: Campaign, index: u32) -> (&str, &str) {
        let l = self.created.iter().find(|l| l.0 == campaign && l.1 == index).expect("every planned link exists");
        (&l.2, &l.3)
    }
}

async fn create_links(http: &reqwest::Client, args: &Args, client: &str, params: &Params) -> anyhow::Result<Links> {
    let mut created = Vec::new();
    for campaign in Campaign::ALL {
        let visible = campaign.visible_links(params);
        let count = visible + u32::from(params.honeypot);
        for index in 0..count {
            let honeypot = index == visible;
            let body = json!({
                "client_id": client,
                "campaign_id": campaign.as_str(),
                "destination_url": format!("https://shop.example/{}/{}?utm_source=email", campaign.as_str(), index),
                "honeypot": honeypot,
            });
            let link: serde_json::Value = http
                .post(format!("{}/v1/links", args.api))
                .bearer_auth(&args.admin_key)
                .json(&body)
                .send()
                .await?
                .error_for_status()
                .context("POST /v1/links")?
                .json()
                .await?;
            let id = link["link_id"].as_str().context("link_id")?.to_owned();
            let code = link["code"].as_str().context("code")?.to_owned();
            created.push((campaign, index, id, code, honeypot));
        }
    }
    Ok(Links { created })
}

async fn client_key(http: &reqwest::Client, args: &Args, client: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let keys: serde_json::Value = http
        .get(format!("{}/v1/clients/{client}/token-keys", args.api))
        .bearer_auth(&args.admin_key)
        .send()
        .await?
        .error_for_status()
        .context("GET token-keys (is RICOCHET_TOKEN_KEYS set on the API?)")?
        .json()
        .await?;
    let first = &keys["keys"][0];
    let kid = first["kid"].as_str().context("kid")?.to_owned();
    let key = hex::decode(first["key"].as_str().context("key")?)?;
    Ok((kid, key))
}

/// Keep-alive HTTP/1 connections to the edge, shared by all simulated
/// clients: the edge tells them apart by `X-Forwarded-For`, not by
/// connection, and a fresh connection per request would leave tens of
/// thousands of sockets in TIME_WAIT.
type Http = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn http_client() -> Http {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// One request with only the headers given (hyper adds `Host` and nothing
/// else, unlike reqwest, which always sends `Accept`). Returns the status.
async fn send(
    http: &Http,
    edge: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<u16> {
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{edge}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = http.request(req.body(Empty::<Bytes>::new())?).await?;
    Ok(response.status().as_u16())
}

/// Waits until the edge has loaded every link: its open pixel answers 200
/// once the code is known (an open event, no recipient: not a click).
async fn wait_for_links(http: &Http, edge: std::net::SocketAddr, links: &Links) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, _, _, code, _) in &links.created {
        loop {
            let status = send(http, edge, "GET", &format!("/o/{code}.gif"), &[("x-forwarded-for", "192.0.2.1")]).await;
            if matches!(status, Ok(200)) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the edge does not know link {code} after 120 s: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let params = args.params();
    anyhow::ensure!(args.time_scale >= 1.0, "--time-scale must be at least 1");
    let client = args
        .client
        .clone()
        .unwrap_or_else(|| format!("blast-{}-{:02}", args.seed, (args.scanner_share * 100.0).round() as u32));
    let plan = model::plan(&params);
    let min_gap_ms = (args.min_gap_secs * 1000.0) as i64;
    let offsets = model::compress(&plan, args.time_scale, min_gap_ms);
    let opens = plan.requests.iter().filter(|q| q.is_open()).count();
    let humans = plan.requests.iter().filter(|q| !q.is_open() && q.actor == Actor::Human).count();
    let replay_ms = offsets.iter().copied().max().unwrap_or(0);
    eprintln!(
        "blast {client}: {} recipients, {} requests ({humans} human clicks, {} scanner clicks, {opens} opens), replay {:.0} s",
        plan.recipients.len(),
        plan.requests.len(),
        plan.requests.len() - humans - opens,
        replay_ms as f64 / 1000.0
    );
    if args.dry_run {
        return Ok(());
    }

    let http = reqwest::Client::new();
    let links = create_links(&http, &args, &client, &params).await?;
    let (kid, key) = client_key(&http, &args, &client).await?;
    let edge_http = http_client();
    wait_for_links(&edge_http, args.edge, &links).await?;

    // In replay order.
    let mut order: Vec<usize> = (0..plan.requests.len()).collect();
    order.sort_by_key(|&i| offsets[i]);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let started_ms = now_ms();
    let start = tokio::time::Instant::now();
    let kid = Arc::new(kid);
    let key = Arc::new(key);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = Vec::with_capacity(plan.requests.len());
    let mut lateness_ms = Vec::with_capacity(order.len());
    for i in order {
        let q = plan.requests[i].clone();
        let due = start + Duration::from_millis(offsets[i].max(0) as u64);
        tokio::time::sleep_until(due).await;
        let permit = permits.clone().acquire_owned().await?;
        lateness_ms.push(due.elapsed().as_millis() as i64);
        let (link_id, code) = links.get(q.campaign, q.link);
        let (link_id, code) = (link_id.to_owned(), code.to_owned());
        let (kid, key, client, edge, http) = (kid.clone(), key.clone(), client.clone(), args.edge, edge_http.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent_ms = now_ms();
            let token_sent_at_ms = sent_ms - q.since_send_ms;
            let recipient = ricochet_schemas::RecipientId::parse(q.recipient.clone()).expect("valid recipient id");
            let token = ricochet_bench::blast::mint_token(&kid, &key, &code, &recipient, token_sent_at_ms);
            let ip = q.ip.to_string();
            let mut headers: Vec<(&str, &str)> = vec![("x-forwarded-for", &ip)];
            let h = &q.headers;
            for (name, value) in [
                ("user-agent", &h.user_agent),
                ("accept", &h.accept),
                ("accept-language", &h.accept_language),
                ("referer", &h.referer),
            ] {
                if let Some(v) = value {
                    headers.push((name, v));
                }
            }
            let path = if q.is_open() { format!("/o/{code}/{token}.gif") } else { format!("/{code}/{token}") };
            let status = send(&http, edge, q.method.as_str(), &path, &headers).await.unwrap_or(0);
            Sent {
                client_id: client,
                campaign_id: q.campaign.as_str().to_owned(),
                link_id,
                code,
                request: q,
                token_sent_at_ms,
                sent_ms,
                status,
            }
        });
        // Reap finished requests as we go (the set stays small), keeping each one's record.
        while let Some(done) = tasks.try_join_next() {
            sent.push(done?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        sent.push(done?);
    }
    let finished_ms = now_ms();
    anyhow::ensure!(sent.len() == plan.requests.len(), "{} of {} requests recorded", sent.len(), plan.requests.len());
    let unexpected = sent.iter().filter(|s| s.status != if s.request.is_open() { 200 } else { 302 }).count();
    lateness_ms.sort_unstable();
    let late_p99 = lateness_ms.get(lateness_ms.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0);
    let header = Header {
        client_id: client.clone(),
        seed: args.seed,
        recipients: args.recipients,
        links: args.links,
        scanner_share: args.scanner_share,
        time_scale: args.time_scale,
        min_gap_ms,
        started_ms,
        finished_ms,
        links_created: links.created.iter().map(|l| (l.0, l.1, l.2.clone(), l.4)).collect(),
    };
    truth::write(&args.truth, &header, &sent)?;
    println!(
        "blast_result client={client} requests={} humans={humans} scanners={} opens={opens} unexpected_status={unexpected} \
         late_p99_ms={late_p99} replay_secs={:.0}",
        sent.len(),
        sent.len() - humans - opens,
        (finished_ms - started_ms) as f64 / 1000.0
    );
    anyhow::ensure!(
        unexpected == 0,
        "{unexpected} requests were not answered 302 (clicks) or 200 (opens): see the truth file's status"
    );
    Ok(())
}
