//! The edge's local copy of the registry, so that a restart is ready in
//! seconds instead of re-reading every link from the broker.
//!
//! A snapshot holds the link table's shards as they are in memory (see
//! [`crate::links`]), the clients, click counts and API keys (Avro, as on the
//! topics), and the position it covers in every registry partition: the next
//! offset and a CRC-32 of the last record applied. The tail resumes from those
//! offsets, so whatever changed while the edge was down is applied before it
//! reports ready.
//!
//! Nothing in a snapshot is trusted until it checks out; any doubt means a full
//! load from the topics instead, never a wrong destination:
//! - the header and the body each carry a CRC-32, and the file ends with a
//!   marker (a cut or altered file fails here);
//! - the cluster id and the set of topics and partitions must be the ones the
//!   edge is configured with;
//! - each offset must lie between the partition's log start and end (below the
//!   start, records it never saw may have been removed; past the end, it is
//!   another log);
//! - the record just before each offset is read back and must match the CRC
//!   (same topic name, other broker or recreated topic);
//! - every entry of every shard must parse and belong to its shard.
//!
//! Written to a temporary file, fsynced, then renamed over the old one, so a
//! crash mid-write leaves the previous snapshot.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use rdkafka::error::KafkaError;
use ricochet_schemas::{ApiKeyRecord, ClientRecord, Codec, CodecError, LinkCount};

use crate::links::{ImportError, SHARDS};
use crate::table::Registry;

const MAGIC: &[u8; 8] = b"RICOREG1";
const END: &[u8; 8] = b"RICOEND1";

/// Where the tail is in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The next offset to apply: everything before it is in the table.
    pub next: i64,
    /// CRC-32 of the payload at `next - 1` (0 when nothing was read).
    pub last_crc: u32,
}

/// Positions by (topic, partition).
pub type Positions = HashMap<(String, i32), Position>;

/// One partition's position, to be checked against the broker.
pub struct Check {
    pub topic: String,
    pub partition: i32,
    pub position: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    #[error("snapshot i/o: {0}")]
    Io(#[from] io::Error),
    #[error("not a registry snapshot (or another format version)")]
    Format,
    #[error("snapshot checksum mismatch in the {0}")]
    Checksum(&'static str),
    #[error("snapshot is cut short or malformed: {0}")]
    Malformed(&'static str),
    #[error("snapshot is of cluster {found:?}, the broker is {expected:?}")]
    Cluster { found: String, expected: String },
    #[error("snapshot covers other topics or partitions than the configured ones")]
    Topics,
    #[error("snapshot offset {next} of {topic}/{partition} is outside the log [{low}, {high}]")]
    OutOfRange { topic: String, partition: i32, next: i64, low: i64, high: i64 },
    #[error("the record before offset {next} of {topic}/{partition} is not the one the snapshot saw")]
    Unverified { topic: String, partition: i32, next: i64 },
    #[error("checking the snapshot against the broker: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Shard(#[from] ImportError),
    #[error("snapshot record: {0}")]
    Record(#[from] CodecError),
}

/// What a good snapshot gave the tail.
pub struct Snapshot {
    pub positions: HashMap<(String, i32), Position>,
}

/// What [`write`] wrote.
pub struct Written {
    pub links: usize,
    pub bytes: u64,
    pub millis: u64,
}

impl Snapshot {
    /// Checks the snapshot at `path` against the broker (`cluster_id`, the
    /// `(log start, end)` of every configured partition, and `verify`, which
    /// reads back the record before a position), then loads it into `table`.
    /// On an error `table` may hold part of the snapshot: the caller clears it.
    pub fn load(
        path: &Path,
        cluster_id: &str,
        watermarks: &HashMap<(String, i32), (i64, i64)>,
        table: &Registry,
        mut verify: impl FnMut(&Check) -> Result<bool, KafkaError>,
    ) -> Result<Snapshot, SnapshotError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
            Err(e) => return Err(e.into()),
        };
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic)?;
        if &magic != MAGIC {
            return Err(SnapshotError::Format);
        }
        let header_len = read_u32(&mut input)? as usize;
        if header_len > 1 << 24 {
            return Err(SnapshotError::Malformed("header length"));
        }
        let mut header = vec![0u8; header_len];
        read_exact(&mut input, &mut header)?;
        if read_u32(&mut input)? != crc32fast::hash(&header) {
            return Err(SnapshotError::Checksum("header"));
        }
        let (found_cluster, positions) = parse_header(&header)?;
        if found_cluster != cluster_id {
            return Err(SnapshotError::Cluster { found: found_cluster, expected: cluster_id.to_owned() });
        }
        if positions.len() != watermarks.len() || positions.keys().any(|k| !watermarks.contains_key(k)) {
            return Err(SnapshotError::Topics);
        }
        for ((topic, partition), position) in &positions {
            let (low, high) = watermarks[&(topic.clone(), *partition)];
            let next = position.next;
            if next < low || next > high {
                return Err(SnapshotError::OutOfRange { topic: topic.clone(), partition: *partition, next, low, high });
            }
            // At the log start there is no earlier record left to compare.
            if next > low {
                let check = Check { topic: topic.clone(), partition: *partition, position: *position };
                if !verify(&check)? {
                    return Err(SnapshotError::Unverified { topic: topic.clone(), partition: *partition, next });
                }
            }
        }

        let mut body = CrcReader { inner: input, crc: crc32fast::Hasher::new() };
        if read_u32(&mut body)? as usize != SHARDS {
            return Err(SnapshotError::Format);
        }
        // Shards are read (and summed) in file order on this thread and
        // checked and indexed on others, as many at once as there are cores:
        // at 10M links that check is ~0.8 µs a link, most of a restart. The
        // bytes read become the shard's arena, so shards in flight cost no
        // memory beyond the table being built.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| -> Result<(), SnapshotError> {
            let mut importing = std::collections::VecDeque::new();
            for shard in 0..SHARDS {
                let count = read_u32(&mut body)? as usize;
                let mut names = Vec::with_capacity(count.min(1 << 20));
                for _ in 0..count {
                    names.push(read_str(&mut body)?.into_boxed_str());
                }
                let len = read_u64(&mut body)?;
                if len > u32::MAX as u64 {
                    return Err(SnapshotError::Malformed("shard length"));
                }
                let mut entries = Vec::new();
                entries.try_reserve_exact(len as usize).map_err(|_| SnapshotError::Malformed("shard length"))?;
                (&mut body).take(len).read_to_end(&mut entries)?;
                if entries.len() as u64 != len {
                    return Err(SnapshotError::Malformed("cut inside a shard"));
                }
                if importing.len() >= workers {
                    join_import(importing.pop_front())?;
                }
                importing.push_back(scope.spawn(move || table.links().import_shard(shard, names, entries)));
            }
            while let Some(handle) = importing.pop_front() {
                join_import(Some(handle))?;
            }
            Ok(())
        })?;
        let clients: Codec<ClientRecord> = Codec::new();
        let counts: Codec<LinkCount> = Codec::new();
        let keys: Codec<ApiKeyRecord> = Codec::new();
        // Decoded first, applied only once the checksum holds.
        let mut records = (Vec::new(), Vec::new(), Vec::new());
        for payload in read_records(&mut body)? {
            records.0.push(clients.decode(&payload)?);
        }
        for payload in read_records(&mut body)? {
            records.1.push(counts.decode(&payload)?);
        }
        for payload in read_records(&mut body)? {
            records.2.push(keys.decode(&payload)?);
        }
        let computed = body.crc.clone().finalize();
        let mut input = body.inner;
        if read_u32(&mut input)? != computed {
            return Err(SnapshotError::Checksum("body"));
        }
        read_exact(&mut input, &mut magic)?;
        if &magic != END || input.read(&mut [0u8; 1])? != 0 {
            return Err(SnapshotError::Malformed("end marker"));
        }
        records.0.into_iter().for_each(|c| table.apply_client(c));
        records.1.into_iter().for_each(|c| table.apply_count(c));
        records.2.into_iter().for_each(|k| table.apply_api_key(k));
        Ok(Snapshot { positions })
    }
}

/// Writes `table` with the `positions` it covers. The positions must have been
/// taken before the table is read (a record applied meanwhile is applied again
/// on the next start, which is harmless: the newest record of a key wins).
pub fn write(
    path: &Path,
    table: &Registry,
    cluster_id: &str,
    positions: &HashMap<(String, i32), Position>,
) -> Result<Written, SnapshotError> {
    let started = Instant::now();
    let tmp = path.with_extension("snapshot-tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut header = Vec::new();
    put_str(&mut header, cluster_id);
    header.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    let mut sorted: Vec<_> = positions.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for ((topic, partition), p) in sorted {
        put_str(&mut header, topic);
        header.extend_from_slice(&partition.to_le_bytes());
        header.extend_from_slice(&p.next.to_le_bytes());
        header.extend_from_slice(&p.last_crc.to_le_bytes());
    }
    out.write_all(MAGIC)?;
    out.write_all(&(header.len() as u32).to_le_bytes())?;
    out.write_all(&header)?;
    out.write_all(&crc32fast::hash(&header).to_le_bytes())?;

    let mut body = CrcWriter { inner: out, crc: crc32fast::Hasher::new(), bytes: 0 };
    body.write_all(&(SHARDS as u32).to_le_bytes())?;
    for shard in 0..SHARDS {
        // A copy of the live entries, taken under the shard's read lock; written without it.
        let (names, entries) = table.links().export_shard(shard);
        body.write_all(&(names.len() as u32).to_le_bytes())?;
        for name in &names {
            let mut buf = Vec::with_capacity(name.len() + 4);
            put_str(&mut buf, name);
            body.write_all(&buf)?;
        }
        body.write_all(&(entries.len() as u64).to_le_bytes())?;
        body.write_all(&entries)?;
    }
    let clients: Codec<ClientRecord> = Codec::new();
    let counts: Codec<LinkCount> = Codec::new();
    let keys: Codec<ApiKeyRecord> = Codec::new();
    let encoded_clients = table.clients().iter().map(|c| clients.encode(c)).collect::<Result<Vec<_>, _>>()?;
    let encoded_counts = table.counts().iter().map(|c| counts.encode(c)).collect::<Result<Vec<_>, _>>()?;
    let encoded_keys = table.api_keys().iter().map(|k| keys.encode(k)).collect::<Result<Vec<_>, _>>()?;
    for records in [encoded_clients, encoded_counts, encoded_keys] {
        body.write_all(&(records.len() as u32).to_le_bytes())?;
        for r in records {
            body.write_all(&(r.len() as u32).to_le_bytes())?;
            body.write_all(&r)?;
        }
    }
    let crc = body.crc.clone().finalize();
    let bytes = body.bytes;
    let mut out = body.inner;
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(END)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself must survive a crash.
        File::open(dir)?.sync_all()?;
    }
    Ok(Written { links: table.len(), bytes, millis: started.elapsed().as_millis() as u64 })
}

fn parse_header(header: &[u8]) -> Result<(String, Positions), SnapshotError> {
    let mut r = header;
    let cluster = read_str(&mut r)?;
    let count = read_u32(&mut r)?;
    let mut positions = HashMap::new();
    for _ in 0..count {
        let topic = read_str(&mut r)?;
        let partition = read_u32(&mut r)? as i32;
        let next = read_u64(&mut r)? as i64;
        let last_crc = read_u32(&mut r)?;
        positions.insert((topic, partition), Position { next, last_crc });
    }
    if !r.is_empty() {
        return Err(SnapshotError::Malformed("header has trailing bytes"));
    }
    Ok((cluster, positions))
}

fn join_import(
    handle: Option<std::thread::ScopedJoinHandle<'_, Result<(), ImportError>>>,
) -> Result<(), SnapshotError> {
    match handle.map(|h| h.join()) {
        None => Ok(()),
        Some(Ok(imported)) => Ok(imported?),
        Some(Err(panic)) => std::panic::resume_unwind(panic),
    }
}

fn read_records(r: &mut impl Read) -> Result<Vec<Vec<u8>>, SnapshotError> {
    let count = read_u32(r)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = read_u32(r)? as usize;
        if len > 1 << 24 {
            return Err(SnapshotError::Malformed("record length"));
        }
        let mut buf = vec![0u8; len];
        read_exact(r, &mut buf)?;
        out.push(buf);
    }
    Ok(out)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SnapshotError::Malformed("cut short"),
        _ => SnapshotError::Io(e),
    })
}

fn read_u32(r: &mut impl Read) -> Result<u32, SnapshotError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> Result<u64, SnapshotError> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_str(r: &mut impl Read) -> Result<String, SnapshotError> {
    let len = read_u32(r)? as usize;
    if len > 1 << 20 {
        return Err(SnapshotError::Malformed("string length"));
    }
    let mut buf = vec![0u8; len];
    read_exact(r, &mut buf)?;
    String::from_utf8(buf).map_err(|_| SnapshotError::Malformed("string is not UTF-8"))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use ricochet_schemas::{CampaignId, ClientId, ClientStatus, LinkCode, LinkId, LinkRecord, LinkStatus};

    use super::*;

    fn registry(n: usize) -> Registry {
        let r = Registry::for_edge();
        for i in 0..n {
            r.apply(LinkRecord {
                link_id: LinkId::mint(),
                code: LinkCode::parse(format!("Code{i:04}")).unwrap(),
                client_id: ClientId::parse(format!("c{}", i % 7)).unwrap(),
                campaign_id: CampaignId::parse("spring").unwrap(),
                destination_url: format!("https://shop{}.example/p/{i}", i % 3),
                status: LinkStatus::Active,
                created_at_ms: 1,
                valid_from_ms: None,
                valid_until_ms: None,
                click_limit: (i % 5 == 0).then_some(10),
                honeypot: false,
            });
        }
        r.apply_client(ClientRecord {
            client_id: ClientId::parse("c1").unwrap(),
            status: ClientStatus::Paused,
            fallback_url: Some("https://c1.example/".into()),
            hot_spread: 1,
            updated_at_ms: 2,
            allowed_networks: vec!["203.0.113.0/24".into()],
        });
        r
    }

    fn positions() -> HashMap<(String, i32), Position> {
        HashMap::from([
            (("links".to_owned(), 0), Position { next: 300, last_crc: 77 }),
            (("clients".to_owned(), 0), Position { next: 0, last_crc: 0 }),
        ])
    }

    fn watermarks() -> HashMap<(String, i32), (i64, i64)> {
        HashMap::from([(("links".to_owned(), 0), (0, 310)), (("clients".to_owned(), 0), (0, 0))])
    }

    fn load(path: &Path, w: &HashMap<(String, i32), (i64, i64)>) -> (Registry, Result<Snapshot, SnapshotError>) {
        let r = Registry::for_edge();
        let got = Snapshot::load(path, "cluster-a", w, &r, |c| Ok(c.position.last_crc == 77));
        (r, got)
    }

    #[test]
    fn round_trips_links_clients_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.snapshot");
        let original = registry(300);
        write(&path, &original, "cluster-a", &positions()).unwrap();
        let (copy, got) = load(&path, &watermarks());
        assert_eq!(got.unwrap().positions, positions());
        assert_eq!(copy.len(), 300);
        for i in 0..300 {
            let code = format!("Code{i:04}");
            assert_eq!(copy.resolve(&code).unwrap().to_record(), original.resolve(&code).unwrap().to_record());
        }
        assert!(copy.client_paused("c1"));
    }

    #[test]
    fn refuses_corrupt_cut_stale_and_foreign_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.snapshot");
        write(&path, &registry(300), "cluster-a", &positions()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let bad = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            load(&path, &watermarks()).1.err().expect("refused")
        };
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        assert!(matches!(bad(&flipped), SnapshotError::Checksum("body") | SnapshotError::Shard(_)), "a flipped bit");
        assert!(matches!(bad(&good[..good.len() - 3]), SnapshotError::Malformed(_)), "cut short");
        assert!(matches!(bad(&good[..middle]), SnapshotError::Malformed(_) | SnapshotError::Shard(_)), "half");
        assert!(matches!(bad(b"garbage!garbage!"), SnapshotError::Format));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(bad(&longer), SnapshotError::Malformed("end marker")));

        std::fs::write(&path, &good).unwrap();
        let r = Registry::for_edge();
        let other = Snapshot::load(&path, "cluster-b", &watermarks(), &r, |_| Ok(true));
        assert!(matches!(other, Err(SnapshotError::Cluster { .. })));
        let mut compacted_away = watermarks();
        compacted_away.insert(("links".to_owned(), 0), (301, 400));
        assert!(matches!(load(&path, &compacted_away).1, Err(SnapshotError::OutOfRange { .. })), "below log start");
        let mut shorter = watermarks();
        shorter.insert(("links".to_owned(), 0), (0, 299));
        assert!(matches!(load(&path, &shorter).1, Err(SnapshotError::OutOfRange { .. })), "past the end");
        let mut more = watermarks();
        more.insert(("api_keys".to_owned(), 0), (0, 0));
        assert!(matches!(load(&path, &more).1, Err(SnapshotError::Topics)));
        let unverified = Snapshot::load(&path, "cluster-a", &watermarks(), &r, |_| Ok(false));
        assert!(matches!(unverified, Err(SnapshotError::Unverified { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(load(&path, &watermarks()).1, Err(SnapshotError::Missing)));
    }
}
