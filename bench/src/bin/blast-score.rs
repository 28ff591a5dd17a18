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
//! Issue 16: the opens of the truth are matched to the `open` events the same
//! way, and the campaign rows of `click_breakdowns` (hour grain, summed over
//! the blast's campaigns; the per-link rows of `click_rollups` on a database
//! from before migration 0012) are read once they hold still for
//! `--settle-secs`; `ricochet_bench::blast::breakdown` scores both.
//!
//! Output: the tables, then one line `score_result client=… seed=…
//! scanner_share=… scanner_requests=… scanner_flagged=… human_clicks=…
//! human_flagged=… api_human_clicks=… api_human_err=… truth_unique_humans=…
//! api_unique_humans=… api_unique_err=… missing=… extra=…`, and the lines
//! `score_result_breakdowns`, `score_result_opens` and
//! `score_result_opens_by_client` (see `breakdown::result_lines`).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ricochet_bench::blast::breakdown::{self, Row, Shares};
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

/// The blast client's events of one type (`click`, `open`), one row each
/// (duplicates not merged yet included).
fn stored(args: &Args, cols: &Columns, client: &str, event_type: &str) -> anyhow::Result<Vec<Stored>> {
    // ClickHouse 18.16 has no query parameters: the client id is checked to
    // be a plain token (letters, digits, '-', '_', '.') before it is quoted.
    ricochet_schemas::ClientId::parse(client.to_owned())?;
    let sql = format!(
        "SELECT event_id, event_time_ms, link_id, recipient_id, http_method, client_ip, {}, {}, {} \
         FROM {}.click_events WHERE client_id = '{client}' AND event_type = '{event_type}' FORMAT TabSeparated",
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

fn distinct_events(args: &Args, client: &str, event_type: &str) -> anyhow::Result<u64> {
    ricochet_schemas::ClientId::parse(client.to_owned())?;
    let sql = format!(
        "SELECT uniqExact(event_id) FROM {}.click_events WHERE client_id = '{client}' AND event_type = '{event_type}' \
         FORMAT TabSeparated",
        args.database
    );
    Ok(clickhouse(&args.clickhouse, &sql)?.trim().parse()?)
}

/// The blast client's breakdown rows (hour grain, every campaign summed) of
/// the scored dimensions: the campaign rows of `click_breakdowns`, or on a
/// database from before it the per-link rows of `click_rollups`; `None`
/// before either holds them.
fn breakdown_rows(args: &Args, client: &str) -> anyhow::Result<Option<Vec<Row>>> {
    ricochet_schemas::ClientId::parse(client.to_owned())?;
    let columns = |table: &str| {
        clickhouse(
            &args.clickhouse,
            &format!(
                "SELECT count() FROM system.columns WHERE database = '{}' AND table = '{table}' \
                 AND name IN ('dimension', 'human_opens', 'machine_opens') FORMAT TabSeparated",
                args.database
            ),
        )
        .map(|n| n.trim() == "3")
    };
    let (table, rows_of) = if columns("click_breakdowns")? {
        ("click_breakdowns", "link_id = ''")
    } else if columns("click_rollups")? {
        ("click_rollups", "dimension != ''")
    } else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT dimension, value, sum(clicks), sum(human_clicks), sum(human_opens), sum(machine_opens) \
         FROM {}.{table} WHERE grain = 3600 AND client_id = '{client}' AND {rows_of} \
         AND dimension IN ('country', 'device', 'mail_client') GROUP BY dimension, value FORMAT TabSeparated",
        args.database
    );
    let body = clickhouse(&args.clickhouse, &sql)?;
    let rows = body
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            anyhow::ensure!(f.len() == 6, "unexpected row from ClickHouse: {line:?}");
            Ok(Row {
                dimension: f[0].to_owned(),
                value: f[1].to_owned(),
                clicks: f[2].parse()?,
                human_clicks: f[3].parse()?,
                human_opens: f[4].parse()?,
                machine_opens: f[5].parse()?,
            })
        })
        .collect::<anyhow::Result<Vec<Row>>>()?;
    Ok(Some(rows))
}

/// The breakdown rows once they hold still for `--settle-secs` (the rollups
/// land in their own flushes, after the raw events).
async fn settled_breakdown_rows(args: &Args, client: &str) -> anyhow::Result<Option<Vec<Row>>> {
    let Some(mut last) = breakdown_rows(args, client)? else { return Ok(None) };
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    while still_since.elapsed() < Duration::from_secs(args.settle_secs) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = breakdown_rows(args, client)?.unwrap_or_default();
        if now != last {
            still_since = Instant::now();
            last = now;
        }
    }
    Ok(Some(last))
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

/// The blast's breakdowns as a user reads them: `GET
/// /v1/clients/{client}/campaigns/{campaign}/breakdown?by=…` for each of its
/// campaigns, every value listed (`limit`), machines included
/// (`human_only=false`), summed over the campaigns. `None` when the API has no
/// such endpoint (404 on the route). `from` and `to` on whole hours, so the
/// breakdown rows answer, not the raw events.
async fn api_breakdown_rows(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    client: &str,
    campaigns: &[&str],
    range: (i64, i64),
) -> anyhow::Result<Option<Vec<Row>>> {
    let (from, to) = (range.0.div_euclid(3600) * 3600, (range.1.div_euclid(3600) + 1) * 3600);
    let mut sums: std::collections::BTreeMap<(String, String), Row> = Default::default();
    for campaign in campaigns {
        for by in breakdown::SCORED {
            let response = http
                .get(format!("{api}/v1/clients/{client}/campaigns/{campaign}/breakdown"))
                .bearer_auth(key)
                .query(&[
                    ("by", by.to_owned()),
                    ("from", from.to_string()),
                    ("to", to.to_string()),
                    ("human_only", "false".to_owned()),
                    ("limit", "1000".to_owned()),
                ])
                .send()
                .await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                let body = response.text().await.unwrap_or_default();
                if body.contains("route") || body.is_empty() || !body.contains('{') {
                    return Ok(None);
                }
                anyhow::bail!("breakdown of {campaign} by {by}: 404 {body}");
            }
            let answer: serde_json::Value = response.error_for_status()?.json().await?;
            let rows = answer["rows"].as_array().context("breakdown: rows")?;
            let other = &answer["other"];
            for r in rows.iter().chain(std::iter::once(other)) {
                let value = match r["value"].as_str() {
                    Some("unknown") => String::new(),
                    Some(v) => v.to_owned(),
                    None => "(other)".to_owned(), // the values past `limit`: none with limit 1000
                };
                let n = |f: &str| r[f].as_u64().unwrap_or(0);
                let e = sums.entry((by.to_owned(), value.clone())).or_insert_with(|| Row {
                    dimension: by.to_owned(),
                    value,
                    ..Row::default()
                });
                e.clicks += n("clicks");
                e.human_clicks += n("human_clicks");
                e.human_opens += n("human_opens");
                e.machine_opens += n("machine_opens");
            }
        }
    }
    Ok(Some(sums.into_values().filter(|r| r.clicks + r.human_opens + r.machine_opens > 0).collect()))
}

/// Scores one set of breakdown rows against the truth; prints the tables
/// (when `tables`) and the result lines.
fn score_breakdowns(
    client: &str,
    source: &str,
    rows: &[Row],
    sent: &[truth::Sent],
    opens: &score::Matched,
    tables: bool,
) {
    let dimensions = breakdown::SCORED.iter().copied().chain([breakdown::SHOWN_MAIL_CLIENT]);
    let shares: Vec<Shares> = dimensions
        .map(|d| Shares::of(d, &breakdown::truth_clicks(sent, d), &breakdown::measured_clicks(rows, d)))
        .collect();
    let opens = breakdown::Opens::of(opens, rows);
    if tables {
        println!();
        println!("breakdowns read from {source}");
        print!("{}", breakdown::render(&shares, &opens));
    }
    print!("{}", breakdown::result_lines(client, source, &shares, &opens));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (header, sent) = truth::read(&args.truth)?;
    let client = header.client_id.clone();
    // Clicks and opens are scored apart: the opens of issue 16 by `breakdown`.
    let (open_sent, sent): (Vec<_>, Vec<_>) = sent.into_iter().partition(|s| s.request.is_open());
    let answered = sent.iter().filter(|s| s.status != 0).count() as u64;
    let answered_opens = open_sent.iter().filter(|s| s.status != 0).count() as u64;

    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let waited = Instant::now();
    let (mut count, mut open_count) = (0, 0);
    while Instant::now() < deadline {
        count = distinct_events(&args, &client, "click")?;
        open_count = distinct_events(&args, &client, "open")?;
        if count >= answered && open_count >= answered_opens {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{client}: {count} of {answered} click events and {open_count} of {answered_opens} open events stored after {:.0} s",
        waited.elapsed().as_secs_f64()
    );
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
    let stored_opens = stored(&args, &cols, &client, "open")?;
    let stored = stored(&args, &cols, &client, "click")?;
    let matched = score::match_events(&sent, &stored);
    let report = score::report(&matched, &stored, api);
    let rows = settled_breakdown_rows(&args, &client).await?;
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
    // What a user sees (the API's breakdown endpoint) when the API has it;
    // the breakdown rows in ClickHouse beside it, as a cross-check.
    let open_matched = score::match_events(&open_sent, &stored_opens);
    let api_rows = match (&args.api, &args.admin_key) {
        (Some(api), Some(key)) => {
            let mut campaigns: Vec<&str> = header.links_created.iter().map(|l| l.0.as_str()).collect();
            campaigns.dedup();
            let range = (header.started_ms / 1000 - 3600, header.finished_ms / 1000 + 3600);
            api_breakdown_rows(&reqwest::Client::new(), api, key, &client, &campaigns, range).await?
        }
        _ => None,
    };
    match (&api_rows, &rows) {
        (Some(api_rows), _) => score_breakdowns(&client, "api", api_rows, &sent, &open_matched, true),
        (None, _) => println!("breakdowns: the API has no breakdown endpoint (or was not given): read from ClickHouse"),
    }
    match &rows {
        Some(rows) => score_breakdowns(&client, "clickhouse", rows, &sent, &open_matched, api_rows.is_none()),
        None => println!("breakdowns: no breakdown rows yet (migrations 0010, 0012): not scored"),
    }
    Ok(())
}
