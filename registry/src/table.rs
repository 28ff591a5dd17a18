//! The in-memory registry every edge and API process holds.

use std::sync::Arc;

use dashmap::DashMap;
use ricochet_schemas::{
    ApiKeyRecord, ClientId, ClientRecord, ClientStatus, LinkCode, LinkCount, LinkId, LinkRecord, LinkStatus,
};

use crate::links::{LinkRef, LinkTable};

/// Where a record sits in its registry topic: its offset. A topic is keyed
/// (by link id, client id, key hash), so one key's records share a partition
/// and its versions only grow, in the order every edge applies them.
///
/// Why a version: the API applies each record it writes at once (a client
/// reads back what it just wrote), and its tail of the same topic brings
/// that record again later, after any older records of the same key it has
/// not reached yet. Applied blindly, those would undo the write for a moment
/// (a resumed client paused again, a revoked key accepted again). So a
/// process that applies its own writes keeps the version of each key's
/// state and applies only records at least as new: the topic's order, the
/// same as the edges', whatever the clocks of the API's instances say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

impl Version {
    /// A record applied without a version (from a snapshot, or a write whose
    /// offset the broker did not report): older than every version.
    pub const UNKNOWN: Version = Version(i64::MIN);
}

/// A link's code (its key in the link table) and its state's version.
#[derive(Clone, Debug)]
struct IdEntry {
    code: LinkCode,
    version: Version,
}

/// The key of a client's or an API key's record in [`Registry::versions`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RecordKey {
    Client(ClientId),
    ApiKey(String),
}

/// All links by code (the redirect path; compact, see [`crate::links`]), the
/// link ids of the API's lookups (only in processes that ask for them), and
/// all clients, counts and API keys (few, so plain maps).
///
/// Locks are sharded, so the many concurrent readers on the redirect path do
/// not contend with the one tailing writer.
pub struct Registry {
    links: LinkTable,
    /// Link id → code and version; `None` on the edge, which never looks a
    /// link up by id and never applies a record out of the topic's order.
    by_id: Option<DashMap<LinkId, IdEntry>>,
    /// The versions of the clients and API keys applied, kept where links
    /// are looked up by id (the API: see [`Version`]).
    versions: Option<DashMap<RecordKey, Version>>,
    clients: DashMap<ClientId, Arc<ClientRecord>>,
    /// Clicks counted so far for links with a click limit, fed back by the aggregator.
    counts: DashMap<LinkId, i64>,
    /// API keys by the hex SHA-256 of the key.
    api_keys: DashMap<String, Arc<ApiKeyRecord>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry that can also look links up by id (the API).
    pub fn new() -> Self {
        Self::build(true)
    }

    /// A registry for the edge: by code only (~16 bytes less per link).
    pub fn for_edge() -> Self {
        Self::build(false)
    }

    fn build(by_id: bool) -> Self {
        Registry {
            links: LinkTable::new(),
            by_id: by_id.then(DashMap::new),
            versions: by_id.then(DashMap::new),
            clients: DashMap::new(),
            counts: DashMap::new(),
            api_keys: DashMap::new(),
        }
    }

    /// Applies a link's state that has no version (a snapshot's, loaded
    /// before the tail starts): [`apply_at`](Self::apply_at) with
    /// [`Version::UNKNOWN`]. A link's code never changes, so the record
    /// replaces the previous one.
    pub fn apply(&self, record: LinkRecord) {
        self.apply_at(&record, Version::UNKNOWN);
    }

    /// Applies a link's state at `version` (its offset in the links topic),
    /// unless a newer one of the same link is already applied; whether it
    /// applied. See [`Version`].
    pub fn apply_at(&self, record: &LinkRecord, version: Version) -> bool {
        let Some(by_id) = &self.by_id else {
            self.links.apply(record);
            return true;
        };
        // The entry's lock is held until the table has the record: a tail
        // and a handler applying the same link at once cannot interleave.
        let mut entry = by_id
            .entry(record.link_id.clone())
            .or_insert_with(|| IdEntry { code: record.code.clone(), version: Version::UNKNOWN });
        if entry.version > version {
            return false;
        }
        if version != Version::UNKNOWN {
            entry.version = version;
        }
        entry.code = record.code.clone();
        self.links.apply(record);
        true
    }

    /// Runs `apply` unless a newer version of `key` was applied; whether it ran.
    fn apply_versioned(&self, key: RecordKey, version: Version, apply: impl FnOnce()) -> bool {
        let Some(versions) = &self.versions else {
            apply();
            return true;
        };
        let mut current = versions.entry(key).or_insert(Version::UNKNOWN);
        if *current > version {
            return false;
        }
        if version != Version::UNKNOWN {
            *current = version;
        }
        apply();
        true
    }

    /// The link behind a tracking-URL code, lent by reference (no allocation);
    /// holds a read lock on its shard until dropped, so keep it only for the request.
    pub fn resolve(&self, code: &str) -> Option<LinkRef<'_>> {
        self.links.resolve(code)
    }

    /// The compact link table itself (snapshots).
    pub fn links(&self) -> &LinkTable {
        &self.links
    }

    /// A link by id, as an owned record. Always `None` on a registry made
    /// [`for_edge`](Self::for_edge).
    pub fn get(&self, link_id: &str) -> Option<Arc<LinkRecord>> {
        let code = self.by_id.as_ref()?.get(link_id)?.code.clone();
        self.links.resolve(code.as_str()).map(|l| Arc::new(l.to_record()))
    }

    /// Applies the state of a client, in the order given (a snapshot's).
    pub fn apply_client(&self, record: ClientRecord) {
        self.clients.insert(record.client_id.clone(), Arc::new(record));
    }

    /// Applies a client's state at `version` (its offset in the clients
    /// topic), unless a newer one is already applied; whether it applied.
    pub fn apply_client_at(&self, record: ClientRecord, version: Version) -> bool {
        let key = RecordKey::Client(record.client_id.clone());
        self.apply_versioned(key, version, || self.apply_client(record))
    }

    /// A client's state; `None` for a client that was never configured (active, defaults).
    pub fn client(&self, client_id: &str) -> Option<Arc<ClientRecord>> {
        self.clients.get(client_id).map(|r| r.value().clone())
    }

    /// Whether the client is paused. Checked on every lookup, so pausing a client
    /// is one record that stops all of its links at once.
    pub fn client_paused(&self, client_id: &str) -> bool {
        self.clients.get(client_id).is_some_and(|c| c.status == ClientStatus::Paused)
    }

    /// Applies a click count fed back by the aggregator.
    pub fn apply_count(&self, count: LinkCount) {
        self.counts.insert(count.link_id, count.clicks);
    }

    /// Whether the link has a click limit and the fed-back count has reached it.
    /// Approximate by design: the count lags the clicks by the aggregator's flush
    /// and feedback intervals (see `docs/click-limits.md`).
    pub fn limit_reached(&self, link: &LinkRef<'_>) -> bool {
        link.click_limit()
            .is_some_and(|limit| link.link_id().with_str(|id| self.counts.get(id).is_some_and(|c| *c >= limit)))
    }

    /// Active links that have a click limit: the ones whose counts are fed back (a scan).
    pub fn limited_links(&self) -> Vec<Arc<LinkRecord>> {
        self.scan(|l| l.click_limit().is_some() && l.status() == LinkStatus::Active)
    }

    fn scan(&self, mut keep: impl FnMut(&LinkRef<'_>) -> bool) -> Vec<Arc<LinkRecord>> {
        let mut out = Vec::new();
        self.links.for_each(|l| {
            if keep(l) {
                out.push(Arc::new(l.to_record()));
            }
        });
        out
    }

    /// Every click count, for snapshots.
    pub fn counts(&self) -> Vec<LinkCount> {
        self.counts.iter().map(|c| LinkCount { link_id: c.key().clone(), clicks: *c.value(), as_of_ms: 0 }).collect()
    }

    /// Every client, for snapshots.
    pub fn clients(&self) -> Vec<Arc<ClientRecord>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }

    /// Every API key, for snapshots.
    pub fn api_keys(&self) -> Vec<Arc<ApiKeyRecord>> {
        self.api_keys.iter().map(|c| c.value().clone()).collect()
    }

    /// Forgets everything (a snapshot found bad half-way through loading).
    pub fn clear(&self) {
        self.links.clear();
        if let Some(by_id) = &self.by_id {
            by_id.clear();
        }
        if let Some(versions) = &self.versions {
            versions.clear();
        }
        self.clients.clear();
        self.counts.clear();
        self.api_keys.clear();
    }

    /// Applies an API key's record, in the order given (a snapshot's).
    pub fn apply_api_key(&self, key: ApiKeyRecord) {
        self.api_keys.insert(key.key_hash.clone(), Arc::new(key));
    }

    /// Applies an API key's record at `version` (its offset in the keys
    /// topic), unless a newer one is already applied: a revoked key is not
    /// accepted again when its creation arrives late. Whether it applied.
    pub fn apply_api_key_at(&self, key: ApiKeyRecord, version: Version) -> bool {
        let id = RecordKey::ApiKey(key.key_hash.clone());
        self.apply_versioned(id, version, || self.apply_api_key(key))
    }

    /// The client an unrevoked API key (given by its hash) belongs to.
    /// The key's record, revoked or not.
    pub fn api_key(&self, key_hash: &str) -> Option<Arc<ApiKeyRecord>> {
        self.api_keys.get(key_hash).map(|k| k.value().clone())
    }

    pub fn api_key_client(&self, key_hash: &str) -> Option<ClientId> {
        self.api_keys.get(key_hash).filter(|k| !k.revoked).map(|k| k.client_id.clone())
    }

    /// The links of one client (for campaign listings); a scan, so callers cache.
    pub fn links_of(&self, client_id: &str) -> Vec<Arc<LinkRecord>> {
        self.scan(|l| l.client_id() == client_id)
    }

    pub fn contains_code(&self, code: &str) -> bool {
        self.links.contains(code)
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ricochet_schemas::CampaignId;

    fn client(status: ClientStatus) -> ClientRecord {
        ClientRecord {
            client_id: ClientId::parse("acme".to_owned()).unwrap(),
            status,
            fallback_url: None,
            hot_spread: 1,
            updated_at_ms: 0,
            allowed_networks: Vec::new(),
        }
    }

    fn link(status: LinkStatus) -> LinkRecord {
        LinkRecord {
            link_id: LinkId::parse("01936a4e7c3f7b219a552f1e3d4c5b6b").unwrap(),
            code: LinkCode::parse("Ab3dE5gH").unwrap(),
            client_id: ClientId::parse("acme").unwrap(),
            campaign_id: CampaignId::parse("spring").unwrap(),
            destination_url: "https://shop.example/".into(),
            status,
            created_at_ms: 1_800_000_000_000,
            valid_from_ms: None,
            valid_until_ms: None,
            click_limit: None,
            honeypot: false,
        }
    }

    fn key(revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            key_hash: "ab".repeat(32),
            client_id: ClientId::parse("acme").unwrap(),
            label: None,
            revoked,
            created_at_ms: 0,
            scopes: None,
            expires_at_ms: None,
        }
    }

    /// The API applies what it writes at once, and its registry tail
    /// delivers the same records later: an older record arriving after a
    /// newer one must not undo it (a client resumed, then briefly paused
    /// again; api_key_scopes once saw the 403 in CI).
    #[test]
    fn an_older_client_record_does_not_replace_a_newer_one() {
        let registry = Registry::new();
        assert!(registry.apply_client_at(client(ClientStatus::Paused), Version(10)), "the tail: the pause");
        assert!(registry.apply_client_at(client(ClientStatus::Active), Version(12)), "the API: its resume");
        assert!(!registry.apply_client_at(client(ClientStatus::Paused), Version(11)), "the tail: an older pause");
        assert!(!registry.client_paused("acme"));
        assert!(registry.apply_client_at(client(ClientStatus::Active), Version(12)), "the tail reaches the resume");
        assert!(registry.apply_client_at(client(ClientStatus::Paused), Version(13)));
        assert!(registry.client_paused("acme"));
    }

    #[test]
    fn a_revoked_key_is_not_accepted_again_when_its_creation_arrives_late() {
        let registry = Registry::new();
        registry.apply_api_key_at(key(true), Version(5));
        registry.apply_api_key_at(key(false), Version(4));
        assert_eq!(registry.api_key_client(&"ab".repeat(32)), None);
    }

    #[test]
    fn the_edge_applies_in_the_order_given() {
        // The edge only tails, in the topic's order, and keeps no versions
        // (no memory per link for them).
        let edge = Registry::for_edge();
        edge.apply_at(&link(LinkStatus::Paused), Version(2));
        edge.apply_at(&link(LinkStatus::Active), Version(1));
        assert_eq!(edge.resolve("Ab3dE5gH").unwrap().status(), LinkStatus::Active);
    }

    /// One key's records as the API sees them: record `i` is written with
    /// offset `i`; the tail delivers every record in offset order, some time
    /// after it is written; the writer applies some of its own records at
    /// once, some time after writing them (before or after the tail reaches
    /// them). Returns the (record index, by the writer?) deliveries in order.
    fn schedule(tail_delay: &[u8], local_delay: &[Option<u8>]) -> Vec<(usize, bool)> {
        let mut events = Vec::new();
        let mut tail_at = 0u32;
        for (i, delay) in tail_delay.iter().enumerate() {
            // Offsets in order: record i is at least as late as i - 1.
            tail_at = tail_at.max(i as u32 * 4 + u32::from(*delay));
            events.push((tail_at, 1, i, false));
            if let Some(d) = local_delay[i] {
                events.push((i as u32 * 4 + u32::from(d), 0, i, true));
            }
        }
        events.sort();
        events.into_iter().map(|(_, _, i, local)| (i, local)).collect()
    }

    const STATUSES: [LinkStatus; 3] = [LinkStatus::Active, LinkStatus::Paused, LinkStatus::Deleted];

    proptest! {
        /// Whatever the interleaving, the state is always the newest record
        /// applied so far, and ends as the last record written: the topic's
        /// order, as on every edge.
        #[test]
        fn the_newest_record_applied_so_far_wins(
            writes in proptest::collection::vec((0usize..3, 0u8..40, proptest::option::of(0u8..40)), 1..24),
        ) {
            let tail: Vec<u8> = writes.iter().map(|w| w.1).collect();
            let local: Vec<Option<u8>> = writes.iter().map(|w| w.2).collect();
            let registry = Registry::new();
            let mut newest: Option<usize> = None;
            for (i, _) in schedule(&tail, &local) {
                let status = STATUSES[writes[i].0];
                let applied = registry.apply_at(&link(status), Version(i as i64));
                registry.apply_client_at(
                    client(if status == LinkStatus::Active { ClientStatus::Active } else { ClientStatus::Paused }),
                    Version(i as i64),
                );
                registry.apply_api_key_at(key(status == LinkStatus::Deleted), Version(i as i64));
                prop_assert_eq!(applied, newest.is_none_or(|n| i >= n));
                newest = newest.max(Some(i));
                let expect = STATUSES[writes[newest.unwrap()].0];
                prop_assert_eq!(registry.get("01936a4e7c3f7b219a552f1e3d4c5b6b").unwrap().status, expect);
                prop_assert_eq!(registry.client_paused("acme"), expect != LinkStatus::Active);
                prop_assert_eq!(registry.api_key_client(&"ab".repeat(32)).is_none(), expect == LinkStatus::Deleted);
            }
            prop_assert_eq!(newest, Some(writes.len() - 1));
        }
    }
}
