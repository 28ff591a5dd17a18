//! What the publisher's tests share: a config from the service's own flags, and events.

use ricochet_ingest::PublisherConfig;
use ricochet_schemas::{CampaignId, ClickEvent, ClientId, EventId, EventType, LinkId, RecipientToken, Signals};

/// The publisher's config as the edge parses it, from `flags`, spooling into `dir`.
pub fn config(dir: &std::path::Path, flags: &[&str]) -> PublisherConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        publisher: PublisherConfig,
    }
    let mut c = Cli::parse_from(std::iter::once("test").chain(flags.iter().copied())).publisher;
    c.spool.dir = dir.to_owned();
    c
}

/// The `n`th of a run of distinct click events.
pub fn event(n: u64) -> ClickEvent {
    ClickEvent {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_time_ms: n as i64,
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("bf").unwrap(),
        link_id: LinkId::parse(format!("l{n}")).unwrap(),
        recipient_id: None,
        destination_url: format!("https://shop.example/{n}"),
        http_method: "GET".into(),
        user_agent: Some("Mozilla/5.0 é".into()),
        referer: None,
        client_ip: Some("203.0.113.0".into()),
        edge_node: "edge-1".into(),
        event_type: EventType::Click,
        is_prefetch: false,
        recipient_token: RecipientToken::Absent,
        signals: Signals::default(),
    }
}
