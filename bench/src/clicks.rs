//! Click traffic and small probes for `bench/aggregator.sh`, the aggregator's
//! benchmark: who clicks (a skewed mix of senders), what one click looks like
//! on the wire (the edge's Avro `ClickEvent`, and a JSON copy of the fields a
//! rollup needs, for ClickHouse's own Kafka engine), a producer tuned for
//! throughput, ClickHouse over plain HTTP, and this process's peak memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use ricochet_schemas::{CampaignId, ClickEvent, ClientId, EventId, EventType, LinkId, RecipientId, RecipientToken};

/// The broker and the topic a helper talks to (`--brokers`, `--topic`).
#[derive(clap::Args, Clone, Debug)]
pub struct Kafka {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "clicks")]
    pub topic: String,
}

/// Who sends the clicks: `clients` senders, the first of which (the "hot"
/// one, mid-blast) sends `hot_share` of all clicks over `hot_links` links;
/// the others share the rest evenly, `links` links each.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub prefix: String,
    pub clients: u32,
    pub links: u32,
    pub hot_share: f64,
    pub hot_links: u32,
}

/// Where one click goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub client: u32,
    pub link: u32,
}

impl Traffic {
    pub fn pick(&self, rng: &mut impl Rng) -> Pick {
        if self.clients <= 1 || rng.random_bool(self.hot_share) {
            return Pick { client: 0, link: rng.random_range(0..self.hot_links.max(1)) };
        }
        Pick { client: rng.random_range(1..self.clients), link: rng.random_range(0..self.links.max(1)) }
    }

    pub fn client_id(&self, client: u32) -> String {
        format!("{}-{client:04}", self.prefix)
    }

    /// A link id shaped like the real ones (32 hex digits).
    pub fn link_id(&self, pick: Pick) -> String {
        format!("{:016x}{:016x}", u64::from(pick.client) + 1, u64::from(pick.link) + 1)
    }

    /// Five campaigns a client, the link decides which.
    pub fn campaign_id(&self, pick: Pick) -> String {
        format!("blast-{:04}-{}", pick.client, pick.link % 5)
    }

    /// A click as the edge publishes it: a browser (5% link-preview
    /// fetchers), a signed recipient on most clicks, an anonymized IP, and
    /// what the breakdowns read varied as in a real blast (browsers and
    /// phones of many versions, webmail referers, public addresses of many
    /// countries, some IPv6).
    pub fn click(&self, pick: Pick, link_id: &str, event_time_ms: i64, rng: &mut impl Rng) -> ClickEvent {
        let prefetch = rng.random_bool(0.05);
        let recipient = rng.random_bool(0.7).then(|| format!("r{}@example.com", rng.random_range(0..1_000_000u32)));
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms,
            client_id: ClientId::parse(self.client_id(pick.client)).expect("valid client id"),
            campaign_id: CampaignId::parse(self.campaign_id(pick)).expect("valid campaign id"),
            link_id: LinkId::parse(link_id).expect("valid link id"),
            recipient_token: if recipient.is_some() { RecipientToken::Valid } else { RecipientToken::Absent },
            signals: ricochet_schemas::Signals::default(),
            recipient_id: recipient.map(|r| RecipientId::parse(r).expect("valid recipient id")),
            destination_url: format!(
                "https://shop{}.example/deals/{:07}?utm_source=email&utm_medium=blast",
                pick.client, pick.link
            ),
            http_method: if prefetch { "HEAD" } else { "GET" }.into(),
            user_agent: Some(user_agent(rng)),
            referer: REFERERS[rng.random_range(0..REFERERS.len())].map(String::from),
            client_ip: Some(anonymized_address(rng)),
            edge_node: "edge-bench-1".into(),
            event_type: EventType::Click,
            is_prefetch: prefetch,
        }
    }
}

/// A browser, phone, tablet or mail client's user agent, one of a few
/// hundred (families × versions): the aggregator parses each distinct one once.
fn user_agent(rng: &mut impl Rng) -> String {
    let v = rng.random_range(100..140u32);
    let ios = rng.random_range(14..19u32);
    match rng.random_range(0..8u32) {
        0 | 1 => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
        ),
        2 => format!(
            "Mozilla/5.0 (iPhone; CPU iPhone OS {ios}_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
             Version/{ios}.1 Mobile/15E148 Safari/604.1"
        ),
        3 => format!(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36"
        ),
        4 => format!("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"),
        5 => format!(
            "Mozilla/5.0 (iPad; CPU OS {ios}_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{ios}.1 \
             Mobile/15E148 Safari/604.1"
        ),
        6 => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 \
             Safari/537.36 Edg/{v}.0.0.0"
        ),
        _ => format!("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{}; Pro)", 17_000 + v),
    }
}

/// Clicks from webmail carry its address; from apps and desktop clients none.
const REFERERS: [Option<&str>; 6] = [
    Some("https://mail.google.com/"),
    Some("https://outlook.live.com/"),
    Some("https://mail.yahoo.com/"),
    Some("android-app://com.google.android.gm/"),
    None,
    None,
];

/// An address as the edge anonymizes it: a public IPv4 /24 (first octets of
/// several registries' blocks, so many countries) or, one time in ten, an IPv6 /48.
fn anonymized_address(rng: &mut impl Rng) -> String {
    const FIRST_OCTETS: [u8; 16] = [5, 24, 31, 41, 46, 62, 78, 81, 88, 95, 103, 151, 177, 186, 201, 213];
    if rng.random_bool(0.1) {
        return format!("2a02:{:x}:{:x}::", rng.random_range(0x100..0x2000u16), rng.random::<u16>());
    }
    let a = FIRST_OCTETS[rng.random_range(0..FIRST_OCTETS.len())];
    format!("{a}.{}.{}.0", rng.random::<u8>(), rng.random::<u8>())
}

/// The JSON copy of a click for ClickHouse's Kafka engine (`JSONEachRow`):
/// every field of the Avro `ClickEvent` v3, so that the engine and the
/// aggregator pay the broker, and parse, the same fields. Names follow the
/// contract; `signals` is flattened into `signals_*` (JSONEachRow on 18.16 has
/// no nested objects). Absent optionals are `null`.
pub fn json_row(e: &ClickEvent) -> String {
    let s = &e.signals;
    let mut line = serde_json::json!({
        "event_id": e.event_id.to_string(),
        "event_time_ms": e.event_time_ms,
        "client_id": e.client_id.as_str(),
        "campaign_id": e.campaign_id.as_str(),
        "link_id": e.link_id.as_str(),
        "recipient_id": e.recipient_id.as_ref().map(|r| r.as_str()),
        "destination_url": e.destination_url,
        "http_method": e.http_method,
        "user_agent": e.user_agent,
        "referer": e.referer,
        "client_ip": e.client_ip,
        "edge_node": e.edge_node,
        "event_type": e.event_type.as_str(),
        "is_prefetch": u8::from(e.is_prefetch),
        "recipient_token": e.recipient_token.as_str(),
        "signals_prefetch_header": u8::from(s.prefetch_header),
        "signals_ua_class": s.ua_class.as_str(),
        "signals_has_accept": u8::from(s.has_accept),
        "signals_has_accept_language": u8::from(s.has_accept_language),
        "signals_scanner_referer": u8::from(s.scanner_referer),
        "signals_network_class": s.network_class.as_str(),
        "signals_network_name": s.network_name,
        "signals_asn": s.asn,
        "signals_network_allow_listed": u8::from(s.network_allow_listed),
        "signals_sent_at_ms": s.sent_at_ms,
        "signals_honeypot": u8::from(s.honeypot),
    })
    .to_string();
    line.push('\n');
    line
}

/// Delivery reports, counted.
#[derive(Clone, Default)]
pub struct Delivered {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl Delivered {
    pub fn settled(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() { &self.ok } else { &self.failed };
        if counter.fetch_add(1, Ordering::Relaxed) == 0 && result.is_err() {
            eprintln!("a click was refused: {:?}", result.as_ref().err().map(|(e, _)| e));
        }
    }
}

/// An idempotent `acks=all` producer with lz4, like the edge's, batching
/// for `linger_ms`.
pub fn producer(brokers: &str, linger_ms: u32) -> anyhow::Result<BaseProducer<Delivered>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The edge's partitioner (ingest/src/config.rs): a client's clicks
        // land where the edge would put them, which the webhook deliverer
        // relies on to read one partition per client.
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Delivered::default())?)
}

/// Enqueues one message, waiting while the producer's queue is full.
pub fn send(producer: &BaseProducer<Delivered>, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => anyhow::bail!("cannot enqueue a click: {e}"),
        }
    }
}

/// Open-loop pacing: calls `send_one` until `total` clicks went out, click `i`
/// due at `start + i / rate` (late ones go at once, none is skipped), then
/// waits for every acknowledgement. Returns the rate achieved (clicks/s).
pub fn paced(
    producer: &BaseProducer<Delivered>,
    rate: f64,
    total: u64,
    mut send_one: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    use rdkafka::producer::Producer as _;
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            send_one()?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(30))?;
    let delivered = producer.context();
    let failed = delivered.failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0 && delivered.settled() == sent, "{failed} of {sent} clicks were not acknowledged");
    Ok(achieved)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs `sql` on ClickHouse's HTTP interface at `addr` (`host:port`) and
/// returns the body. HTTP/1.0 on a fresh connection: no chunking, no client
/// library, a few hundred microseconds on loopback.
pub fn clickhouse(addr: &str, sql: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{sql}", sql.len())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.contains(" 200 "), "clickhouse: {status}: {}", body.trim());
    Ok(body.to_owned())
}

/// This process's peak resident set (`VmHWM`) in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .map_or(0.0, |kib: f64| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic() -> Traffic {
        Traffic { prefix: "client".into(), clients: 100, links: 10, hot_share: 0.5, hot_links: 50 }
    }

    #[test]
    fn the_hot_client_gets_its_share() {
        let t = traffic();
        let mut rng = rand::rng();
        let hot = (0..20_000).filter(|_| t.pick(&mut rng).client == 0).count();
        assert!((9_000..11_000).contains(&hot), "{hot} of 20000");
    }

    #[test]
    fn a_click_is_valid_and_its_json_copy_carries_every_field() {
        let t = traffic();
        let mut rng = rand::rng();
        let pick = Pick { client: 3, link: 7 };
        let e = t.click(pick, &t.link_id(pick), 1_700_000_123_456, &mut rng);
        let codec = ricochet_schemas::Codec::<ClickEvent>::new();
        assert_eq!(codec.decode(&codec.encode(&e).unwrap()).unwrap(), e);
        let json = json_row(&e);
        assert!(json.ends_with("}\n"), "one JSON object a line: {json}");
        // Every field of the event, so the Kafka engine pays the broker what the aggregator does.
        let row: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(row["client_id"], "client-0003", "{json}");
        assert_eq!(row["campaign_id"], "blast-0003-2", "{json}");
        assert_eq!(row["event_time_ms"], 1_700_000_123_456_i64, "{json}");
        assert_eq!(row["event_type"], "click", "{json}");
        assert_eq!(row.as_object().unwrap().len(), 26, "every v3 field: {json}");
    }
}
