//! The verdict on one click: human or machine, and the rule that decided it.
//!
//! Two layers:
//!
//! - [`per_request`]: what a single event's signals (recorded by the edge, see
//!   `ricochet_schemas::Signals`) say on their own.
//! - [`Verdicts`]: the per-message rules, over the recipient's clicks on the
//!   campaign and the campaign's clicks from one network. A pure state
//!   machine: events go in with the time they arrived, decided events come out
//!   once their verdict can no longer change, in offset order per partition
//!   (a decided event behind an undecided one waits), so the pipeline can
//!   store positions that cover only decided events.
//!
//! The rules, first match wins (`docs/bot-detection.md` explains the numbers):
//!
//! 1. a per-request machine verdict (honeypot hit, HEAD, prefetch header,
//!    preview/bot/HTTP-client user agent, scanner referer, scanner network);
//! 2. **honeypot**: the recipient hit a honeypot link of the campaign within
//!    [`Rules::honeypot_window`] of this click from the same network (the
//!    ASN), or within [`Rules::burst_window`] from any network;
//! 3. **burst**: the recipient's clicks from one network cover at least
//!    [`Rules::burst_min_links`] distinct links within [`Rules::burst_window`];
//! 4. **head**, for a GET: the same network sent a HEAD for the same link of
//!    the message with the same user agent within [`Rules::burst_window`]
//!    (a scanner checking, then fetching; a browser never sends HEAD, and
//!    Office's own link check has an agent of its own);
//! 5. **rescan**: the same network was already judged a machine for this
//!    recipient and campaign, earlier than the burst window and within
//!    [`Rules::rescan_window`]; or a *bare* request (the weak evidence of
//!    rule 7) from a cloud network on a message some network was already
//!    judged a machine for, within the same window (a gateway re-checking a
//!    link later from a sandbox elsewhere than its first sweep);
//! 6. **network fan-out**: one network (the anonymized /24 or /48, else the
//!    ASN) clicked for at least [`Rules::fanout_min_recipients`] distinct
//!    recipients of the campaign within [`Rules::fanout_window`];
//! 7. **too fast after send**: within [`Rules::too_fast`] of the signed send
//!    time *and* with weak evidence (a browser user agent without
//!    Accept-Language, or no Accept header). Time alone never
//!    convicts: people do click within a minute of delivery.
//!
//! A client's allow-listed network overrides the network-only evidence (scanner
//! network, rescan, fan-out), never a user agent, a HEAD, a burst or a
//! honeypot.
//!
//! Rules 3–6 need the click's network: a loopback or private address (an edge
//! behind a proxy that does not pass the client's address on) has none.
//!
//! What a verdict can see: the events of its partition from the last
//! [`Rules::context_window`] (rescan marks for [`Rules::rescan_window`]) that
//! this member read. After an assignment the context starts empty: verdicts of
//! the first seconds may miss earlier evidence (a bounded loss of verdict
//! quality, never of counts).

use std::collections::VecDeque;

// Keys here are hashes already (`hash_of`) or partition numbers.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::Duration;

use ricochet_schemas::{ClickEvent, EventType, NetworkClass, Reason, UaClass};
use ricochet_signals::dimensions::{Fetcher, MailClient};

/// The verdict one event's own signals give, first matching rule wins. Opens
/// are judged by the same rules (a scanner fetches pixels too).
pub fn per_request(event: &ClickEvent) -> Reason {
    let s = &event.signals;
    if s.honeypot {
        return Reason::Honeypot;
    }
    if is_head(event) {
        return Reason::Head;
    }
    if s.prefetch_header {
        return Reason::PrefetchHeader;
    }
    match s.ua_class {
        UaClass::Preview => return Reason::PreviewFetcher,
        UaClass::Bot => return Reason::BotUserAgent,
        UaClass::HttpClient | UaClass::Absent => return Reason::HttpClient,
        UaClass::Browser => {}
        // v1/v2 events: the edge's own prefetch flag is all there is.
        UaClass::Unknown if event.is_prefetch => return Reason::PreviewFetcher,
        UaClass::Unknown => {}
    }
    if s.network_allow_listed {
        return Reason::AllowListed;
    }
    if s.scanner_referer {
        return Reason::ScannerReferer;
    }
    if s.network_class == NetworkClass::Scanner {
        return Reason::ScannerNetwork;
    }
    Reason::Human
}

/// Apple's own networks (AS714, AS6185: Apple Inc., per the RIRs' whois),
/// from which Mail Privacy Protection's proxies fetch images.
pub const APPLE_ASNS: [u32; 2] = [714, 6185];

/// The verdict on an open from who fetched the pixel and the request's own
/// signals; an open this calls human is then judged by the sweep around it
/// as clicks are (`PartitionState::judge`), unless a provider's proxy
/// fetched it.
///
/// - Apple Mail Privacy Protection loads every image of a message delivered
///   to Apple Mail, read or not, through Apple's proxies: a machine open
///   (`apple_privacy`), recognised by the proxy's bare user agent, or by an
///   Apple Mail user agent from Apple's own networks.
/// - Gmail's and Yahoo's image proxies fetch when the reader opens the
///   message (Gmail caches it after, so it is one open per recipient): a
///   person's open, though their user agents read as preview fetchers.
/// - A mail app loading the images of the message its reader opened
///   (Outlook's "Microsoft Office/16.0 … Microsoft Outlook" agent, Outlook
///   for iOS and Android): a person's open. On a click the same agents are
///   the app previewing a link, so the edge's signals call them preview
///   fetchers (or bots, by isbot's generic patterns); a pixel is only
///   fetched when the message is shown.
/// - Everything else as a click's own signals say (a scanner network, a
///   HEAD, a prefetch header, a bot...), reported by group
///   ([`ricochet_schemas::MachineOpen`]).
pub fn per_open(event: &ClickEvent, fetcher: Fetcher) -> Reason {
    if fetcher.client == MailClient::AppleMail && (fetcher.proxy || APPLE_ASNS.contains(&event.signals.asn)) {
        return Reason::ApplePrivacy;
    }
    let own = per_request(event);
    let reader_app = fetcher.proxy || fetcher.client != MailClient::Other;
    if reader_app && matches!(own, Reason::PreviewFetcher | Reason::BotUserAgent) {
        return Reason::Human;
    }
    own
}

/// The per-message rules' thresholds. [`Rules::with_delay`] gives the defaults.
#[derive(Clone, Debug)]
pub struct Rules {
    /// How long an event waits for the clicks that may change its verdict.
    pub delay: Duration,
    /// Several distinct links of one message from one network within this…
    pub burst_window: Duration,
    /// …this many links at least, is a burst.
    pub burst_min_links: usize,
    /// A honeypot hit voids the recipient's clicks on the campaign from its
    /// own network this close (from any network: within `burst_window`)
    /// to it, before (as far as they are still undecided) and after.
    pub honeypot_window: Duration,
    /// A network judged a machine for a message stays suspect this long.
    pub rescan_window: Duration,
    /// One network clicking for this many recipients of a campaign…
    pub fanout_min_recipients: usize,
    /// …within this window, is a fan-out.
    pub fanout_window: Duration,
    /// Weak evidence this soon after the send convicts.
    pub too_fast: Duration,
    /// Rescan marks kept per partition at most (oldest forgotten first).
    pub max_rescan_marks: usize,
}

impl Rules {
    pub const DEFAULT_DELAY: Duration = Duration::from_secs(10);

    pub fn with_delay(delay: Duration) -> Rules {
        Rules {
            delay,
            burst_window: Duration::from_secs(2),
            burst_min_links: 3,
            honeypot_window: Duration::from_secs(30),
            rescan_window: Duration::from_secs(6 * 3600),
            fanout_min_recipients: 5,
            fanout_window: Duration::from_secs(10),
            too_fast: Duration::from_secs(60),
            max_rescan_marks: 200_000,
        }
    }

    /// How far back a verdict looks at other events.
    pub fn context_window(&self) -> Duration {
        self.burst_window.max(self.honeypot_window).max(self.fanout_window) + self.delay
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::with_delay(Rules::DEFAULT_DELAY)
    }
}

/// An event whose verdict is final, or a message set aside (`event: None`),
/// which only moves the partition's position.
#[derive(Debug)]
pub struct Decided<T> {
    pub partition: i32,
    pub offset: i64,
    pub event: Option<(ClickEvent, T, Reason)>,
}

/// How far ahead of the aggregator's clock an event time may be and still
/// move the verdict clock (`docs/bot-detection.md`).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(5);

/// The per-message verdict engine. `T` rides along with each event (the
/// pipeline's rollup bucket).
#[derive(Debug)]
pub struct Verdicts<T> {
    rules: Rules,
    partitions: HashMap<i32, PartitionState<T>>,
}

#[derive(Debug)]
struct Held<T> {
    offset: i64,
    arrived_ms: i64,
    /// The event time, or the partition's newest event time when it arrived if
    /// later (a late event waits for what comes *after* it, not before).
    effective_ms: i64,
    item: Option<(ClickEvent, T)>,
    keys: Keys,
}

/// An event's identities in this engine, hashed once when it arrives and
/// used again when it is judged.
#[derive(Clone, Copy, Debug, Default)]
struct Keys {
    message: Option<u64>,
    campaign: u64,
    network: Option<u64>,
    sweep: Option<u64>,
}

impl Keys {
    fn of(e: &ClickEvent) -> Self {
        let network = network_key(e);
        Keys { message: message_key(e), campaign: campaign_key(e), network, sweep: sweep_key(e, network) }
    }
}

/// One click of a campaign from one network: (event time, recipient, offset).
type NetworkClick = (i64, u64, i64);

/// What a verdict remembers of one event.
#[derive(Clone, Copy, Debug)]
struct Seen {
    offset: i64,
    time_ms: i64,
    link: u64,
    network: Option<u64>,
    honeypot: bool,
    /// For a HEAD: its user agent (hashed), to pair it with the GET after it.
    head_agent: Option<u64>,
}

/// The network half of a rescan mark meaning "any network": the message was
/// judged a machine from somewhere.
const ANY_NETWORK: u64 = u64::MAX;

fn is_head(e: &ClickEvent) -> bool {
    e.http_method.eq_ignore_ascii_case("HEAD")
}

fn agent_key(e: &ClickEvent) -> u64 {
    hash_of(e.user_agent.as_deref().unwrap_or(""))
}

/// What the request itself lacks: a browser's agent without its
/// Accept-Language, or no Accept header at all. Weak alone (privacy tools
/// strip headers); it convicts only with other evidence.
fn bare(s: &ricochet_schemas::Signals) -> bool {
    (s.ua_class == UaClass::Browser && !s.has_accept_language) || !s.has_accept
}

#[derive(Debug)]
struct PartitionState<T> {
    held: VecDeque<Held<T>>,
    /// Newest event time read from the partition.
    watermark_ms: i64,
    /// Recent clicks per message (client, campaign, recipient).
    messages: HashMap<u64, Vec<Seen>>,
    /// Recent clicks per (campaign, network): (time, recipient, offset).
    networks: HashMap<(u64, u64), VecDeque<NetworkClick>>,
    /// (message, network) judged a machine: (event time, offset), oldest first.
    rescan: HashMap<(u64, u64), (i64, i64)>,
    rescan_order: VecDeque<((u64, u64), i64)>,
    pruned_at_ms: i64,
}

impl<T> Default for PartitionState<T> {
    fn default() -> Self {
        PartitionState {
            held: VecDeque::new(),
            watermark_ms: i64::MIN,
            messages: HashMap::new(),
            networks: HashMap::new(),
            rescan: HashMap::new(),
            rescan_order: VecDeque::new(),
            pruned_at_ms: i64::MIN,
        }
    }
}

/// The identity of a message, link, recipient or network in this engine's
/// memory: a 64-bit hash, so that state per click is a few words, not
/// strings. foldhash's quality variant: several per event, and a collision
/// (about one in 2^64 per pair) would only merge two keys' evidence.
fn hash_of<H: Hash + ?Sized>(value: &H) -> u64 {
    foldhash::quality::FixedState::with_seed(0x5ca1ab1e).hash_one(value)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The message a click belongs to: (client, campaign, recipient).
fn message_key(e: &ClickEvent) -> Option<u64> {
    let r = e.recipient_id.as_ref()?;
    Some(hash_of(&(e.client_id.as_str(), e.campaign_id.as_str(), r.as_str())))
}

fn campaign_key(e: &ClickEvent) -> u64 {
    hash_of(&(e.client_id.as_str(), e.campaign_id.as_str()))
}

/// The network a click came from: the anonymized address (/24 or /48) when
/// there is one, else the ASN. `None` for a loopback or private address: the
/// edge then sits behind a proxy that does not pass the client's address on,
/// every click shares it, and it says nothing about who clicked.
fn network_key(e: &ClickEvent) -> Option<u64> {
    if let Some(ip) = e.client_ip.as_deref().filter(|ip| !ip.is_empty()) {
        if ip.parse::<IpAddr>().is_ok_and(|a| !is_public(a)) {
            return None;
        }
        return Some(hash_of(&("ip", ip)));
    }
    (e.signals.asn != 0).then(|| hash_of(&("asn", e.signals.asn)))
}

fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()),
        // fc00::/7 unique local, fe80::/10 link local.
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80)
        }
    }
}

/// The network a sweep over one message comes from: scanners rotate
/// addresses inside their own ASN, so the ASN when known.
fn sweep_key(e: &ClickEvent, network: Option<u64>) -> Option<u64> {
    let known = network?;
    if e.signals.asn != 0 {
        return Some(hash_of(&("asn", e.signals.asn)));
    }
    Some(known)
}

impl<T> Verdicts<T> {
    pub fn new(rules: Rules) -> Self {
        Verdicts { rules, partitions: HashMap::new() }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Events waiting for their verdict.
    pub fn num_held(&self) -> usize {
        self.partitions.values().map(|p| p.held.len()).sum()
    }

    /// Takes the message at `offset` (offsets arrive in order per partition);
    /// `None` for one set aside. `now_ms`: wall-clock time of arrival.
    pub fn push(&mut self, partition: i32, offset: i64, item: Option<(ClickEvent, T)>, now_ms: i64) {
        let p = self.partitions.entry(partition).or_default();
        let (effective_ms, keys) = match &item {
            Some((e, _)) => {
                // An edge's clock far ahead must not run this partition's
                // verdict clock ahead: it would release held clicks early and
                // prune their context. Past MAX_FUTURE_SKEW the event counts
                // as arriving now (its own time still buckets and judges it).
                let clock_ms = e.event_time_ms.min(now_ms.saturating_add(ms(MAX_FUTURE_SKEW)));
                let eff = clock_ms.max(p.watermark_ms);
                p.watermark_ms = p.watermark_ms.max(clock_ms);
                let keys = Keys::of(e);
                if e.event_type == EventType::Click {
                    p.remember(e, &keys, offset);
                }
                (eff, keys)
            }
            None => (i64::MIN, Keys::default()),
        };
        p.held.push_back(Held { offset, arrived_ms: now_ms, effective_ms, item, keys });
    }

    /// The events whose verdict is final at `now_ms`, oldest first per partition.
    pub fn release(&mut self, now_ms: i64) -> Vec<Decided<T>> {
        let mut out = Vec::new();
        let delay = ms(self.rules.delay);
        for (&partition, p) in &mut self.partitions {
            while let Some(front) = p.held.front() {
                let ready = front.item.is_none()
                    || now_ms >= front.arrived_ms.saturating_add(delay)
                    || p.watermark_ms >= front.effective_ms.saturating_add(delay);
                if !ready {
                    break;
                }
                let Some(held) = p.held.pop_front() else { break };
                let event = held.item.map(|(e, t)| {
                    let reason = p.judge(&self.rules, &e, &held.keys, held.offset);
                    (e, t, reason)
                });
                out.push(Decided { partition, offset: held.offset, event });
            }
            p.prune(&self.rules, now_ms);
        }
        out
    }

    /// Consumption of `partition` restarts at `stored` (`None`: from the
    /// beginning): everything read from there on is forgotten, held or not,
    /// since it comes again.
    pub fn rewind(&mut self, partition: i32, stored: Option<i64>) {
        let Some(stored) = stored else {
            self.partitions.remove(&partition);
            return;
        };
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.forget_from(stored);
        }
    }

    /// The partition moved to another member: forget it.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

impl<T> PartitionState<T> {
    fn remember(&mut self, e: &ClickEvent, keys: &Keys, offset: i64) {
        let seen = Seen {
            offset,
            time_ms: e.event_time_ms,
            link: hash_of(e.link_id.as_str()),
            network: keys.sweep,
            honeypot: e.signals.honeypot,
            head_agent: is_head(e).then(|| agent_key(e)),
        };
        if let Some(m) = keys.message {
            self.messages.entry(m).or_default().push(seen);
        }
        if let (Some(r), Some(net)) = (&e.recipient_id, keys.network) {
            let q = self.networks.entry((keys.campaign, net)).or_default();
            q.push_back((e.event_time_ms, hash_of(r.as_str()), offset));
        }
    }

    /// The verdict on `e`, from its own signals and what this partition saw.
    fn judge(&mut self, rules: &Rules, e: &ClickEvent, keys: &Keys, offset: i64) -> Reason {
        if e.event_type == EventType::Open {
            // A gateway fetches images inside its sweep of the message's
            // links, often from a cloud sandbox with a browser's agent that
            // its own signals cannot tell from a reader: the sweep around it
            // (burst, honeypot, rescan, fan-out, too fast with weak evidence)
            // convicts it as it does the sweep's clicks. A provider's proxy
            // is exempt: it fetches on behalf of the reader, from networks
            // shared by every reader of that provider. An open never marks a
            // network for rescans: Apple's proxy shares Private Relay's
            // addresses with the people clicking behind it.
            let fetcher = crate::dimensions::pixel_fetcher(e);
            let own = per_open(e, fetcher);
            if own.is_human() && !fetcher.proxy {
                return self.per_message(rules, e, keys, offset).unwrap_or(own);
            }
            return own;
        }
        let own = per_request(e);
        let reason = if own.is_human() { self.per_message(rules, e, keys, offset).unwrap_or(own) } else { own };
        if !reason.is_human() {
            if let (Some(m), Some(net)) = (keys.message, keys.sweep) {
                self.mark_rescan(rules, (m, net), e.event_time_ms, offset);
                self.mark_rescan(rules, (m, ANY_NETWORK), e.event_time_ms, offset);
            }
        }
        reason
    }

    fn per_message(&self, rules: &Rules, e: &ClickEvent, keys: &Keys, offset: i64) -> Option<Reason> {
        let t = e.event_time_ms;
        let allow_listed = e.signals.network_allow_listed;
        if let Some(m) = keys.message {
            let clicks = self.messages.get(&m).map(Vec::as_slice).unwrap_or_default();
            // The hit voids its sweep: clicks from the trap's network within
            // the window, and from any network within the burst window (a
            // sweep with an address per link). A person's own click from the
            // office or a phone, seconds after the gateway's sweep, survives.
            let net = keys.sweep;
            let (hw, bw) = (ms(rules.honeypot_window), ms(rules.burst_window));
            if clicks.iter().any(|s| {
                let apart = (s.time_ms - t).abs();
                s.honeypot && (apart <= bw || (apart <= hw && net.is_some() && s.network == net))
            }) {
                return Some(Reason::Honeypot);
            }
            if let Some(net) = net {
                let same_net: Vec<&Seen> = clicks.iter().filter(|s| s.network == Some(net)).collect();
                if in_burst(&same_net, t, ms(rules.burst_window), rules.burst_min_links) {
                    return Some(Reason::Burst);
                }
            }
            // Hashed only when the message has a HEAD near this click: rare.
            let near_head = |s: &&Seen| s.head_agent.is_some() && s.network == net && (s.time_ms - t).abs() <= bw;
            if net.is_some() && !is_head(e) && clicks.iter().any(|s| near_head(&s)) {
                let (link, agent) = (hash_of(e.link_id.as_str()), agent_key(e));
                if clicks.iter().filter(near_head).any(|s| s.link == link && s.head_agent == Some(agent)) {
                    return Some(Reason::Head);
                }
            }
            let swept = |net: u64| {
                self.rescan.get(&(m, net)).filter(|(_, swept_offset)| *swept_offset < offset).map(|(ms, _)| t - ms)
            };
            if let Some(net) = net.filter(|_| !allow_listed) {
                if let Some(after) = swept(net) {
                    if after > ms(rules.burst_window) && after <= ms(rules.rescan_window) {
                        return Some(Reason::Rescan);
                    }
                }
            }
            // A sandbox elsewhere than the first sweep: only a bare request
            // from a cloud network, so that the person behind the gateway,
            // clicking from home, the office or a VPN with a real browser,
            // stays a person.
            let cloud = e.signals.network_class == NetworkClass::Cloud;
            let within = |after: i64| (0..=ms(rules.rescan_window)).contains(&after);
            if cloud && !allow_listed && bare(&e.signals) && swept(ANY_NETWORK).is_some_and(within) {
                return Some(Reason::Rescan);
            }
        }
        // Fan-out is a sandbox farm's mark: a residential, mobile or office
        // network (class `Other`) with many readers clicking at once is a
        // company reading its mail, which the blasts showed this rule convicting.
        let farm = e.signals.network_class != NetworkClass::Other;
        if let (Some(_), Some(net), false, true) = (&e.recipient_id, keys.network, allow_listed, farm) {
            if let Some(q) = self.networks.get(&(keys.campaign, net)) {
                let fw = ms(rules.fanout_window);
                // Stops at the threshold: a scanner's network can hold
                // thousands of clicks in the window.
                let mut recipients = HashSet::new();
                for (time, r, _) in q {
                    if (time - t).abs() <= fw
                        && recipients.insert(*r)
                        && recipients.len() >= rules.fanout_min_recipients
                    {
                        return Some(Reason::NetworkFanout);
                    }
                }
            }
        }
        if let Some(sent) = e.signals.sent_at_ms {
            let since = t - sent;
            // What the request itself lacks; a cloud network is not enough:
            // the blasts' people on VPNs clicking in the first minute were
            // convicted by it, and scanners there were caught by other rules.
            if (0..ms(rules.too_fast)).contains(&since) && bare(&e.signals) {
                return Some(Reason::TooFastAfterSend);
            }
        }
        None
    }

    fn mark_rescan(&mut self, rules: &Rules, key: (u64, u64), time_ms: i64, offset: i64) {
        // The first machine verdict of a sweep is the one later clicks are measured from.
        if self.rescan.contains_key(&key) {
            return;
        }
        self.rescan.insert(key, (time_ms, offset));
        self.rescan_order.push_back((key, time_ms));
        while self.rescan_order.len() > rules.max_rescan_marks {
            if let Some((old, _)) = self.rescan_order.pop_front() {
                self.rescan.remove(&old);
            }
        }
    }

    /// Forgets context older than the rules can use, at most once a second.
    fn prune(&mut self, rules: &Rules, now_ms: i64) {
        if now_ms < self.pruned_at_ms.saturating_add(1000) {
            return;
        }
        self.pruned_at_ms = now_ms;
        // Event time, so that a replay of old events keeps its own context.
        let newest = self.watermark_ms;
        let horizon = newest.saturating_sub(ms(rules.context_window()));
        let oldest_held = self.held.front().map_or(i64::MAX, |h| h.offset);
        let keep = |time_ms: i64, offset: i64| time_ms >= horizon || offset >= oldest_held;
        self.messages.retain(|_, v| {
            v.retain(|s| keep(s.time_ms, s.offset));
            !v.is_empty()
        });
        self.networks.retain(|_, q| {
            q.retain(|(time, _, offset)| keep(*time, *offset));
            !q.is_empty()
        });
        let rescan_horizon = newest.saturating_sub(ms(rules.rescan_window));
        while let Some((key, time_ms)) = self.rescan_order.front().copied() {
            if time_ms >= rescan_horizon {
                break;
            }
            self.rescan_order.pop_front();
            if self.rescan.get(&key).is_some_and(|(t, _)| *t == time_ms) {
                self.rescan.remove(&key);
            }
        }
    }

    fn forget_from(&mut self, stored: i64) {
        self.held.clear();
        self.messages.retain(|_, v| {
            v.retain(|s| s.offset < stored);
            !v.is_empty()
        });
        self.networks.retain(|_, q| {
            q.retain(|(_, _, offset)| *offset < stored);
            !q.is_empty()
        });
        self.rescan.retain(|_, (_, offset)| *offset < stored);
        let rescan = &self.rescan;
        self.rescan_order.retain(|(key, _)| rescan.contains_key(key));
        // The watermark may have come from a forgotten event; it only ever
        // decides earlier, and the events come again within moments.
    }
}

/// Whether some window of `window_ms` containing `t` holds clicks on at least
/// `min_links` distinct links.
fn in_burst(clicks: &[&Seen], t: i64, window_ms: i64, min_links: usize) -> bool {
    if clicks.len() < min_links {
        return false;
    }
    clicks.iter().filter(|s| s.time_ms <= t && s.time_ms >= t - window_ms).any(|start| {
        let links: HashSet<u64> = clicks
            .iter()
            .filter(|s| s.time_ms >= start.time_ms && s.time_ms <= start.time_ms + window_ms)
            .map(|s| s.link)
            .collect();
        links.len() >= min_links
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::*;
    use std::time::Duration;

    fn event() -> ClickEvent {
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms: 1,
            client_id: ClientId::parse("c").unwrap(),
            campaign_id: CampaignId::parse("k").unwrap(),
            link_id: LinkId::mint(),
            recipient_id: None,
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: None,
            referer: None,
            client_ip: None,
            edge_node: "e".into(),
            event_type: EventType::Click,
            is_prefetch: false,
            recipient_token: RecipientToken::Absent,
            signals: Signals { ua_class: UaClass::Browser, network_class: NetworkClass::Other, ..Signals::default() },
        }
    }

    #[test]
    fn a_browser_on_an_ordinary_network_is_human() {
        assert_eq!(per_request(&event()), Reason::Human);
    }

    #[test]
    fn each_signal_decides_with_its_reason() {
        let with = |f: &dyn Fn(&mut ClickEvent)| {
            let mut e = event();
            f(&mut e);
            per_request(&e)
        };
        assert_eq!(with(&|e| e.http_method = "HEAD".into()), Reason::Head);
        assert_eq!(with(&|e| e.signals.prefetch_header = true), Reason::PrefetchHeader);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Preview), Reason::PreviewFetcher);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Bot), Reason::BotUserAgent);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::HttpClient), Reason::HttpClient);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Absent), Reason::HttpClient);
        assert_eq!(with(&|e| e.signals.scanner_referer = true), Reason::ScannerReferer);
        assert_eq!(with(&|e| e.signals.network_class = NetworkClass::Scanner), Reason::ScannerNetwork);
        assert_eq!(with(&|e| e.signals.honeypot = true), Reason::Honeypot);
        // A cloud network alone is weak evidence: people browse through VPNs.
        assert_eq!(with(&|e| e.signals.network_class = NetworkClass::Cloud), Reason::Human);
        // The client vouches for its own network, not for a bot's user agent.
        assert_eq!(
            with(&|e| {
                e.signals.network_class = NetworkClass::Scanner;
                e.signals.network_allow_listed = true;
            }),
            Reason::AllowListed
        );
        assert_eq!(
            with(&|e| {
                e.signals.ua_class = UaClass::HttpClient;
                e.signals.network_allow_listed = true;
            }),
            Reason::HttpClient
        );
    }

    #[test]
    fn old_events_keep_the_edges_prefetch_flag() {
        let mut e = event();
        e.signals = Signals::default();
        assert_eq!(per_request(&e), Reason::Human);
        e.is_prefetch = true;
        assert_eq!(per_request(&e), Reason::PreviewFetcher);
    }

    // ---- the per-message engine ----

    const SEND: i64 = 1_800_000_000_000;

    /// An open fetched by `ua`, classed by the edge as `ua_class`, from `asn`.
    fn open(ua: &str, ua_class: UaClass, asn: u32) -> ClickEvent {
        let mut e = event();
        e.event_type = EventType::Open;
        e.user_agent = Some(ua.into());
        e.signals.ua_class = ua_class;
        e.signals.asn = asn;
        e
    }

    fn open_verdict(e: &ClickEvent) -> Reason {
        per_open(e, crate::dimensions::pixel_fetcher(e))
    }

    #[test]
    fn opens_are_judged_by_who_fetched_the_pixel() {
        use ricochet_schemas::MachineOpen;
        let webkit = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
        let outlook = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)";
        let office = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)";
        let gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
        let cases = [
            // Mail Privacy Protection's proxy: its bare user agent, from anywhere.
            (open("Mozilla/5.0", UaClass::Browser, 36183), Some(MachineOpen::ApplePrivacy)),
            // Apple Mail's own user agent, from Apple's network: the proxy too.
            (open(webkit, UaClass::Browser, 714), Some(MachineOpen::ApplePrivacy)),
            // ...from a home network: the reader, MPP off.
            (open(webkit, UaClass::Browser, 3320), None),
            (open(outlook, UaClass::Browser, 3320), None),
            // Gmail's proxy reads as a preview fetcher; it fetches on opening.
            (open(gmail, UaClass::Preview, 15169), None),
            (open("curl/8.5.0", UaClass::HttpClient, 3320), Some(MachineOpen::Prefetch)),
            // Outlook's own agent, a link previewer on a click: on an open the
            // reader's app showing the message.
            (open(office, UaClass::Preview, 3320), None),
            // A chat app's unfurler is no mail client: still a machine.
            (
                open("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", UaClass::Preview, 3320),
                Some(MachineOpen::Prefetch),
            ),
        ];
        for (e, want) in cases {
            let got = open_verdict(&e);
            assert_eq!(got.machine_open(), want, "{:?} from AS{}: {got:?}", e.user_agent, e.signals.asn);
        }
        let mut gateway = open(outlook, UaClass::Browser, 3320);
        gateway.signals.network_class = NetworkClass::Scanner;
        assert_eq!(open_verdict(&gateway), Reason::ScannerNetwork);
        assert_eq!(Reason::ScannerNetwork.machine_open(), Some(MachineOpen::Scanner));
    }

    fn click(recipient: &str, link: &str, at_ms: i64) -> ClickEvent {
        let mut e = event();
        e.recipient_id = Some(RecipientId::parse(recipient).unwrap());
        e.link_id = LinkId::parse(link).unwrap();
        e.event_time_ms = at_ms;
        e.client_ip = Some("198.51.100.0".into());
        e.signals.asn = 64_500;
        e.signals.has_accept_language = true;
        e.signals.sent_at_ms = Some(SEND);
        e
    }

    fn on(mut e: ClickEvent, ip: &str, asn: u32) -> ClickEvent {
        e.client_ip = Some(ip.into());
        e.signals.asn = asn;
        e
    }

    /// Feeds the events at their own event time as arrival time, then lets
    /// the delay pass; returns the reasons in offset order.
    fn decide(rules: Rules, events: Vec<ClickEvent>) -> Vec<Reason> {
        let mut v = Verdicts::new(rules);
        let mut out = Vec::new();
        let mut last = 0;
        for (i, e) in events.into_iter().enumerate() {
            last = e.event_time_ms;
            out.extend(v.release(last));
            v.push(0, i as i64, Some((e, ())), last);
        }
        out.extend(v.release(last + 3_600_000));
        assert_eq!(v.num_held(), 0);
        assert!(out.windows(2).all(|w| w[0].offset < w[1].offset), "offset order");
        out.into_iter().map(|d| d.event.unwrap().2).collect()
    }

    fn rules() -> Rules {
        Rules::with_delay(Duration::from_secs(10))
    }

    #[test]
    fn a_future_dated_event_does_not_run_the_verdict_clock_ahead() {
        let now = SEND + 60_000;
        let mut v = Verdicts::new(rules());
        // An ordinary click, then one from an edge whose clock is a day ahead.
        v.push(0, 0, Some((click("r2", "l1", now), ())), now);
        v.push(0, 1, Some((click("r1", "l1", now + 86_400_000), ())), now);
        // Half the delay later, the ordinary click is still waiting for its context.
        let early: Vec<i64> = v.release(now + 5_000).iter().map(|d| d.offset).collect();
        assert!(early.is_empty(), "released after 5 s of a 10 s delay: {early:?}");
        assert_eq!(v.release(now + 10_000).len(), 2);
    }

    #[test]
    fn a_burst_across_links_is_a_machine_and_one_link_is_not() {
        let t = SEND + 43_000;
        let burst = vec![click("r1", "l1", t), click("r1", "l2", t + 300), click("r1", "l3", t + 900)];
        assert_eq!(decide(rules(), burst), vec![Reason::Burst; 3]);
        // Two links 30 s apart, and the same link twice: a person.
        let person = vec![click("r1", "l1", t), click("r1", "l2", t + 30_000), click("r1", "l2", t + 31_000)];
        assert_eq!(decide(rules(), person), vec![Reason::Human; 3]);
        // Three links, but spread over more than the window.
        let slow = vec![click("r1", "l1", t), click("r1", "l2", t + 1_500), click("r1", "l3", t + 3_000)];
        assert_eq!(decide(rules(), slow), vec![Reason::Human; 3]);
    }

    #[test]
    fn an_open_inside_a_sweep_is_the_sweeps_and_a_proxys_open_never_is() {
        let t = SEND + 43_000;
        let as_open = |mut e: ClickEvent, ua: &str, ua_class: UaClass| {
            e.event_type = EventType::Open;
            e.user_agent = Some(ua.into());
            e.signals.ua_class = ua_class;
            e
        };
        let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";
        let gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
        let sweep = || vec![click("r1", "l1", t), click("r1", "l2", t + 300), click("r1", "l3", t + 900)];
        // A gateway's image fetch inside its sweep of the message's links.
        let mut gateway = sweep();
        gateway.insert(1, as_open(click("r1", "l1", t + 100), browser, UaClass::Browser));
        assert_eq!(decide(rules(), gateway), vec![Reason::Burst; 4]);
        // The same fetch alone is the reader's.
        let alone = vec![as_open(click("r1", "l1", t + 100), browser, UaClass::Browser)];
        assert_eq!(decide(rules(), alone), vec![Reason::Human]);
        // Gmail's proxy fetching in the middle of a sweep from the same
        // network is still the reader opening the message.
        let mut proxied = sweep();
        proxied.insert(1, as_open(click("r1", "l1", t + 100), gmail, UaClass::Preview));
        assert_eq!(decide(rules(), proxied)[1], Reason::Human);
    }

    #[test]
    fn a_burst_needs_one_network() {
        let t = SEND + 43_000;
        let mixed = vec![
            click("r1", "l1", t),
            click("r1", "l2", t + 300),
            on(click("r1", "l3", t + 600), "203.0.113.0", 64_999),
        ];
        assert_eq!(decide(rules(), mixed), vec![Reason::Human; 3]);
    }

    #[test]
    fn a_person_on_a_cloud_network_clicking_one_link_is_human() {
        let mut e = click("r1", "l1", SEND + 120_000);
        e.signals.network_class = NetworkClass::Cloud;
        assert_eq!(decide(rules(), vec![e.clone()]), vec![Reason::Human]);
        // Within the first minute too (a VPN user reading at once): still a person.
        e.event_time_ms = SEND + 30_000;
        assert_eq!(decide(rules(), vec![e.clone()]), vec![Reason::Human]);
        // What convicts is what the request lacks, with the time.
        e.signals.has_accept_language = false;
        assert_eq!(decide(rules(), vec![e]), vec![Reason::TooFastAfterSend]);
    }

    #[test]
    fn time_alone_never_convicts() {
        let quick = click("r1", "l1", SEND + 15_000);
        assert_eq!(decide(rules(), vec![quick.clone()]), vec![Reason::Human]);
        let mut no_language = quick;
        no_language.signals.has_accept_language = false;
        assert_eq!(decide(rules(), vec![no_language.clone()]), vec![Reason::TooFastAfterSend]);
        no_language.event_time_ms = SEND + 300_000;
        assert_eq!(decide(rules(), vec![no_language]), vec![Reason::Human], "late enough: no conviction");
    }

    #[test]
    fn a_honeypot_voids_its_window_and_only_its_window() {
        let t = SEND + 43_000;
        let mut trap = click("r1", "trap", t + 500);
        trap.signals.honeypot = true;
        let events = vec![
            click("r1", "l1", t),          // before the hit, still undecided: voided
            trap,                          // the hit
            click("r1", "l2", t + 20_000), // within the window after it: voided
            // Minutes later from another network: counted (from the trap's
            // network it would be a rescan).
            on(click("r1", "l2", t + 600_000), "203.0.113.0", 64_999),
            click("r2", "l1", t + 1_000), // another recipient: untouched
            // The person, from their own network, 15 s after the sweep: counted;
            // within the burst window of the hit, from anywhere: voided.
            on(click("r1", "l3", t + 15_000), "198.51.100.0", 64_998),
            on(click("r1", "l4", t + 1_500), "192.0.2.0", 64_997),
        ];
        let reasons = decide(rules(), events);
        assert_eq!(
            reasons,
            vec![
                Reason::Honeypot,
                Reason::Honeypot,
                Reason::Honeypot,
                Reason::Human,
                Reason::Human,
                Reason::Human,
                Reason::Honeypot
            ]
        );
    }

    #[test]
    fn a_person_behind_a_scanner_clicking_after_the_sweep_is_counted() {
        let t = SEND + 43_000;
        let sweep: Vec<ClickEvent> =
            ["l1", "l2", "l3", "l4"].iter().enumerate().map(|(i, l)| click("r1", l, t + i as i64 * 200)).collect();
        let mut events = sweep;
        // The person, minutes later, from the office network.
        events.push(on(click("r1", "l2", t + 180_000), "203.0.113.0", 64_999));
        // The scanner checking again an hour later, from its own network.
        events.push(click("r1", "l2", t + 3_600_000));
        let reasons = decide(rules(), events);
        assert_eq!(&reasons[..4], &[Reason::Burst; 4]);
        assert_eq!(reasons[4], Reason::Human);
        assert_eq!(reasons[5], Reason::Rescan);
    }

    const CHROME: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

    fn with_agent(mut e: ClickEvent, method: &str, agent: &str) -> ClickEvent {
        e.http_method = method.into();
        e.user_agent = Some(agent.into());
        e
    }

    #[test]
    fn a_get_right_after_a_head_with_the_same_agent_is_the_scanners_and_offices_check_is_not() {
        // An hour after the send (too late for the first minute's rule), one
        // link, one address: a scanner checks with HEAD, then fetches with
        // GET, both with the same agent. A browser never sends HEAD.
        let t = SEND + 3_600_000;
        let scanner = vec![
            with_agent(click("r1", "l1", t), "HEAD", CHROME),
            with_agent(click("r1", "l1", t + 400), "GET", CHROME),
        ];
        assert_eq!(decide(rules(), scanner), vec![Reason::Head; 2]);
        // The GET first (the HEAD within the window after it): still the pair.
        let reordered = vec![
            with_agent(click("r1", "l1", t), "GET", CHROME),
            with_agent(click("r1", "l1", t + 300), "HEAD", CHROME),
        ];
        assert_eq!(decide(rules(), reordered), vec![Reason::Head; 2]);
        // Outlook's Office apps check a link with HEAD under their own agent
        // before the reader's browser opens it: the browser's GET is the person.
        let office = vec![
            with_agent(click("r1", "l1", t), "HEAD", "Microsoft Office Existence Discovery"),
            with_agent(click("r1", "l1", t + 400), "GET", CHROME),
        ];
        assert_eq!(decide(rules(), office), vec![Reason::Head, Reason::Human]);
        // The same agent, but another link or another network: a person.
        // (From the same network seconds later, the HEAD's mark makes it a rescan.)
        for later in [
            with_agent(click("r1", "l2", t + 400), "GET", CHROME),
            on(with_agent(click("r1", "l1", t + 400), "GET", CHROME), "203.0.113.0", 64_999),
        ] {
            let events = vec![with_agent(click("r1", "l1", t), "HEAD", CHROME), later];
            assert_eq!(decide(rules(), events), vec![Reason::Head, Reason::Human]);
        }
    }

    #[test]
    fn a_bare_request_from_a_cloud_network_on_a_scanned_message_is_a_rescan() {
        let t = SEND + 43_000;
        // The gateway's sweep from its own network.
        let sweep = || {
            (0..2)
                .map(|i| {
                    let mut e = on(click("r1", &format!("l{i}"), t + i * 200), "148.163.0.0", 26_211);
                    e.signals.network_class = NetworkClass::Scanner;
                    e
                })
                .collect::<Vec<_>>()
        };
        // Forty minutes later, one link again from a cloud sandbox, with a
        // browser's agent but no Accept-Language.
        let bare = |recipient: &str, class: NetworkClass| {
            let mut e = on(click(recipient, "l1", t + 2_400_000), "3.81.71.0", 14_618);
            e.signals.network_class = class;
            e.signals.has_accept_language = false;
            e
        };
        let mut events = sweep();
        events.push(bare("r1", NetworkClass::Cloud));
        assert_eq!(decide(rules(), events)[2], Reason::Rescan);
        // Another recipient's message was never scanned: a person on a VPN.
        let mut events = sweep();
        events.push(bare("r2", NetworkClass::Cloud));
        assert_eq!(decide(rules(), events)[2], Reason::Human);
        // The scanned message, from a home or office network: a person.
        let mut events = sweep();
        events.push(bare("r1", NetworkClass::Other));
        assert_eq!(decide(rules(), events)[2], Reason::Human);
        // From the cloud with a browser's Accept-Language: a person on a VPN.
        let mut events = sweep();
        let mut person = bare("r1", NetworkClass::Cloud);
        person.signals.has_accept_language = true;
        events.push(person);
        assert_eq!(decide(rules(), events)[2], Reason::Human);
        // Past the rescan window: forgotten.
        let mut events = sweep();
        let mut late = bare("r1", NetworkClass::Cloud);
        late.event_time_ms = t + ms(rules().rescan_window) + 60_000;
        events.push(late);
        assert_eq!(decide(rules(), events)[2], Reason::Human);
    }

    #[test]
    fn one_network_clicking_for_many_recipients_is_a_fanout_unless_allow_listed() {
        let t = SEND + 43_000;
        let cloud = |mut e: ClickEvent| {
            e.signals.network_class = NetworkClass::Cloud;
            e
        };
        let office: Vec<ClickEvent> = (0..6).map(|i| click(&format!("r{i}"), "l1", t + i * 100)).collect();
        assert_eq!(decide(rules(), office.clone()), vec![Reason::Human; 6], "an office reading its mail at once");
        let events: Vec<ClickEvent> = office.into_iter().map(cloud).collect();
        assert_eq!(decide(rules(), events.clone()), vec![Reason::NetworkFanout; 6]);
        let allowed: Vec<ClickEvent> = events
            .into_iter()
            .map(|mut e| {
                e.signals.network_allow_listed = true;
                e
            })
            .collect();
        assert_eq!(decide(rules(), allowed), vec![Reason::AllowListed; 6]);
        // The same recipients spread over minutes: people.
        let spread: Vec<ClickEvent> = (0..6).map(|i| cloud(click(&format!("r{i}"), "l1", t + i * 60_000))).collect();
        assert_eq!(decide(rules(), spread), vec![Reason::Human; 6]);
    }

    #[test]
    fn a_private_address_is_no_network() {
        let t = SEND + 43_000;
        let proxied: Vec<ClickEvent> = (0..6)
            .map(|i| {
                let mut e = on(click(&format!("r{i}"), &format!("l{i}"), t + i * 100), "127.0.0.0", 0);
                // A cloud class, so that only the address keeps fan-out away.
                e.signals.network_class = NetworkClass::Cloud;
                e.recipient_id = Some(RecipientId::parse(if i < 3 { "r0" } else { "r1" }).unwrap());
                e
            })
            .collect();
        assert_eq!(decide(rules(), proxied), vec![Reason::Human; 6], "no burst, no fan-out behind a proxy");
        for ip in ["10.1.2.0", "192.168.1.0", "fd00:1::", "::1"] {
            let many: Vec<ClickEvent> = (0..6)
                .map(|i| {
                    let mut e = on(click(&format!("r{i}"), "l1", t + i * 100), ip, 0);
                    e.signals.network_class = NetworkClass::Cloud;
                    e
                })
                .collect();
            assert_eq!(decide(rules(), many), vec![Reason::Human; 6], "{ip}");
        }
    }

    #[test]
    fn a_decided_event_behind_an_undecided_one_waits() {
        let mut v = Verdicts::new(rules());
        let t = SEND + 100_000;
        v.push(0, 0, Some((click("r1", "l1", t), ())), t);
        v.push(0, 1, None, t + 1); // set aside: decided at once, but behind offset 0
        v.push(1, 0, None, t + 1);
        let first = v.release(t + 5_000);
        assert_eq!(first.iter().map(|d| (d.partition, d.offset)).collect::<Vec<_>>(), vec![(1, 0)]);
        assert_eq!(v.num_held(), 2);
        let second = v.release(t + 10_000);
        assert_eq!(second.iter().map(|d| (d.partition, d.offset)).collect::<Vec<_>>(), vec![(0, 0), (0, 1)]);
    }

    #[test]
    fn a_backlog_is_decided_by_event_time_without_waiting_the_delay() {
        let mut v = Verdicts::new(rules());
        let t = SEND + 100_000;
        // Read an hour late, all at once: the newer events vouch that nothing
        // more can change the older ones' verdicts.
        for i in 0..20 {
            v.push(0, i, Some((click(&format!("r{i}"), "l1", t + i * 1_000), ())), t + 3_600_000);
        }
        let decided = v.release(t + 3_600_000);
        assert_eq!(decided.len(), 10, "the events more than the delay older than the newest");
        assert_eq!(v.num_held(), 10);
    }

    #[test]
    fn rewinding_forgets_what_comes_again() {
        let mut v = Verdicts::new(rules());
        let t = SEND + 43_000;
        v.push(0, 0, Some((click("r1", "l1", t), ())), t);
        v.push(0, 1, Some((click("r1", "l2", t + 100), ())), t);
        v.rewind(0, Some(1));
        assert_eq!(v.num_held(), 0);
        // Offset 1 comes again, and one more link: still a burst with offset 0
        // (kept as context), not with a ghost of offset 1.
        v.push(0, 1, Some((click("r1", "l2", t + 100), ())), t);
        let decided = v.release(t + 20_000);
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].event.as_ref().unwrap().2, Reason::Human, "two links only: offset 1 counted once");
        v.revoke(0);
        assert_eq!(v.num_held(), 0);
    }
}
