//! The in-memory registry every edge and API process holds.

use std::sync::Arc;

use dashmap::DashMap;
use ricochet_schemas::{
    ApiKeyRecord, ClientId, ClientRecord, ClientStatus, LinkCode, LinkCount, LinkId, LinkRecord, LinkStatus,
};

use crate::links::{LinkRef, LinkTable};

/// All links by code (the redirect path; compact, see [`crate::links`]), the
/// link ids of the API's lookups (only in processes that ask for them), and
/// all clients, counts and API keys (few, so plain maps).
///
/// Locks are sharded, so the many concurrent readers on the redirect path do
/// not contend with the one tailing writer.
pub struct Registry {
    links: LinkTable,
    /// Link id → code; `None` on the edge, which never looks a link up by id.
    by_id: Option<DashMap<LinkId, LinkCode>>,
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
            clients: DashMap::new(),
            counts: DashMap::new(),
            api_keys: DashMap::new(),
        }
    }

    /// Applies the newest state of a link. A link's code never changes, so the
    /// record replaces the previous one.
    pub fn apply(&self, record: LinkRecord) {
        self.apply_ref(&record);
    }

    /// [`apply`](Self::apply) without taking the record.
    pub fn apply_ref(&self, record: &LinkRecord) {
        self.links.apply(record);
        if let Some(by_id) = &self.by_id {
            by_id.insert(record.link_id.clone(), record.code.clone());
        }
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
        let code = self.by_id.as_ref()?.get(link_id)?.value().clone();
        self.links.resolve(code.as_str()).map(|l| Arc::new(l.to_record()))
    }

    /// Applies the newest state of a client.
    ///
    /// The newest record wins by `updated_at_ms`: the API applies what it
    /// writes at once and its consumer of the clients topic brings the same
    /// records again later, so an older record can arrive after a newer one;
    /// it must not undo it. Equal times apply in arrival (the topic's) order.
    pub fn apply_client(&self, record: ClientRecord) {
        match self.clients.entry(record.client_id.clone()) {
            dashmap::Entry::Occupied(mut current) => {
                if current.get().updated_at_ms <= record.updated_at_ms {
                    current.insert(Arc::new(record));
                }
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(record));
            }
        }
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
        self.clients.clear();
        self.counts.clear();
        self.api_keys.clear();
    }

    pub fn apply_api_key(&self, key: ApiKeyRecord) {
        self.api_keys.insert(key.key_hash.clone(), Arc::new(key));
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

    fn client(status: ClientStatus, updated_at_ms: i64) -> ClientRecord {
        ClientRecord {
            client_id: ClientId::parse("acme".to_owned()).unwrap(),
            status,
            fallback_url: None,
            hot_spread: 1,
            updated_at_ms,
            allowed_networks: Vec::new(),
        }
    }

    /// The API applies what it writes at once, and its registry consumer
    /// delivers the same records later: an older record arriving after a
    /// newer one must not undo it (a client resumed, then briefly paused again).
    #[test]
    fn an_older_client_record_does_not_replace_a_newer_one() {
        let registry = Registry::new();
        registry.apply_client(client(ClientStatus::Paused, 1_000));
        registry.apply_client(client(ClientStatus::Active, 2_000));
        registry.apply_client(client(ClientStatus::Paused, 1_000));
        assert!(!registry.client_paused("acme"));
        registry.apply_client(client(ClientStatus::Paused, 2_000));
        assert!(registry.client_paused("acme"), "a record as new as the current one applies (the topic's order)");
    }
}
