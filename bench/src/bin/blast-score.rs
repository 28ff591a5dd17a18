//! Scores a labelled blast (written by `blast`): reads the verdicts back from
//! ClickHouse (`click_events`) and the totals from the API, matches every
//! request of the truth file to its stored event (see
//! `ricochet_bench::blast::score` for the join), and prints the confusion
//! matrix by vendor, network and hard case, by seconds since send, by verdict
//! reason, and the goals of issue 8.
//!
//! It first waits (up to `--wait-secs`) until every request the edge answered
//! has an event in `click_events` (events are written once decided), then
//! until the API's totals hold still for `--settle-secs`.
//!
//! Before the verdict columns exist (`is_human`, `verdict_reason`,
//! `seconds_since_send`), it scores the edge's own flag: `is_prefetch = 0`
//! is "human", as the API counted then.
//!
//! Output: the tables, then one line `score_result client=… seed=…
//! scanner_share=… scanner_requests=… scanner_flagged=… human_clicks=…
//! human_flagged=… api_human_clicks=… api_human_err=… truth_unique_humans=…
//! api_unique_humans=… api_unique_err=… missing=… extra=…`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ricochet_bench::blast::score::{self, ApiTotals, Stored};
use ricochet_bench::blast::truth;
use ricochet_bench::clicks::clickhouse;

#[derive(Parser)]
struct Args {
    /// The truth file `blast` wrote.
    #[arg(long)]
    truth: std::path::PathBuf,
    /// ClickHouse's HTTP interface, `host:port`.
    #[arg(long)]
    clickhouse: String,
    #[arg(long, default_value = "default")]
    database: String,
    /// The API's base URL; without it, only ClickHouse is scored.
    #[arg(long)]
    api: Option<String>,
    #[arg(long, env = "RICOCHET_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// How long to wait for every request's event to be stored.
    #[arg(long, default_value_t = 180)]
    wait_secs: u64,
    /// The API's totals must hold still this long.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
}

/// The SQL expressions for the verdict, by what the table has.
struct Columns {
    is_human: &'static str,
    reason: &'static str,
    since_send: &'static str,
    verdicts: bool,
}

fn columns(args: &Args) -> anyhow::Result<Columns> {
    ricochet_schemas::ClientId::parse(args.database.clone()).context("--database must be a plain name")?;
    let names = clickhouse(
        &args.clickhouse,
        &format!(
            "SELECT name FROM system.columns WHERE database = '{}' AND table = 'click_events' FORMAT TabSeparated",
            args.database
        ),
    )?;
    let has = |c: &str| names.lines().any(|l| l.trim() == c);
    anyhow::ensure!(has("event_id"), "no click_events table in database {}", args.database);
    let verdicts = has("is_human") && has("verdict_reason");
    Ok(Columns {
        is_human: if verdicts { "toUInt8(is_human)" } else { "toUInt8(is_prefetch = 0)" },
        reason: if verdicts { "toString(verdict_reason)" } else { "if(is_prefetch = 1, 'is_prefetch', 'human')" },
        since_send: if has("seconds_since_send") { "toString(seconds_since_send)" } else { "''" },
        verdicts,
    })
}

/// The blast client's click events, one row each (duplicates not merged yet included).
fn stored(args: &Args, cols: &Columns, client: &str) -> anyhow::Result<Vec<Stored>> {
    // ClickHouse 18.16 has no query parameters: the client id is checked to
    // be a plain token (letters, digits, '-', '_', '.') before it is quoted.
    ricochet_schemas::ClientId::parse(client.to_owned())?;
    let sql = format!(
        "SELECT event_id, event_time_ms, link_id, recipient_id, http_method, client_ip, {}, {}, {} \
         FROM {}.click_events WHERE client_id = '{client}' AND event_type = 'click' FORMAT TabSeparated",
        cols.is_human, cols.reason, cols.since_send, args.database
    );
    let body = clickhouse(&args.clickhouse, &sql)?;
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            anyhow::ensure!(f.len() == 9, "unexpected row from ClickHouse: {line:?}");
            Ok(Stored {
                event_id: f[0].to_owned(),
                event_time_ms: f[1].parse()?,
                link_id: f[2].to_owned(),
                recipient_id: f[3].to_owned(),
                http_method: f[4].to_owned(),
                client_ip: f[5].to_owned(),
                is_human: f[6].parse()?,
                verdict_reason: f[7].to_owned(),
                seconds_since_send: f[8].parse().ok(),
            })
        })
        .collect()
}

fn distinct_events(args: &Args, client: &str) -> anyhow::Result<u64> {
    ricochet_schemas::ClientId::parse(client.to_owned())?;
    let sql = format!(
        "SELECT uniqExact(event_id) FROM {}.click_events WHERE client_id = '{client}' AND event_type = 'click' \
         FORMAT TabSeparated",
        args.database
    );
    Ok(clickhouse(&args.clickhouse, &sql)?.trim().parse()?)
}

async fn api_totals(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    client: &str,
    range: (i64, i64),
) -> anyhow::Result<ApiTotals> {
    let get = |human_only: bool| {
        http.get(format!("{api}/v1/clients/{client}/stats"))
            .bearer_auth(key)
            .query(&[
                ("granularity", "hour".to_owned()),
                ("from", range.0.to_string()),
                ("to", range.1.to_string()),
                ("human_only", human_only.to_string()),
            ])
            .send()
    };
    let all: serde_json::Value = get(false).await?.error_for_status()?.json().await?;
    let totals = &all["totals"];
    let human_clicks = totals["human_clicks"].as_u64().context("totals.human_clicks")?;
    // `unique_human_recipients` once the API leads with it; before, the
    // unique recipients of the human-only view are the same number.
    let unique = match totals["unique_human_recipients"].as_u64() {
        Some(n) => n,
        None => {
            let human: serde_json::Value = get(true).await?.error_for_status()?.json().await?;
            human["totals"]["unique_recipients"].as_u64().context("totals.unique_recipients")?
        }
    };
    Ok(ApiTotals { human_clicks, unique_human_recipients: unique })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (header, sent) = truth::read(&args.truth)?;
    let client = header.client_id.clone();
    let answered = sent.iter().filter(|s| s.status != 0).count() as u64;

    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let waited = Instant::now();
    let mut count = 0;
    while Instant::now() < deadline {
        count = distinct_events(&args, &client)?;
        if count >= answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{client}: {count} of {answered} click events stored after {:.0} s", waited.elapsed().as_secs_f64());
    let cols = columns(&args)?;
    if !cols.verdicts {
        eprintln!("{client}: click_events has no verdict columns yet: scoring is_prefetch = 0 as human");
    }

    let api = match (&args.api, &args.admin_key) {
        (Some(api), Some(key)) => {
            let http = reqwest::Client::new();
            let range = (header.started_ms / 1000 - 3600, header.finished_ms / 1000 + 3600);
            let mut last = api_totals(&http, api, key, &client, range).await?;
            let mut still_since = Instant::now();
            let settle_deadline = Instant::now() + Duration::from_secs(args.wait_secs);
            while still_since.elapsed() < Duration::from_secs(args.settle_secs) && Instant::now() < settle_deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = api_totals(&http, api, key, &client, range).await?;
                if (now.human_clicks, now.unique_human_recipients) != (last.human_clicks, last.unique_human_recipients)
                {
                    still_since = Instant::now();
                    last = now;
                }
            }
            Some(last)
        }
        _ => None,
    };
    let stored = stored(&args, &cols, &client)?;
    let matched = score::match_events(&sent, &stored);
    let report = score::report(&matched, &stored, api);
    println!(
        "blast {client}: seed {}, {} recipients, {} links, scanner share {}, time scale {}, min gap {} s, replayed in {:.0} s",
        header.seed,
        header.recipients,
        header.links,
        header.scanner_share,
        header.time_scale,
        header.min_gap_ms / 1000,
        (header.finished_ms - header.started_ms) as f64 / 1000.0
    );
    print!("{}", report.render());
    let (api_human, api_unique) = api.map_or((-1, -1), |a| (a.human_clicks as i64, a.unique_human_recipients as i64));
    let (eh, eu) = report.api_errors().unwrap_or((f64::NAN, f64::NAN));
    let scanners = report.by_actor.get(&ricochet_bench::blast::model::Actor::Scanner).map_or(0, |t| t.total);
    println!(
        "score_result client={client} seed={} scanner_share={} verdicts={} scanner_requests={scanners} \
         scanner_flagged={:.4} human_clicks={} human_flagged={:.4} api_human_clicks={api_human} api_human_err={eh:.4} \
         truth_unique_humans={} api_unique_humans={api_unique} api_unique_err={eu:.4} missing={} extra={}",
        header.seed,
        header.scanner_share,
        cols.verdicts,
        report.scanner_flagged(),
        report.truth_human_clicks,
        report.human_flagged(),
        report.truth_unique_humans,
        report.missing,
        report.extra
    );
    Ok(())
}
