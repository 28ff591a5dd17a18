//! The links, compact: ~90 bytes per link instead of ~650, so that 10 million
//! fit in an edge's gigabyte.
//!
//! Each link is one variable-length entry appended to its shard's byte arena,
//! and the shard's index (`hashbrown::HashTable<u32>`) holds only the entry's
//! offset, compared against the code stored in the entry: no key is stored
//! twice. Client ids, campaign ids and destinations' `scheme://host` are
//! interned per shard (a few thousand distinct values for millions of links),
//! the link id is kept as 16 bytes when it is a UUID in hex, and numbers are
//! varints. A lookup ([`LinkTable::resolve`]) hashes the code, takes the
//! shard's read lock and returns a [`LinkRef`] that lends the fields out by
//! reference: no allocation.
//!
//! Updating a link appends its new entry and leaves the old bytes dead; a
//! shard is rewritten once more than half of it is dead (updates are rare:
//! pauses and edits, next to millions of creations).
//!
//! Shards are picked with a fixed hash seed so that the layout can be written
//! to a snapshot and read back as is ([`crate::snapshot`]). Codes are minted
//! by us and inserted only by the registry's writers, so a fixed seed gives an
//! attacker no way to build long probe chains.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use hashbrown::HashTable;
use ricochet_schemas::{CampaignId, ClientId, LinkCode, LinkId, LinkRecord, LinkStatus};

/// Shards: writes to one never stop reads of the others, and each arena stays
/// far below the 4 GiB its `u32` offsets can address.
pub const SHARDS: usize = 16;
/// Part of the snapshot format: changing it changes every shard's contents.
const HASH_SEED: u64 = 0x7269_636f_6368_6574; // "ricochet"

const STATUS_MASK: u8 = 0b11;
const HONEYPOT: u8 = 1 << 2;
const HAS_VALID_FROM: u8 = 1 << 3;
const HAS_VALID_UNTIL: u8 = 1 << 4;
const HAS_CLICK_LIMIT: u8 = 1 << 5;
/// The link id is a 32-character lowercase hex UUID, stored as its 16 bytes.
const UUID_ID: u8 = 1 << 6;

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(HASH_SEED)
}

/// Every link, by code.
pub struct LinkTable {
    shards: Box<[RwLock<Shard>]>,
    len: AtomicUsize,
}

impl Default for LinkTable {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkTable {
    pub fn new() -> Self {
        LinkTable { shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(), len: AtomicUsize::new(0) }
    }

    fn shard_of(hash: u64) -> usize {
        // The index uses the low bits (and the top 7 for its control bytes); the
        // shard takes bits in between so that both stay well spread.
        ((hash >> 32) as usize) % SHARDS
    }

    /// Applies the newest state of a link (a link's code never changes).
    pub fn apply(&self, record: &LinkRecord) {
        let hash = hasher().hash_one(record.code.as_str());
        let mut shard = write(&self.shards[Self::shard_of(hash)]);
        if shard.upsert(hash, record) {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The link behind a tracking-URL code. Holds the shard's read lock until
    /// dropped: keep it for the request, not across an `.await`.
    pub fn resolve(&self, code: &str) -> Option<LinkRef<'_>> {
        let hash = hasher().hash_one(code);
        let shard = read(&self.shards[Self::shard_of(hash)]);
        let at = shard.find(hash, code)?;
        let layout = Layout::parse(&shard.arena, at as usize)?;
        Some(LinkRef { shard, layout })
    }

    pub fn contains(&self, code: &str) -> bool {
        self.resolve(code).is_some()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every link, one shard's read lock at a time (for the API's
    /// scans and for snapshots).
    pub fn for_each(&self, mut f: impl FnMut(&LinkRef<'_>)) {
        for lock in self.shards.iter() {
            let shard = read(lock);
            let offsets: Vec<u32> = shard.index.iter().copied().collect();
            let mut link = LinkRef { shard, layout: Layout::default() };
            for at in offsets {
                if let Some(layout) = Layout::parse(&link.shard.arena, at as usize) {
                    link.layout = layout;
                    f(&link);
                }
            }
        }
    }

    /// One shard's live contents in the snapshot's form: its interned names,
    /// then its entries back to back.
    pub(crate) fn export_shard(&self, i: usize) -> (Vec<Box<str>>, Vec<u8>) {
        let shard = read(&self.shards[i]);
        let mut entries = Vec::with_capacity(shard.arena.len() - shard.dead_bytes);
        for &at in shard.index.iter() {
            if let Some(layout) = Layout::parse(&shard.arena, at as usize) {
                entries.extend_from_slice(&shard.arena[at as usize..layout.end as usize]);
            }
        }
        (shard.names.strings.clone(), entries)
    }

    /// Replaces shard `i` with entries written by [`export_shard`](Self::export_shard).
    /// Every entry is checked (its fields parse, its names exist, its strings are
    /// UTF-8, its code belongs to this shard) before anything is replaced.
    pub(crate) fn import_shard(&self, i: usize, names: Vec<Box<str>>, entries: Vec<u8>) -> Result<(), ImportError> {
        // Counted first so the index is sized once: growing it from empty
        // rehashed every code about twice (each rehash hashes it again).
        let mut entries_in = 0usize;
        let mut at = 0usize;
        while at < entries.len() {
            at = Layout::parse(&entries, at).ok_or(ImportError("entry does not parse"))?.end as usize;
            entries_in += 1;
        }
        let mut index = HashTable::with_capacity(entries_in);
        let mut at = 0usize;
        let mut count = 0usize;
        while at < entries.len() {
            if at > u32::MAX as usize {
                return Err(ImportError("shard larger than 4 GiB"));
            }
            let layout = Layout::parse(&entries, at).ok_or(ImportError("entry does not parse"))?;
            let code = std::str::from_utf8(layout.code(&entries)).map_err(|_| ImportError("code is not UTF-8"))?;
            let hash = hasher().hash_one(code);
            if Self::shard_of(hash) != i {
                return Err(ImportError("entry in the wrong shard"));
            }
            if [layout.client, layout.campaign, layout.host].iter().any(|n| *n as usize >= names.len()) {
                return Err(ImportError("entry names an unknown interned string"));
            }
            if std::str::from_utf8(&entries[layout.rest.0 as usize..layout.rest.1 as usize]).is_err()
                || (layout.flags & UUID_ID == 0 && std::str::from_utf8(layout.link_id_bytes(&entries)).is_err())
            {
                return Err(ImportError("string is not UTF-8"));
            }
            let arena = &entries;
            if index.find(hash, |&o: &u32| Layout::code_at(arena, o as usize) == code.as_bytes()).is_some() {
                return Err(ImportError("code appears twice"));
            }
            index.insert_unique(hash, at as u32, |&o: &u32| hash_entry(arena, o));
            at = layout.end as usize;
            count += 1;
        }
        let mut interner = Interner::default();
        for name in names {
            interner.intern(&name);
        }
        let mut shard = write(&self.shards[i]);
        let before = shard.index.len();
        *shard = Shard { index, arena: entries, names: interner, dead_bytes: 0 };
        self.len.fetch_sub(before, Ordering::Relaxed);
        self.len.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets every link (a snapshot that failed half-way is discarded this way).
    pub fn clear(&self) {
        for lock in self.shards.iter() {
            *write(lock) = Shard::default();
        }
        self.len.store(0, Ordering::Relaxed);
    }
}

/// Why a snapshot's shard was refused.
#[derive(Debug, thiserror::Error)]
#[error("snapshot shard: {0}")]
pub struct ImportError(&'static str);

// A poisoned lock means a panic while applying a record; the data under it is
// still a valid table (each write is one push and one index update).
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<Shard>) -> std::sync::RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn hash_entry(arena: &[u8], at: u32) -> u64 {
    hasher().hash_one(std::str::from_utf8(Layout::code_at(arena, at as usize)).unwrap_or(""))
}

#[derive(Default)]
struct Shard {
    index: HashTable<u32>,
    arena: Vec<u8>,
    names: Interner,
    dead_bytes: usize,
}

impl Shard {
    fn find(&self, hash: u64, code: &str) -> Option<u32> {
        self.index.find(hash, |&at| Layout::code_at(&self.arena, at as usize) == code.as_bytes()).copied()
    }

    /// Returns whether the link is new.
    fn upsert(&mut self, hash: u64, record: &LinkRecord) -> bool {
        let at = self.arena.len();
        assert!(at <= u32::MAX as usize, "a registry shard outgrew 4 GiB");
        encode(record, &mut self.names, &mut self.arena);
        let at = at as u32;
        let new = match self.find(hash, record.code.as_str()) {
            Some(old) => {
                let old_end = Layout::parse(&self.arena, old as usize).map_or(old as usize, |l| l.end as usize);
                self.dead_bytes += old_end - old as usize;
                let arena = &self.arena;
                if let Some(slot) = self
                    .index
                    .find_mut(hash, |&o| Layout::code_at(arena, o as usize) == record.code.as_str().as_bytes())
                {
                    *slot = at;
                }
                false
            }
            None => {
                let arena = &self.arena;
                self.index.insert_unique(hash, at, |&o| hash_entry(arena, o));
                true
            }
        };
        if self.dead_bytes > 1 << 20 && self.dead_bytes * 2 > self.arena.len() {
            self.compact();
        }
        new
    }

    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.dead_bytes);
        for slot in self.index.iter_mut() {
            let Some(layout) = Layout::parse(&self.arena, *slot as usize) else { continue };
            let moved = arena.len() as u32;
            arena.extend_from_slice(&self.arena[*slot as usize..layout.end as usize]);
            *slot = moved;
        }
        self.arena = arena;
        self.dead_bytes = 0;
    }
}

/// Strings seen many times, stored once; an index is a varint in each entry.
#[derive(Default)]
struct Interner {
    strings: Vec<Box<str>>,
    lookup: HashTable<u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        let hash = hasher().hash_one(s);
        let strings = &self.strings;
        if let Some(&i) = self.lookup.find(hash, |&i| &*strings[i as usize] == s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.into());
        let strings = &self.strings;
        self.lookup.insert_unique(hash, i, |&i| hasher().hash_one(&*strings[i as usize]));
        i
    }

    fn get(&self, i: u32) -> &str {
        self.strings.get(i as usize).map_or("", |s| s)
    }
}

/// `https://host` of a destination, interned; the rest (path, query) is kept per link.
fn split_destination(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
    url.split_at(end)
}

// Entry: flags, code (len + bytes), link id (16 bytes or len + bytes), client,
// campaign and host (interned indexes), the destination's rest (len + bytes),
// created_at, then valid_from, valid_until, click_limit if flagged. Lengths,
// indexes and numbers are LEB128 varints (numbers zig-zagged).
fn encode(record: &LinkRecord, names: &mut Interner, out: &mut Vec<u8>) {
    let uuid = uuid_bytes(record.link_id.as_str());
    let mut flags = match record.status {
        LinkStatus::Active => 0,
        LinkStatus::Paused => 1,
        LinkStatus::Deleted => 2,
    };
    for (set, bit) in [
        (record.honeypot, HONEYPOT),
        (record.valid_from_ms.is_some(), HAS_VALID_FROM),
        (record.valid_until_ms.is_some(), HAS_VALID_UNTIL),
        (record.click_limit.is_some(), HAS_CLICK_LIMIT),
        (uuid.is_some(), UUID_ID),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.push(flags);
    put_bytes(out, record.code.as_str().as_bytes());
    match uuid {
        Some(bytes) => out.extend_from_slice(&bytes),
        None => put_bytes(out, record.link_id.as_str().as_bytes()),
    }
    let (host, rest) = split_destination(&record.destination_url);
    put_varint(out, names.intern(record.client_id.as_str()).into());
    put_varint(out, names.intern(record.campaign_id.as_str()).into());
    put_varint(out, names.intern(host).into());
    put_bytes(out, rest.as_bytes());
    put_varint(out, zigzag(record.created_at_ms));
    for v in [record.valid_from_ms, record.valid_until_ms, record.click_limit].into_iter().flatten() {
        put_varint(out, zigzag(v));
    }
}

fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Where an entry's fields are in its arena (offsets), parsed once per lookup.
#[derive(Clone, Copy, Default)]
struct Layout {
    flags: u8,
    code: (u32, u32),
    link_id: (u32, u32),
    client: u32,
    campaign: u32,
    host: u32,
    rest: (u32, u32),
    created_at_ms: i64,
    valid_from_ms: Option<i64>,
    valid_until_ms: Option<i64>,
    click_limit: Option<i64>,
    end: u32,
}

impl Layout {
    fn code_at(arena: &[u8], at: usize) -> &[u8] {
        let mut p = at + 1;
        match get_varint(arena, &mut p) {
            Some(len) => arena.get(p..p + len as usize).unwrap_or(&[]),
            None => &[],
        }
    }

    fn parse(buf: &[u8], at: usize) -> Option<Layout> {
        let mut p = at;
        let flags = *buf.get(p)?;
        p += 1;
        let span = |p: &mut usize| -> Option<(u32, u32)> {
            let len = get_varint(buf, p)? as usize;
            let start = *p;
            *p = start.checked_add(len).filter(|end| *end <= buf.len())?;
            Some((start as u32, *p as u32))
        };
        let code = span(&mut p)?;
        let link_id = if flags & UUID_ID != 0 {
            let start = p;
            p += 16;
            if p > buf.len() {
                return None;
            }
            (start as u32, p as u32)
        } else {
            span(&mut p)?
        };
        let client = u32::try_from(get_varint(buf, &mut p)?).ok()?;
        let campaign = u32::try_from(get_varint(buf, &mut p)?).ok()?;
        let host = u32::try_from(get_varint(buf, &mut p)?).ok()?;
        let rest = span(&mut p)?;
        let created_at_ms = unzigzag(get_varint(buf, &mut p)?);
        let mut optional = |bit: u8| -> Option<Option<i64>> {
            if flags & bit == 0 {
                return Some(None);
            }
            Some(Some(unzigzag(get_varint(buf, &mut p)?)))
        };
        let valid_from_ms = optional(HAS_VALID_FROM)?;
        let valid_until_ms = optional(HAS_VALID_UNTIL)?;
        let click_limit = optional(HAS_CLICK_LIMIT)?;
        if flags & STATUS_MASK > 2 {
            return None;
        }
        Some(Layout {
            flags,
            code,
            link_id,
            client,
            campaign,
            host,
            rest,
            created_at_ms,
            valid_from_ms,
            valid_until_ms,
            click_limit,
            end: p as u32,
        })
    }

    fn code<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.code.0 as usize..self.code.1 as usize]
    }

    fn link_id_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.link_id.0 as usize..self.link_id.1 as usize]
    }
}

/// One link, lent out by reference while its shard's read lock is held.
///
/// The accessors carry `LinkRecord`'s field names. Two differ in shape: the
/// link id is [`LinkIdRef`] (it may be stored as 16 bytes) and the destination
/// is [`DestinationRef`] (its host is interned), both of which format without
/// allocating.
pub struct LinkRef<'a> {
    shard: RwLockReadGuard<'a, Shard>,
    layout: Layout,
}

impl LinkRef<'_> {
    fn str(&self, span: (u32, u32)) -> &str {
        // Entries are only written from `&str`s or checked on import.
        std::str::from_utf8(&self.shard.arena[span.0 as usize..span.1 as usize]).unwrap_or("")
    }

    pub fn code(&self) -> &str {
        self.str(self.layout.code)
    }

    pub fn link_id(&self) -> LinkIdRef<'_> {
        let bytes = self.layout.link_id_bytes(&self.shard.arena);
        if self.layout.flags & UUID_ID != 0 {
            LinkIdRef::Uuid(bytes.try_into().expect("16 bytes by construction"))
        } else {
            LinkIdRef::Text(std::str::from_utf8(bytes).unwrap_or(""))
        }
    }

    pub fn client_id(&self) -> &str {
        self.shard.names.get(self.layout.client)
    }

    pub fn campaign_id(&self) -> &str {
        self.shard.names.get(self.layout.campaign)
    }

    pub fn destination_url(&self) -> DestinationRef<'_> {
        DestinationRef { host: self.shard.names.get(self.layout.host), rest: self.str(self.layout.rest) }
    }

    pub fn status(&self) -> LinkStatus {
        match self.layout.flags & STATUS_MASK {
            0 => LinkStatus::Active,
            1 => LinkStatus::Paused,
            _ => LinkStatus::Deleted,
        }
    }

    pub fn created_at_ms(&self) -> i64 {
        self.layout.created_at_ms
    }

    pub fn valid_from_ms(&self) -> Option<i64> {
        self.layout.valid_from_ms
    }

    pub fn valid_until_ms(&self) -> Option<i64> {
        self.layout.valid_until_ms
    }

    pub fn click_limit(&self) -> Option<i64> {
        self.layout.click_limit
    }

    pub fn honeypot(&self) -> bool {
        self.layout.flags & HONEYPOT != 0
    }

    /// The link as an owned record (allocates; for the API and for callers not
    /// yet reading the fields by reference).
    pub fn to_record(&self) -> LinkRecord {
        LinkRecord {
            link_id: LinkId::parse(self.link_id().to_string()).expect("stored link ids were valid"),
            code: LinkCode::parse(self.code()).expect("stored codes were valid"),
            client_id: ClientId::parse(self.client_id()).expect("stored client ids were valid"),
            campaign_id: CampaignId::parse(self.campaign_id()).expect("stored campaign ids were valid"),
            destination_url: self.destination_url().to_string(),
            status: self.status(),
            created_at_ms: self.created_at_ms(),
            valid_from_ms: self.valid_from_ms(),
            valid_until_ms: self.valid_until_ms(),
            click_limit: self.click_limit(),
            honeypot: self.honeypot(),
        }
    }
}

/// A link id as stored: the 16 bytes of a hex UUID, or the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkIdRef<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl LinkIdRef<'_> {
    /// Its length as text (32 for a UUID in hex).
    pub fn len(&self) -> usize {
        match self {
            LinkIdRef::Uuid(_) => 32,
            LinkIdRef::Text(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text into a stack buffer, for writers that want `&str`.
    pub fn with_str<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        match self {
            LinkIdRef::Uuid(bytes) => {
                let mut buf = [0u8; 32];
                hex::encode_to_slice(bytes, &mut buf).expect("32 bytes hold 16 in hex");
                f(std::str::from_utf8(&buf).expect("hex is ASCII"))
            }
            LinkIdRef::Text(s) => f(s),
        }
    }
}

impl fmt::Display for LinkIdRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

/// A destination as stored: the interned `scheme://host` and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationRef<'a> {
    pub host: &'a str,
    pub rest: &'a str,
}

impl DestinationRef<'_> {
    pub fn len(&self) -> usize {
        self.host.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URL's bytes, in order (for a header value or an Avro string).
    pub fn parts(&self) -> [&str; 2] {
        [self.host, self.rest]
    }
}

impl fmt::Display for DestinationRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.host)?;
        f.write_str(self.rest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link(code: &str, link_id: &str, destination: &str) -> LinkRecord {
        LinkRecord {
            link_id: LinkId::parse(link_id).unwrap(),
            code: LinkCode::parse(code).unwrap(),
            client_id: ClientId::parse("acme").unwrap(),
            campaign_id: CampaignId::parse("spring").unwrap(),
            destination_url: destination.into(),
            status: LinkStatus::Active,
            created_at_ms: 1_800_000_000_000,
            valid_from_ms: None,
            valid_until_ms: None,
            click_limit: None,
            honeypot: false,
        }
    }

    #[test]
    fn splits_the_host_from_the_rest() {
        assert_eq!(split_destination("https://a.example/p?q=1"), ("https://a.example", "/p?q=1"));
        assert_eq!(split_destination("https://a.example?q"), ("https://a.example", "?q"));
        assert_eq!(split_destination("https://a.example"), ("https://a.example", ""));
        assert_eq!(split_destination("weird"), ("weird", ""));
    }

    #[test]
    fn an_update_replaces_the_link_and_dead_bytes_are_compacted_away() {
        let table = LinkTable::new();
        let mut record = link("Abcdefgh", "0192f0c6a2b47c8d9e0f112233445566", "https://a.example/x");
        table.apply(&record);
        for i in 0..40_000 {
            record.destination_url = format!("https://b.example/{i}");
            record.status = if i % 2 == 0 { LinkStatus::Paused } else { LinkStatus::Active };
            table.apply(&record);
        }
        assert_eq!(table.len(), 1);
        let got = table.resolve("Abcdefgh").unwrap();
        assert_eq!(got.to_record(), record);
        assert!(got.shard.arena.len() < 2 << 20, "compaction kept the arena small: {}", got.shard.arena.len());
        assert!(table.resolve("Abcdefgi").is_none());
    }

    /// Any valid link (shared with `link_decode`'s tests).
    pub(crate) fn arb_link() -> impl Strategy<Value = LinkRecord> {
        (
            "[0-9A-Za-z]{8}",
            prop_oneof!["[0-9a-f]{32}", "[a-z0-9_-]{1,40}"],
            "[a-z0-9-]{1,20}",
            "[a-z0-9-]{1,20}",
            "https?://[a-z.]{1,20}(/[a-zé?&=/]{0,40})?",
            0..3u8,
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            any::<bool>(),
        )
            .prop_map(|(code, id, client, campaign, dest, status, created, from, until, limit, honeypot)| {
                LinkRecord {
                    link_id: LinkId::parse(id).unwrap(),
                    code: LinkCode::parse(code).unwrap(),
                    client_id: ClientId::parse(client).unwrap(),
                    campaign_id: CampaignId::parse(campaign).unwrap(),
                    destination_url: dest,
                    status: [LinkStatus::Active, LinkStatus::Paused, LinkStatus::Deleted][status as usize],
                    created_at_ms: created,
                    valid_from_ms: from,
                    valid_until_ms: until,
                    click_limit: limit,
                    honeypot,
                }
            })
    }

    proptest! {
        /// Every field comes back as it went in, through the table and through
        /// a shard's export and import.
        #[test]
        fn every_field_round_trips(links in proptest::collection::vec(arb_link(), 1..40)) {
            let table = LinkTable::new();
            let mut newest = std::collections::HashMap::new();
            for l in &links {
                table.apply(l);
                newest.insert(l.code.clone(), l.clone());
            }
            prop_assert_eq!(table.len(), newest.len());
            let copy = LinkTable::new();
            for i in 0..SHARDS {
                let (names, entries) = table.export_shard(i);
                copy.import_shard(i, names, entries).unwrap();
            }
            prop_assert_eq!(copy.len(), newest.len());
            for (code, l) in &newest {
                prop_assert_eq!(&table.resolve(code.as_str()).unwrap().to_record(), l);
                let got = copy.resolve(code.as_str()).unwrap();
                prop_assert_eq!(&got.to_record(), l);
                prop_assert_eq!(got.destination_url().to_string(), l.destination_url.clone());
                prop_assert_eq!(got.link_id().to_string(), l.link_id.to_string());
            }
        }
    }

    #[test]
    fn import_refuses_an_entry_in_the_wrong_shard_or_cut_short() {
        let table = LinkTable::new();
        for i in 0..200 {
            table.apply(&link(&format!("Code{i:04}"), &format!("{i:032x}"), "https://a.example/x"));
        }
        let (i, (names, entries)) =
            (0..SHARDS).map(|i| (i, table.export_shard(i))).find(|(_, (_, e))| !e.is_empty()).unwrap();
        let other = LinkTable::new();
        assert!(other.import_shard((i + 1) % SHARDS, names.clone(), entries.clone()).is_err());
        assert!(other.import_shard(i, names.clone(), entries[..entries.len() - 1].to_vec()).is_err());
        assert!(other.import_shard(i, Vec::new(), entries.clone()).is_err(), "names missing");
        assert!(other.is_empty());
        other.import_shard(i, names, entries).unwrap();
        assert!(!other.is_empty());
    }
}
