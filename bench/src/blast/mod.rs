//! The labelled blast of issue 8: a seeded simulation of one email blast
//! (scanner gateways and people), replayed against the real edge, and the
//! scorer that compares the aggregator's verdicts with the truth.
//!
//! - [`networks`]: address pools by owner (vendors, clouds, people's ISPs).
//! - [`model`]: recipients, gateways, people, and every request they make,
//!   in the blast's own (virtual) timeline; [`model::compress`] maps it onto
//!   a quick replay.
//! - [`truth`]: one line per request sent, with its label, for the scorer.
//! - [`score`]: matching the stored events to the truth, and the tables.
//! - [`breakdown`]: issue 16's scores: the breakdowns of human clicks by
//!   country, device and mail client against the truth, and the opens' verdicts.
//!
//! The binaries are `blast` (plan, create links, replay, write the truth)
//! and `blast-score` (read verdicts back, print the tables); `bench/blast.sh`
//! starts the stack around them.

pub mod breakdown;
pub mod model;
pub mod networks;
pub mod score;
pub mod truth;

/// Seconds-since-send buckets of the tables, with their upper bounds in seconds.
pub const BUCKETS: [(&str, f64); 7] = [
    ("<10s", 10.0),
    ("10-20s", 20.0),
    ("20-60s", 60.0),
    ("1-5min", 300.0),
    ("5-30min", 1800.0),
    ("30min-2h", 7200.0),
    (">=2h", f64::INFINITY),
];

pub fn bucket(since_send_ms: i64) -> &'static str {
    let s = since_send_ms as f64 / 1000.0;
    BUCKETS.iter().find(|(_, hi)| s < *hi).map_or(BUCKETS[BUCKETS.len() - 1].0, |(name, _)| name)
}

/// The recipient token a sender puts in the message: a v2 token, signed for
/// the link's code and the recipient, carrying the send time. Tokens carry
/// whole seconds, so the send time is rounded down: the edge's seconds since
/// send are at most 1 s above the blast's.
pub fn mint_token(
    kid: &str,
    client_key: &[u8],
    code: &str,
    recipient: &ricochet_schemas::RecipientId,
    sent_at_ms: i64,
) -> String {
    let sent_at_secs = sent_at_ms.div_euclid(1000).max(0) as u64;
    ricochet_registry::token::mint_sent_at_with_client_key(kid, client_key, code, recipient, sent_at_secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn buckets_split_at_their_bounds() {
        assert_eq!(super::bucket(0), "<10s");
        assert_eq!(super::bucket(9_999), "<10s");
        assert_eq!(super::bucket(10_000), "10-20s");
        assert_eq!(super::bucket(43_000), "20-60s");
        assert_eq!(super::bucket(60_000), "1-5min");
        assert_eq!(super::bucket(7_200_000), ">=2h");
    }
}
