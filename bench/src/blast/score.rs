//! Scoring a blast: every request of the truth file is matched to the event
//! the aggregator stored for it, and the verdicts are tallied against the
//! labels.
//!
//! The join. The edge stores neither the query string nor anything the
//! sender can choose per request, so a request is found again by what the
//! event does keep: the link, the recipient (every message has its own
//! recipient id, carried by the signed token), the HTTP method, and the
//! client's /24. Within one (link, recipient, method) the k-th request sent
//! is the k-th event stored, in time order, preferring an event from the same
//! /24: two requests for the same link and recipient a few hundred
//! milliseconds apart (a gateway's time-of-click check, then the person) come
//! from different networks, so a reordering on the wire cannot swap their labels.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::model::{Actor, Kind};
use super::networks::NetKind;
use super::truth::Sent;

/// One event as stored in `click_events`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Stored {
    pub event_id: String,
    pub event_time_ms: i64,
    pub link_id: String,
    pub recipient_id: String,
    pub http_method: String,
    pub client_ip: String,
    pub is_human: u8,
    pub verdict_reason: String,
    /// What the aggregator computed from the token (absent before v3).
    #[serde(default)]
    pub seconds_since_send: Option<f64>,
}

/// A request of the truth with the verdict it got.
#[derive(Debug)]
pub struct Judged<'a> {
    pub sent: &'a Sent,
    pub flagged: bool,
    pub reason: &'a str,
    pub stored_since_send: Option<f64>,
}

pub struct Matched<'a> {
    pub judged: Vec<Judged<'a>>,
    /// Sent and answered, but no event found.
    pub missing: Vec<&'a Sent>,
    /// Events of the blast's client that match no request.
    pub extra: usize,
}

/// Stored events by (link, recipient, method), each with whether it is matched yet.
type ByKey<'a> = HashMap<(&'a str, &'a str, &'a str), Vec<(&'a Stored, bool)>>;

fn slash24(ip: &str) -> &str {
    ip.rsplit_once('.').map_or(ip, |(net, _)| net)
}

/// Matches stored events to the requests sent (see the module doc).
pub fn match_events<'a>(sent: &'a [Sent], stored: &'a [Stored]) -> Matched<'a> {
    let mut events: ByKey = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for e in stored {
        if !seen.insert(e.event_id.as_str()) {
            continue; // a duplicate row not merged away yet
        }
        events.entry((&e.link_id, &e.recipient_id, &e.http_method)).or_default().push((e, false));
    }
    for list in events.values_mut() {
        list.sort_by_key(|(e, _)| e.event_time_ms);
    }
    let mut order: Vec<&Sent> = sent.iter().collect();
    order.sort_by_key(|s| s.sent_ms);
    let mut judged = Vec::new();
    let mut missing = Vec::new();
    for s in order {
        let ip = s.request.ip.to_string();
        let list = events.get_mut(&(s.link_id.as_str(), s.request.recipient.as_str(), s.request.method.as_str()));
        let pick = list.and_then(|list| {
            let same_net = list.iter().position(|(e, used)| !used && slash24(&e.client_ip) == slash24(&ip));
            let i = same_net.or_else(|| list.iter().position(|(_, used)| !used))?;
            list[i].1 = true;
            Some(list[i].0)
        });
        match pick {
            Some(e) => judged.push(Judged {
                sent: s,
                flagged: e.is_human == 0,
                reason: &e.verdict_reason,
                stored_since_send: e.seconds_since_send,
            }),
            None => missing.push(s),
        }
    }
    let extra = events.values().flatten().filter(|(_, used)| !used).count();
    Matched { judged, missing, extra }
}

/// Flagged out of total, per row.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub total: u64,
    pub flagged: u64,
    pub reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, j: &Judged) {
        self.total += 1;
        if j.flagged {
            self.flagged += 1;
        }
        *self.reasons.entry(j.reason.to_owned()).or_default() += 1;
    }
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.flagged as f64 / self.total as f64
        }
    }
    /// The reasons that decided, most frequent first: `burst 120, head 30`.
    fn top(&self, flagged_side: bool, n: usize) -> String {
        let mut v: Vec<(&String, &u64)> = self
            .reasons
            .iter()
            .filter(|(r, _)| (r.as_str() != "human" && r.as_str() != "allow_listed") == flagged_side)
            .collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().take(n).map(|(r, c)| format!("{r} {c}")).collect::<Vec<_>>().join(", ")
    }
}

/// What the API reported for the blast's client.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiTotals {
    pub human_clicks: u64,
    pub unique_human_recipients: u64,
}

/// Every table of a blast's score.
pub struct Report {
    pub by_actor: BTreeMap<Actor, Tally>,
    pub by_row: BTreeMap<String, Tally>,
    pub by_bucket: BTreeMap<(usize, Actor), Tally>,
    pub truth_human_clicks: u64,
    pub truth_unique_humans: u64,
    /// Human verdicts among the stored events of the blast (what ClickHouse says).
    pub stored_human_clicks: u64,
    pub stored_unique_humans: u64,
    pub api: Option<ApiTotals>,
    pub missing: usize,
    pub extra: usize,
    /// Requests whose `seconds_since_send` as stored differs from the truth by more than 2 s.
    pub since_send_off: u64,
    pub since_send_known: u64,
    /// The misjudged requests (scanners judged human, people flagged), each
    /// with its recipient's other requests of the campaign: what a rule
    /// would have had to go on.
    pub misjudged: Vec<String>,
}

/// Misjudged requests listed at most (the tallies count them all).
const MISJUDGED_LISTED: usize = 40;

/// One request on one line: who sent it, how, from where, when, and the verdict.
fn describe(j: &Judged) -> String {
    let q = &j.sent.request;
    let actor = match q.actor {
        Actor::Human => "human",
        Actor::Scanner => "scanner",
        Actor::Proxy => "proxy",
    };
    let kind = format!("{:?}", q.kind).to_lowercase();
    let ua: String = q.headers.user_agent.as_deref().unwrap_or("-").chars().take(48).collect();
    format!(
        "+{:>6.0}s {actor:<7} {:<10} {kind:<11} link {}{} {} {:<9} {:<15} accept-language {} ua {ua:?}: {}",
        q.since_send_ms as f64 / 1000.0,
        q.vendor.map_or("-", |v| v.as_str()),
        q.link,
        if q.honeypot { " (honeypot)" } else { "" },
        q.method.as_str(),
        net_label(q.net),
        q.ip,
        if q.headers.accept_language.is_some() { "yes" } else { "no" },
        j.reason,
    )
}

fn misjudged(m: &Matched) -> Vec<String> {
    let mut by_recipient: HashMap<(&str, &str), Vec<&Judged>> = HashMap::new();
    for j in &m.judged {
        by_recipient.entry((&j.sent.campaign_id, &j.sent.request.recipient)).or_default().push(j);
    }
    let wrong = |j: &&Judged| j.flagged == (j.sent.request.actor == Actor::Human);
    let mut out = Vec::new();
    for j in m.judged.iter().filter(wrong).take(MISJUDGED_LISTED) {
        let q = &j.sent.request;
        out.push(format!("{} · {} of {}", describe(j), q.recipient, j.sent.campaign_id));
        let mut others = by_recipient[&(j.sent.campaign_id.as_str(), q.recipient.as_str())].clone();
        others.sort_by_key(|o| o.sent.request.since_send_ms);
        for o in others.into_iter().filter(|o| !std::ptr::eq(*o, j)) {
            out.push(format!("    {}", describe(o)));
        }
    }
    out
}

fn net_label(k: NetKind) -> &'static str {
    k.as_str()
}

pub fn report(m: &Matched, stored: &[Stored], api: Option<ApiTotals>) -> Report {
    let mut by_actor: BTreeMap<Actor, Tally> = BTreeMap::new();
    let mut by_row: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_bucket: BTreeMap<(usize, Actor), Tally> = BTreeMap::new();
    let (mut since_send_off, mut since_send_known) = (0, 0);
    for j in &m.judged {
        let q = &j.sent.request;
        by_actor.entry(q.actor).or_default().add(j);
        let bucket = super::BUCKETS
            .iter()
            .position(|(name, _)| *name == super::bucket(q.since_send_ms))
            .expect("bucket() names a bucket");
        by_bucket.entry((bucket, q.actor)).or_default().add(j);
        let mut rows = Vec::new();
        match q.actor {
            Actor::Scanner | Actor::Proxy => {
                let vendor = q.vendor.map_or("?", |v| v.as_str());
                rows.push(format!("scanner  {vendor}"));
                let kind = match q.kind {
                    Kind::Sweep => "sweep",
                    Kind::Rescan => "re-scan",
                    Kind::TimeOfClick => "time-of-click check",
                    Kind::Click | Kind::Open => "?",
                };
                rows.push(format!("scanner  · {kind}"));
                if q.browser_identical {
                    rows.push("scanner  · browser-identical headers".into());
                }
                if q.honeypot {
                    rows.push("scanner  · on the honeypot link".into());
                } else if q.method.as_str() == "GET" {
                    rows.push("scanner  · GET on a visible link".into());
                }
                rows.push(format!("scanner  · from {}", net_label(q.net)));
            }
            Actor::Human => {
                rows.push(format!("human    on {}", net_label(q.net)));
                if q.behind_gateway {
                    rows.push(format!("human    · behind {}", q.vendor.map_or("?", |v| v.as_str())));
                }
                if q.since_send_ms < 60_000 {
                    rows.push("human    · within 60 s of the send".into());
                }
                if q.single_link {
                    rows.push("human    · single-link email".into());
                }
            }
        }
        for r in rows {
            by_row.entry(r).or_default().add(j);
        }
        if let Some(s) = j.stored_since_send {
            since_send_known += 1;
            if (s - q.since_send_ms as f64 / 1000.0).abs() > 2.0 {
                since_send_off += 1;
            }
        }
    }
    let humans: Vec<&Sent> = m
        .judged
        .iter()
        .map(|j| j.sent)
        .chain(m.missing.iter().copied())
        .filter(|s| s.request.actor == Actor::Human)
        .collect();
    let truth_unique_humans =
        humans.iter().map(|s| s.request.recipient.as_str()).collect::<std::collections::HashSet<_>>().len() as u64;
    let mut seen = std::collections::HashSet::new();
    let human_events: Vec<&Stored> = stored.iter().filter(|e| seen.insert(&e.event_id) && e.is_human == 1).collect();
    let stored_unique_humans = human_events
        .iter()
        .filter(|e| !e.recipient_id.is_empty())
        .map(|e| e.recipient_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    Report {
        by_actor,
        by_row,
        by_bucket,
        truth_human_clicks: humans.len() as u64,
        truth_unique_humans,
        stored_human_clicks: human_events.len() as u64,
        stored_unique_humans,
        api,
        missing: m.missing.len(),
        extra: m.extra,
        since_send_off,
        since_send_known,
        misjudged: misjudged(m),
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn err(got: u64, truth: u64) -> f64 {
    if truth == 0 {
        return if got == 0 { 0.0 } else { f64::INFINITY };
    }
    (got as f64 - truth as f64) / truth as f64
}

/// The goals of issue 8.
pub const SCANNER_FLAGGED_GOAL: f64 = 0.95;
pub const HUMAN_FLAGGED_GOAL: f64 = 0.01;
pub const TOTALS_ERROR_GOAL: f64 = 0.05;

impl Report {
    pub fn scanner_flagged(&self) -> f64 {
        self.by_actor.get(&Actor::Scanner).map_or(0.0, Tally::share)
    }
    pub fn human_flagged(&self) -> f64 {
        self.by_actor.get(&Actor::Human).map_or(0.0, Tally::share)
    }
    pub fn api_errors(&self) -> Option<(f64, f64)> {
        self.api.map(|a| {
            (err(a.human_clicks, self.truth_human_clicks), err(a.unique_human_recipients, self.truth_unique_humans))
        })
    }

    /// The tables, as printed.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let get = |a| self.by_actor.get(&a).cloned().unwrap_or_default();
        let (s, h) = (get(Actor::Scanner), get(Actor::Human));
        let _ = writeln!(o, "confusion matrix (requests)      judged bot   judged human");
        let _ = writeln!(o, "  scanner {:>8}               {:>10}   {:>12}", s.total, s.flagged, s.total - s.flagged);
        let _ = writeln!(o, "  human   {:>8}               {:>10}   {:>12}", h.total, h.flagged, h.total - h.flagged);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<44} {:>7} {:>7} {:>7}  why flagged",
            "by vendor / network / case", "reqs", "flagged", "share"
        );
        for (row, t) in &self.by_row {
            let _ =
                writeln!(o, "  {:<42} {:>7} {:>7} {:>7}  {}", row, t.total, t.flagged, pct(t.share()), t.top(true, 3));
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<12} {:>9} {:>9}  {:>9} {:>9}", "since send", "scanner", "flagged", "human", "flagged");
        for (i, (name, _)) in super::BUCKETS.iter().enumerate() {
            let s = self.by_bucket.get(&(i, Actor::Scanner)).cloned().unwrap_or_default();
            let h = self.by_bucket.get(&(i, Actor::Human)).cloned().unwrap_or_default();
            let _ = writeln!(
                o,
                "  {:<10} {:>9} {:>9}  {:>9} {:>9}",
                name,
                s.total,
                pct(s.share()),
                h.total,
                pct(h.share())
            );
        }
        let _ = writeln!(o);
        let mut reasons: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (a, t) in &self.by_actor {
            for (r, c) in &t.reasons {
                let e = reasons.entry(r).or_default();
                if *a == Actor::Scanner {
                    e.0 += c;
                } else {
                    e.1 += c;
                }
            }
        }
        let _ = writeln!(o, "{:<22} {:>9} {:>9}", "verdict reason", "scanner", "human");
        for (r, (sc, hu)) in reasons {
            let _ = writeln!(o, "  {:<20} {:>9} {:>9}", r, sc, hu);
        }
        let _ = writeln!(o);
        let goal = |ok: bool| if ok { "met" } else { "MISSED" };
        let _ = writeln!(
            o,
            "scanner requests flagged: {} (goal >= {}: {})",
            pct(self.scanner_flagged()),
            pct(SCANNER_FLAGGED_GOAL),
            goal(self.scanner_flagged() >= SCANNER_FLAGGED_GOAL)
        );
        let _ = writeln!(
            o,
            "human clicks flagged:     {} (goal <= {}: {})",
            pct(self.human_flagged()),
            pct(HUMAN_FLAGGED_GOAL),
            goal(self.human_flagged() <= HUMAN_FLAGGED_GOAL)
        );
        let _ = writeln!(
            o,
            "human clicks:             truth {}, ClickHouse {} ({:+.1}%)",
            self.truth_human_clicks,
            self.stored_human_clicks,
            100.0 * err(self.stored_human_clicks, self.truth_human_clicks)
        );
        let _ = writeln!(
            o,
            "unique human recipients:  truth {}, ClickHouse {} ({:+.1}%)",
            self.truth_unique_humans,
            self.stored_unique_humans,
            100.0 * err(self.stored_unique_humans, self.truth_unique_humans)
        );
        match (self.api, self.api_errors()) {
            (Some(a), Some((ec, eu))) => {
                let _ = writeln!(
                    o,
                    "API human clicks:         {} ({:+.1}%, goal within 5%: {})",
                    a.human_clicks,
                    100.0 * ec,
                    goal(ec.abs() <= TOTALS_ERROR_GOAL)
                );
                let _ = writeln!(
                    o,
                    "API unique human recip.:  {} ({:+.1}%, goal within 5%: {})",
                    a.unique_human_recipients,
                    100.0 * eu,
                    goal(eu.abs() <= TOTALS_ERROR_GOAL)
                );
            }
            _ => {
                let _ = writeln!(o, "API totals: not read");
            }
        }
        let _ = writeln!(
            o,
            "unmatched: {} requests without an event, {} events without a request; seconds_since_send off by > 2 s: {} of {}",
            self.missing, self.extra, self.since_send_off, self.since_send_known
        );
        if !self.misjudged.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "misjudged requests (at most {MISJUDGED_LISTED}), each with its recipient's others:");
            for line in &self.misjudged {
                let _ = writeln!(o, "  {line}");
            }
        }
        o
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::blast::model::{plan, Params};

    /// The clicks of a plan as sent (opens are scored apart, `breakdown`).
    fn sent_of(p: &crate::blast::model::Plan) -> Vec<Sent> {
        as_sent(p.requests.iter().filter(|q| !q.is_open()))
    }

    /// Requests as the replay would record them, answered as the edge does.
    pub(crate) fn as_sent<'a>(requests: impl Iterator<Item = &'a crate::blast::model::Request>) -> Vec<Sent> {
        requests
            .enumerate()
            .map(|(i, q)| Sent {
                client_id: "c".into(),
                campaign_id: q.campaign.as_str().into(),
                link_id: format!("{}{}", q.campaign.as_str(), q.link),
                code: "x".into(),
                request: q.clone(),
                token_sent_at_ms: 0,
                sent_ms: 1_000_000 + q.since_send_ms + i as i64 % 3,
                status: if q.is_open() { 200 } else { 302 },
            })
            .collect()
    }

    /// Stored events as a verdict function would leave them.
    fn stored_of(sent: &[Sent], verdict: impl Fn(&Sent) -> &'static str) -> Vec<Stored> {
        sent.iter()
            .enumerate()
            .map(|(i, s)| {
                let reason = verdict(s);
                let ip = s.request.ip.octets();
                Stored {
                    event_id: format!("e{i}"),
                    event_time_ms: s.sent_ms + 3,
                    link_id: s.link_id.clone(),
                    recipient_id: s.request.recipient.clone(),
                    http_method: s.request.method.as_str().into(),
                    client_ip: format!("{}.{}.{}.0", ip[0], ip[1], ip[2]),
                    is_human: u8::from(reason == "human"),
                    verdict_reason: reason.into(),
                    seconds_since_send: Some(s.request.since_send_ms as f64 / 1000.0),
                }
            })
            .collect()
    }

    #[test]
    fn a_perfect_verdict_scores_perfectly_and_every_request_is_matched() {
        let p = plan(&Params { recipients: 400, scanner_share: 0.5, ..Params::default() });
        let sent = sent_of(&p);
        let mut stored = stored_of(&sent, |s| if s.request.actor == Actor::Human { "human" } else { "burst" });
        stored.reverse(); // the order ClickHouse returns rows in does not matter
        let m = match_events(&sent, &stored);
        assert_eq!((m.missing.len(), m.extra, m.judged.len()), (0, 0, sent.len()));
        for j in &m.judged {
            assert_eq!(j.flagged, j.sent.request.actor == Actor::Scanner, "{:?}", j.sent.request);
        }
        let truth_humans = sent.iter().filter(|s| s.request.actor == Actor::Human).count() as u64;
        let r = report(&m, &stored, Some(ApiTotals { human_clicks: truth_humans, unique_human_recipients: 0 }));
        assert_eq!((r.scanner_flagged(), r.human_flagged()), (1.0, 0.0));
        assert_eq!(r.stored_human_clicks, truth_humans);
        assert_eq!(r.stored_unique_humans, r.truth_unique_humans);
        assert_eq!(r.api_errors().unwrap(), (0.0, -1.0));
        assert_eq!(r.since_send_off, 0);
        assert!(r.render().contains("scanner requests flagged: 100.0% (goal >= 95.0%: met)"), "{}", r.render());
        assert!(r.misjudged.is_empty(), "{:?}", r.misjudged);
    }

    #[test]
    fn a_verdict_that_only_catches_head_shows_what_it_misses() {
        let p = plan(&Params { recipients: 400, scanner_share: 0.5, ..Params::default() });
        let sent = sent_of(&p);
        let stored = stored_of(&sent, |s| if s.request.method.as_str() == "HEAD" { "head" } else { "human" });
        let m = match_events(&sent, &stored);
        let r = report(&m, &stored, None);
        let scanners = sent.iter().filter(|s| s.request.actor == Actor::Scanner).count() as f64;
        let heads = sent.iter().filter(|s| s.request.method.as_str() == "HEAD").count() as f64;
        assert!((r.scanner_flagged() - heads / scanners).abs() < 1e-9);
        assert_eq!(r.human_flagged(), 0.0);
        assert!(r.stored_human_clicks > r.truth_human_clicks, "scanners' GETs count as human");
        let text = r.render();
        assert!(text.contains("MISSED"), "{text}");
        assert!(text.contains("scanner  · browser-identical headers"), "{text}");
        // Each missed scanner request is listed with the recipient's others:
        // here a GET judged human, followed by its sweep's HEAD judged head.
        let first = r.misjudged.first().expect("the missed scanners are listed");
        assert!(first.contains(" scanner ") && (first.ends_with("of main") || first.ends_with("of single")), "{first}");
        assert!(r.misjudged.iter().filter(|l| !l.starts_with("    ")).count() <= MISJUDGED_LISTED);
        assert!(r.misjudged.iter().any(|l| l.starts_with("    ") && l.ends_with(": head")), "{text}");
        assert!(text.contains("misjudged requests"), "{text}");
    }

    #[test]
    fn lost_and_unexpected_events_are_counted_and_a_reordering_within_a_key_keeps_labels_by_network() {
        let p = plan(&Params { recipients: 300, scanner_share: 0.9, ..Params::default() });
        let mut sent = sent_of(&p);
        // A time-of-click check and the person's click on the same link, 1 ms apart:
        let toc = sent.iter().position(|s| s.request.kind == Kind::TimeOfClick).expect("a time-of-click check");
        let human = sent
            .iter()
            .position(|s| {
                s.request.actor == Actor::Human
                    && s.request.recipient == sent[toc].request.recipient
                    && s.link_id == sent[toc].link_id
            })
            .expect("its click");
        sent[human].sent_ms = sent[toc].sent_ms + 1;
        let mut stored =
            stored_of(&sent, |s| if s.request.actor == Actor::Human { "human" } else { "scanner_network" });
        // …stored in the opposite order.
        stored[human].event_time_ms = stored[toc].event_time_ms - 5;
        let lost = stored.remove(0);
        stored.push(Stored { event_id: "stray".into(), ..lost.clone() });
        stored.push(Stored { event_id: "e1".into(), ..stored[0].clone() }); // a duplicate row
        let m = match_events(&sent, &stored);
        assert_eq!(m.missing.len(), 0, "the stray row takes the lost one's place");
        let stored2: Vec<Stored> = stored.iter().filter(|e| e.event_id != "stray").cloned().collect();
        let m2 = match_events(&sent, &stored2);
        assert_eq!((m2.missing.len(), m2.extra), (1, 0));
        for j in &m2.judged {
            assert_eq!(j.flagged, j.sent.request.actor == Actor::Scanner);
        }
    }
}
