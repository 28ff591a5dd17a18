//! Issue 16's side of a blast's score: the breakdowns of human clicks
//! against the truth, and the verdicts on opens.
//!
//! Breakdowns. For each dimension, each value's share of the human clicks
//! as stored (the campaign rows of `click_breakdowns`, or the API's breakdown
//! endpoint) against its share of the truth's human clicks; the error of a
//! dimension is the largest absolute difference over its values, in points.
//! The truth of a click: the vendored country table's country of the full
//! address it was sent from (the aggregator sees only the /24), the
//! recipient's device, and the recipient's mail client. A click carries its
//! mail client only in a webmail or app Referer, so desktop and iOS readers'
//! clicks cannot name it: `mail_client (shown)` scores against the client
//! the Referer names (`other` when none), which isolates what the classifier
//! loses from what the request never said.
//!
//! Opens. Each open sent is matched to its stored event as clicks are
//! ([`super::score::match_events`]); machine-open recall is the machine opens
//! (Apple's proxy, gateways) judged machine, human opens flagged the
//! people's opens (Gmail's and Yahoo's proxies, the reader's own app)
//! judged machine.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::{self, Actor, Opener};
use super::score::Matched;
use super::truth::Sent;

/// The goals of issue 16.
pub const SHARE_ERROR_GOAL_POINTS: f64 = 2.0;
pub const MACHINE_OPEN_RECALL_GOAL: f64 = 0.95;
pub const HUMAN_OPENS_FLAGGED_GOAL: f64 = 0.02;

/// The dimensions scored against a goal, and one diagnostic.
pub const SCORED: [&str; 3] = ["country", "device", "mail_client"];
pub const SHOWN_MAIL_CLIENT: &str = "mail_client (shown)";

/// One breakdown row as stored (or as the API answers it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub dimension: String,
    pub value: String,
    pub clicks: u64,
    pub human_clicks: u64,
    pub human_opens: u64,
    pub machine_opens: u64,
}

/// The truth's human clicks by value of `dimension`.
pub fn truth_clicks(sent: &[Sent], dimension: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in sent.iter().filter(|s| !s.request.is_open() && s.request.actor == Actor::Human) {
        let q = &s.request;
        let value = match dimension {
            "country" => q.country.clone(),
            "device" => q.device.map_or("", |d| d.as_str()).to_owned(),
            "mail_client" => q.mail_client.map_or("", |c| c.as_str()).to_owned(),
            SHOWN_MAIL_CLIENT => model::referer_client(q.headers.referer.as_deref()).as_str().to_owned(),
            _ => continue,
        };
        *out.entry(value).or_default() += 1;
    }
    out
}

/// The stored human clicks by value of `dimension`.
pub fn measured_clicks(rows: &[Row], dimension: &str) -> BTreeMap<String, u64> {
    let dimension = if dimension == SHOWN_MAIL_CLIENT { "mail_client" } else { dimension };
    let mut out = BTreeMap::new();
    for r in rows.iter().filter(|r| r.dimension == dimension && r.human_clicks > 0) {
        *out.entry(r.value.clone()).or_default() += r.human_clicks;
    }
    out
}

/// One dimension's shares, truth against measured.
#[derive(Debug, Clone)]
pub struct Shares {
    pub dimension: String,
    /// (value, truth count, measured count, truth share, measured share)
    pub values: Vec<(String, u64, u64, f64, f64)>,
}

impl Shares {
    pub fn of(dimension: &str, truth: &BTreeMap<String, u64>, measured: &BTreeMap<String, u64>) -> Shares {
        let (tt, mt) = (truth.values().sum::<u64>(), measured.values().sum::<u64>());
        let share = |n: u64, total: u64| if total == 0 { 0.0 } else { n as f64 / total as f64 };
        let mut keys: Vec<&String> = truth.keys().chain(measured.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut values: Vec<(String, u64, u64, f64, f64)> = keys
            .into_iter()
            .map(|k| {
                let (t, m) = (truth.get(k).copied().unwrap_or(0), measured.get(k).copied().unwrap_or(0));
                (k.clone(), t, m, share(t, tt), share(m, mt))
            })
            .collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        Shares { dimension: dimension.to_owned(), values }
    }

    /// The largest absolute share difference, in points, and its value.
    pub fn max_error(&self) -> (f64, &str) {
        self.values.iter().map(|(v, _, _, t, m)| (100.0 * (m - t).abs(), v.as_str())).fold((0.0, ""), |best, x| {
            if x.0 > best.0 {
                x
            } else {
                best
            }
        })
    }
}

/// The opens' verdicts against their labels.
#[derive(Debug, Default, Clone)]
pub struct Opens {
    /// Per opener: (opens, judged machine, judged machine in the right group).
    pub by_opener: BTreeMap<Opener, (u64, u64, u64)>,
    /// Per opener, the verdict reasons given.
    pub reasons: BTreeMap<Opener, BTreeMap<String, u64>>,
    /// Per (opener, recipient's mail client): (opens, judged machine), so a
    /// miss can be traced to the fetcher that caused it (the reader's own app
    /// is Outlook, Apple Mail, Thunderbird or a browser).
    pub by_fetcher: BTreeMap<(Opener, String), (u64, u64)>,
    pub missing: usize,
    pub extra: usize,
    /// Per recipient's mail client: the truth's (human, machine) opens.
    pub truth_by_client: BTreeMap<String, (u64, u64)>,
    /// Per stored mail client: (human_opens, machine_opens) of the breakdown rows.
    pub measured_by_client: BTreeMap<String, (u64, u64)>,
}

/// The group an open's verdict reason is reported under (`apple_privacy`,
/// `scanner`, `prefetch`), `None` for a person's (as `ricochet_schemas::Reason::machine_open`).
fn group_of(reason: &str) -> Option<&'static str> {
    ricochet_schemas::Reason::parse(reason).and_then(|r| r.machine_open()).map(|g| g.as_str())
}

impl Opens {
    pub fn of(m: &Matched, rows: &[Row]) -> Opens {
        let mut o = Opens { missing: m.missing.len(), extra: m.extra, ..Opens::default() };
        for j in &m.judged {
            let Some(opener) = j.sent.request.opener else { continue };
            let group = group_of(j.reason);
            let e = o.by_opener.entry(opener).or_default();
            e.0 += 1;
            if j.flagged {
                e.1 += 1;
                if group.is_some() && group == opener.machine_group() {
                    e.2 += 1;
                }
            }
            *o.reasons.entry(opener).or_default().entry(j.reason.to_owned()).or_default() += 1;
            let client = j.sent.request.mail_client.map_or("", |c| c.as_str()).to_owned();
            let f = o.by_fetcher.entry((opener, client)).or_default();
            f.0 += 1;
            f.1 += u64::from(j.flagged);
        }
        for s in m.judged.iter().map(|j| j.sent).chain(m.missing.iter().copied()) {
            let q = &s.request;
            let Some(opener) = q.opener else { continue };
            let client = q.mail_client.map_or("", |c| c.as_str()).to_owned();
            let e = o.truth_by_client.entry(client).or_default();
            if opener.machine_group().is_some() {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        for r in rows.iter().filter(|r| r.dimension == "mail_client" && r.human_opens + r.machine_opens > 0) {
            let e = o.measured_by_client.entry(r.value.clone()).or_default();
            e.0 += r.human_opens;
            e.1 += r.machine_opens;
        }
        o
    }

    fn sum(&self, machine: bool) -> (u64, u64) {
        self.by_opener
            .iter()
            .filter(|(k, _)| k.machine_group().is_some() == machine)
            .fold((0, 0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1))
    }

    /// Machine opens judged machine, of all machine opens (matched).
    pub fn machine_recall(&self) -> (f64, u64) {
        let (n, flagged) = self.sum(true);
        (if n == 0 { 0.0 } else { flagged as f64 / n as f64 }, n)
    }

    /// People's opens judged machine, of all people's opens (matched).
    pub fn human_flagged(&self) -> (f64, u64) {
        let (n, flagged) = self.sum(false);
        (if n == 0 { 0.0 } else { flagged as f64 / n as f64 }, n)
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn goal(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The tables and the goal lines, as printed.
pub fn render(shares: &[Shares], opens: &Opens) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "breakdowns of human clicks (truth vs stored): value, clicks, share");
    for s in shares {
        let (err, worst) = s.max_error();
        let _ = writeln!(o, "  {} (max error {err:.1} points, at {:?})", s.dimension, worst);
        for (v, t, m, ts, ms) in &s.values {
            let v = if v.is_empty() { "(none)" } else { v.as_str() };
            let _ =
                writeln!(o, "    {v:<14} {t:>6} {m:>6}   {:>6} {:>6}   {:+.1}", pct(*ts), pct(*ms), 100.0 * (ms - ts));
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<14} {:>7} {:>9} {:>12}  verdict reasons", "opens by", "opens", "machine", "right group");
    for (opener, (n, flagged, right)) in &opens.by_opener {
        let mut reasons: Vec<(&String, &u64)> =
            opens.reasons.get(opener).map(|r| r.iter().collect()).unwrap_or_default();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let reasons: Vec<String> = reasons.iter().take(4).map(|(r, c)| format!("{r} {c}")).collect();
        let share = if *n == 0 { 0.0 } else { *flagged as f64 / *n as f64 };
        let right = if opener.machine_group().is_some() { right.to_string() } else { "-".into() };
        let _ = writeln!(o, "  {:<12} {n:>7} {:>9} {right:>12}  {}", opener.as_str(), pct(share), reasons.join(", "));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<30} {:>7} {:>9}", "opens by fetcher · mail client", "opens", "machine");
    for ((opener, client), (n, flagged)) in &opens.by_fetcher {
        let share = if *n == 0 { 0.0 } else { *flagged as f64 / *n as f64 };
        let _ = writeln!(o, "  {:<28} {n:>7} {:>9}", format!("{} · {client}", opener.as_str()), pct(share));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "opens by mail client   truth human  machine   stored human  machine");
    let mut clients: Vec<&String> = opens.truth_by_client.keys().chain(opens.measured_by_client.keys()).collect();
    clients.sort();
    clients.dedup();
    for c in clients {
        let (th, tm) = opens.truth_by_client.get(c).copied().unwrap_or_default();
        let (mh, mm) = opens.measured_by_client.get(c).copied().unwrap_or_default();
        let name = if c.is_empty() { "(none)" } else { c.as_str() };
        let _ = writeln!(o, "  {name:<20} {th:>11} {tm:>8}   {mh:>12} {mm:>8}");
    }
    let _ = writeln!(o);
    for s in shares.iter().filter(|s| SCORED.contains(&s.dimension.as_str())) {
        let (err, worst) = s.max_error();
        let _ = writeln!(
            o,
            "{:<12} share error: {err:.1} points at {worst:?} (goal <= {SHARE_ERROR_GOAL_POINTS:.0}: {})",
            s.dimension,
            goal(err <= SHARE_ERROR_GOAL_POINTS)
        );
    }
    let (recall, machines) = opens.machine_recall();
    let (flagged, humans) = opens.human_flagged();
    let _ = writeln!(
        o,
        "machine opens judged machine: {} of {machines} (goal >= {}: {})",
        pct(recall),
        pct(MACHINE_OPEN_RECALL_GOAL),
        goal(recall >= MACHINE_OPEN_RECALL_GOAL)
    );
    let _ = writeln!(
        o,
        "human opens flagged:          {} of {humans} (goal <= {}: {})",
        pct(flagged),
        pct(HUMAN_OPENS_FLAGGED_GOAL),
        goal(flagged <= HUMAN_OPENS_FLAGGED_GOAL)
    );
    let _ =
        writeln!(o, "opens unmatched: {} sent without an event, {} events without an open", opens.missing, opens.extra);
    o
}

/// The `score_result_breakdowns` and `score_result_opens` lines.
pub fn result_lines(client: &str, source: &str, shares: &[Shares], opens: &Opens) -> String {
    let mut o = String::new();
    let mut fields = Vec::new();
    for s in shares {
        let (err, worst) = s.max_error();
        let name = s.dimension.replace(" (shown)", "_shown");
        fields.push(format!("{name}_err={err:.2} {name}_worst={}", if worst.is_empty() { "none" } else { worst }));
    }
    let met = shares
        .iter()
        .filter(|s| SCORED.contains(&s.dimension.as_str()))
        .all(|s| s.max_error().0 <= SHARE_ERROR_GOAL_POINTS);
    let _ =
        writeln!(o, "score_result_breakdowns client={client} source={source} {} goal={}", fields.join(" "), goal(met));
    let (recall, machines) = opens.machine_recall();
    let (flagged, humans) = opens.human_flagged();
    let per: Vec<String> = opens.by_opener.iter().map(|(k, (n, f, _))| format!("{}={f}/{n}", k.as_str())).collect();
    let _ = writeln!(
        o,
        "score_result_opens client={client} machine_opens={machines} machine_recall={recall:.4} human_opens={humans} \
         human_flagged={flagged:.4} judged_machine_by_opener={} missing={} extra={} goal={}",
        per.join(","),
        opens.missing,
        opens.extra,
        goal(recall >= MACHINE_OPEN_RECALL_GOAL && flagged <= HUMAN_OPENS_FLAGGED_GOAL)
    );
    let by_client: Vec<String> = opens
        .truth_by_client
        .keys()
        .chain(opens.measured_by_client.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|c| {
            let (th, tm) = opens.truth_by_client.get(c).copied().unwrap_or_default();
            let (mh, mm) = opens.measured_by_client.get(c).copied().unwrap_or_default();
            format!("{}={th}/{tm}:{mh}/{mm}", if c.is_empty() { "none" } else { c.as_str() })
        })
        .collect();
    let _ = writeln!(
        o,
        "score_result_opens_by_client client={client} source={source} truth_human/machine:stored_human/machine {}",
        by_client.join(" ")
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blast::model::{plan, Params};
    use crate::blast::score::{match_events, Stored};

    fn sent_of(p: &crate::blast::model::Plan) -> Vec<Sent> {
        crate::blast::score::tests::as_sent(p.requests.iter())
    }

    #[test]
    fn the_truth_of_a_blast_has_countries_devices_mail_clients_and_every_kind_of_open() {
        let p = plan(&Params { recipients: 1500, scanner_share: 0.5, ..Params::default() });
        let sent = sent_of(&p);
        for d in SCORED {
            let t = truth_clicks(&sent, d);
            assert!(t.len() >= 3, "{d}: {t:?}");
        }
        let countries = truth_clicks(&sent, "country");
        assert!(countries.keys().any(|c| c == "US") && countries.keys().any(|c| c == "DE"), "{countries:?}");
        let shown = truth_clicks(&sent, SHOWN_MAIL_CLIENT);
        assert!(shown["other"] > truth_clicks(&sent, "mail_client")["other"], "desktop clients show no Referer");
        for opener in Opener::ALL {
            assert!(sent.iter().any(|s| s.request.opener == Some(opener)), "{opener:?} opens");
        }
        // Apple's proxy fetches for people who never click nor read.
        let clickers: std::collections::HashSet<&str> = sent
            .iter()
            .filter(|s| !s.request.is_open() && s.request.actor == Actor::Human)
            .map(|s| s.request.recipient.as_str())
            .collect();
        assert!(sent
            .iter()
            .any(|s| s.request.opener == Some(Opener::AppleProxy) && !clickers.contains(s.request.recipient.as_str())));
    }

    #[test]
    fn a_perfect_aggregator_scores_zero_error_and_full_recall() {
        let p = plan(&Params { recipients: 600, scanner_share: 0.5, ..Params::default() });
        let sent = sent_of(&p);
        let opens: Vec<Sent> = sent.iter().filter(|s| s.request.is_open()).cloned().collect();
        let stored: Vec<Stored> = opens
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ip = s.request.ip.octets();
                let reason = match s.request.opener.and_then(Opener::machine_group) {
                    Some("apple_privacy") => "apple_privacy",
                    Some(_) => "scanner_network",
                    None => "human",
                };
                Stored {
                    event_id: format!("o{i}"),
                    event_time_ms: s.sent_ms + 2,
                    link_id: s.link_id.clone(),
                    recipient_id: s.request.recipient.clone(),
                    http_method: "GET".into(),
                    client_ip: format!("{}.{}.{}.0", ip[0], ip[1], ip[2]),
                    is_human: u8::from(reason == "human"),
                    verdict_reason: reason.into(),
                    seconds_since_send: None,
                }
            })
            .collect();
        let m = match_events(&opens, &stored);
        let mut rows = Vec::new();
        for d in SCORED {
            for (value, n) in truth_clicks(&sent, d) {
                rows.push(Row { dimension: d.into(), value, clicks: n, human_clicks: n, ..Row::default() });
            }
        }
        let o = Opens::of(&m, &rows);
        assert_eq!(o.machine_recall().0, 1.0);
        assert_eq!(o.human_flagged().0, 0.0);
        assert!(o.by_opener.values().all(|(n, f, right)| *f == 0 || right == f && f == n), "{:?}", o.by_opener);
        let shares: Vec<Shares> =
            SCORED.iter().map(|d| Shares::of(d, &truth_clicks(&sent, d), &measured_clicks(&rows, d))).collect();
        for s in &shares {
            assert_eq!(s.max_error().0, 0.0, "{s:?}");
        }
        let text = render(&shares, &o);
        assert!(text.contains("machine opens judged machine: 100.0%"), "{text}");
        assert!(!text.contains("MISSED"), "{text}");
        let lines = result_lines("c", "clickhouse", &shares, &o);
        assert!(lines.lines().all(|l| l.starts_with("score_result")), "{lines}");
    }

    #[test]
    fn a_shifted_share_is_the_error() {
        let truth: BTreeMap<String, u64> = [("DE".to_owned(), 50), ("US".to_owned(), 50)].into();
        let measured: BTreeMap<String, u64> = [("DE".to_owned(), 47), ("US".to_owned(), 50), ("".to_owned(), 3)].into();
        let s = Shares::of("country", &truth, &measured);
        let (err, worst) = s.max_error();
        assert!((err - 3.0).abs() < 1e-9, "{err}");
        assert!(worst == "DE" || worst.is_empty(), "{worst}");
    }
}
