//! The in-memory registry every edge and API process holds.

use std::sync::Arc;

use dashmap::DashMap;
use ricochet_schemas::{
    ApiKeyRecord, ClientId, ClientRecord, ClientStatus, LinkCode, LinkCount, LinkId, LinkRecord, LinkStatus,
};

/// All links, by code (the redirect path) and by id (the API), and all clients.
///
/// `DashMap` shards its locks, so the many concurrent readers on the redirect
/// path do not contend with the one tailing writer.
#[derive(Default)]
pub struct Registry {
    by_code: DashMap<LinkCode, Arc<LinkRecord>>,
    by_id: DashMap<LinkId, Arc<LinkRecord>>,
    clients: DashMap<ClientId, Arc<ClientRecord>>,
    /// Clicks counted so far for links with a click limit, fed back by the aggregator.
    counts: DashMap<LinkId, i64>,
    /// API keys by the hex SHA-256 of the key.
    api_keys: DashMap<String, Arc<ApiKeyRecord>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the newest state of a link. A link's code never changes, so the
    /// record replaces the previous one under both keys.
    pub fn apply(&self, record: LinkRecord) {
        let record = Arc::new(record);
        self.by_code.insert(record.code.clone(), record.clone());
        self.by_id.insert(record.link_id.clone(), record);
    }

    /// The link behind a tracking-URL code.
    pub fn resolve(&self, code: &str) -> Option<Arc<LinkRecord>> {
        self.by_code.get(code).map(|r| r.value().clone())
    }

    pub fn get(&self, link_id: &str) -> Option<Arc<LinkRecord>> {
        self.by_id.get(link_id).map(|r| r.value().clone())
    }

    /// Applies the newest state of a client.
    pub fn apply_client(&self, record: ClientRecord) {
        self.clients.insert(record.client_id.clone(), Arc::new(record));
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
    pub fn limit_reached(&self, link: &LinkRecord) -> bool {
        link.click_limit.is_some_and(|limit| self.counts.get(link.link_id.as_str()).is_some_and(|c| *c >= limit))
    }

    /// Active links that have a click limit: the ones whose counts are fed back.
    pub fn limited_links(&self) -> Vec<Arc<LinkRecord>> {
        self.by_id
            .iter()
            .filter(|r| r.click_limit.is_some() && r.status == LinkStatus::Active)
            .map(|r| r.value().clone())
            .collect()
    }

    pub fn apply_api_key(&self, key: ApiKeyRecord) {
        self.api_keys.insert(key.key_hash.clone(), Arc::new(key));
    }

    /// The client an unrevoked API key (given by its hash) belongs to.
    pub fn api_key_client(&self, key_hash: &str) -> Option<ClientId> {
        self.api_keys.get(key_hash).filter(|k| !k.revoked).map(|k| k.client_id.clone())
    }

    /// The links of one client (for campaign listings); a scan, so callers cache.
    pub fn links_of(&self, client_id: &str) -> Vec<Arc<LinkRecord>> {
        self.by_id.iter().filter(|r| r.client_id.as_str() == client_id).map(|r| r.value().clone()).collect()
    }

    pub fn contains_code(&self, code: &str) -> bool {
        self.by_code.contains_key(code)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
