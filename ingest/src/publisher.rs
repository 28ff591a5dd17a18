//! The publisher: handlers → spool writer → disk → forwarder → Kafka.
//!
//! Three parties, each with one job:
//! - [`Publisher::publish`] (request handlers) encodes the event and offers it
//!   to a bounded channel. It never blocks: a full channel or a full spool is a
//!   counted drop, and the recipient is redirected all the same.
//! - the **writer** thread appends to the spool and fsyncs every
//!   `fsync_interval`; only fsynced records are visible to the forwarder.
//! - the **forwarder** thread reads fsynced records in order and produces them;
//!   librdkafka acknowledges each. The contiguous acknowledged position is
//!   persisted as the spool's cursor and fully acknowledged segments are deleted.
//!
//! After a crash, the forwarder resends from the cursor: records between the
//! cursor and what the broker had acknowledged arrive twice, with the same
//! event id, and are dropped downstream. A SIGKILL loses only what was not yet
//! fsynced: at most one `fsync_interval` of events.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use ricochet_schemas::{ClickEvent, Codec, CodecError};

use crate::config::PublisherConfig;
use crate::spool::{self, Position, Record, SegmentReader, SegmentWriter, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer could not be created: {0}")]
    Create(#[source] KafkaError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] CodecError),
    /// The spool holds `max_bytes` already: the broker has been away that long.
    #[error("spool is full ({bytes} bytes on disk)")]
    SpoolFull { bytes: u64 },
    /// The writer cannot keep up with the disk.
    #[error("spool queue is full")]
    QueueFull,
    #[error("publisher is shut down")]
    Closed,
}

impl PublishError {
    /// A label for the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::SpoolFull { .. } => "spool_full",
            PublishError::QueueFull => "queue_full",
            PublishError::Closed => "closed",
            _ => "error",
        }
    }
}

/// Counters since start, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub accepted: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub in_flight: AtomicU64,
}

/// What the writer tells the forwarder: how far the spool is durable.
struct Durable {
    position: Mutex<Position>,
    changed: Condvar,
    writer_done: AtomicBool,
}

struct Acks {
    stats: Arc<PublishStats>,
    done: Arc<Mutex<Vec<u64>>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ricochet_ingest_events_delivered_total").increment(1);
            }
            Err((e, _)) => {
                // With an infinite message timeout only permanent errors end up
                // here (e.g. a record the broker refuses): retrying cannot help.
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ricochet_ingest_events_failed_total").increment(1);
                tracing::error!(error = %e, "click event rejected by the broker");
            }
        }
        self.done.lock().unwrap().push(*seq);
    }
}

pub struct Publisher {
    tx: SyncSender<Vec<u8>>,
    codec: Codec<ClickEvent>,
    stats: Arc<PublishStats>,
    max_bytes: u64,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Publisher {
    /// Opens the spool (resending whatever a previous run left in it) and starts
    /// the writer and forwarder threads.
    pub fn start(config: &PublisherConfig) -> Result<Self, PublishError> {
        let stats = Arc::new(PublishStats::default());
        let dir = config.spool.dir.clone();
        let writer = SegmentWriter::open(&dir)?;
        stats.spool_bytes.store(spool::disk_bytes(&dir)?, Ordering::Relaxed);
        let durable = Arc::new(Durable {
            position: Mutex::new(writer.position()),
            changed: Condvar::new(),
            writer_done: AtomicBool::new(false),
        });
        let done = Arc::new(Mutex::new(Vec::new()));
        let producer: ThreadedProducer<Acks> = config
            .client_config()
            .create_with_context(Acks { stats: stats.clone(), done: done.clone() })
            .map_err(PublishError::Create)?;
        let (tx, rx) = mpsc::sync_channel(config.spool.queue_capacity);
        let stop = Arc::new(AtomicBool::new(false));

        let w = WriterLoop {
            rx,
            writer,
            durable: durable.clone(),
            stats: stats.clone(),
            interval: config.spool.fsync_interval(),
            segment_bytes: config.spool.segment_bytes,
        };
        let f = Forwarder {
            dir,
            topic: config.topic.clone(),
            producer,
            durable,
            done,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let threads = vec![
            std::thread::Builder::new().name("spool-writer".into()).spawn(move || w.run()).expect("spawn"),
            std::thread::Builder::new().name("spool-forwarder".into()).spawn(move || f.run()).expect("spawn"),
        ];
        Ok(Publisher {
            tx,
            codec: Codec::new(),
            stats,
            max_bytes: config.spool.max_bytes,
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// Hands one event to the spool, to be produced with `key`. Never blocks.
    pub fn publish(&self, key: &str, event: &ClickEvent) -> Result<(), PublishError> {
        let bytes = self.stats.spool_bytes.load(Ordering::Relaxed);
        if bytes >= self.max_bytes {
            return Err(PublishError::SpoolFull { bytes });
        }
        let payload = self.codec.encode(event)?;
        let mut record = Vec::with_capacity(payload.len() + key.len() + 10);
        spool::encode_record(key.as_bytes(), &payload, &mut record)?;
        match self.tx.try_send(record) {
            Ok(()) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(PublishError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(PublishError::Closed),
        }
    }

    pub fn stats(&self) -> &PublishStats {
        &self.stats
    }

    /// Events produced but not yet acknowledged by the broker.
    pub fn in_flight(&self) -> u64 {
        self.stats.in_flight.load(Ordering::Relaxed)
    }

    /// Graceful shutdown: everything accepted is fsynced, then forwarded until the
    /// broker acknowledged it all or `timeout` passed. What is left stays in the
    /// spool and is sent by the next start: nothing is lost either way.
    pub fn shutdown(&self, timeout: Duration) {
        // An empty record tells the writer that nothing follows.
        let _ = self.tx.send(Vec::new());
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("spool forwarder still busy at the shutdown deadline; the rest stays in the spool");
            }
        }
    }
}

struct WriterLoop {
    rx: Receiver<Vec<u8>>,
    writer: SegmentWriter,
    durable: Arc<Durable>,
    stats: Arc<PublishStats>,
    interval: Duration,
    segment_bytes: u64,
}

impl WriterLoop {
    fn run(mut self) {
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut closing = false;
        while !closing {
            let wait = self.interval.saturating_sub(last_sync.elapsed()).max(Duration::from_millis(1));
            let first = match self.rx.recv_timeout(wait) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    closing = true;
                    None
                }
            };
            // Take whatever else is waiting, so one fsync covers a burst.
            for record in first.into_iter().chain(std::iter::from_fn(|| self.rx.try_recv().ok()).take(16_384)) {
                if record.is_empty() {
                    closing = true;
                    break;
                }
                if let Err(e) = self.writer.append(&record) {
                    metrics::counter!("ricochet_edge_events_dropped_total", "reason" => "spool_io").increment(1);
                    tracing::error!(error = %e, "spool write failed; event dropped");
                    continue;
                }
                self.stats.spool_bytes.fetch_add(record.len() as u64, Ordering::Relaxed);
                dirty = true;
            }
            if dirty && (closing || last_sync.elapsed() >= self.interval) {
                self.sync(false);
                last_sync = Instant::now();
                dirty = false;
            }
            if self.writer.position().offset >= self.segment_bytes {
                self.sync(true);
            }
        }
        self.sync(false);
        self.durable.writer_done.store(true, Ordering::Release);
        self.durable.changed.notify_all();
    }

    fn sync(&mut self, roll: bool) {
        let result = if roll { self.writer.roll() } else { self.writer.sync() };
        match result {
            Ok(position) => {
                *self.durable.position.lock().unwrap() = position;
                self.durable.changed.notify_all();
            }
            Err(e) => tracing::error!(error = %e, "spool fsync failed"),
        }
    }
}

struct Forwarder {
    dir: PathBuf,
    topic: String,
    producer: ThreadedProducer<Acks>,
    durable: Arc<Durable>,
    done: Arc<Mutex<Vec<u64>>>,
    stats: Arc<PublishStats>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn run(self) {
        let segments = spool::list_segments(&self.dir).unwrap_or_default();
        let first = segments.first().copied().unwrap_or(1);
        // Resume from the persisted cursor when its segment still exists.
        let mut acked = spool::read_cursor(&self.dir)
            .filter(|c| segments.contains(&c.segment))
            .unwrap_or(Position { segment: first, offset: 0 });
        let mut read_at = acked;
        let mut reader: Option<SegmentReader> = None;
        let mut pending: Option<Record> = None;
        // Produced records in log order: (sequence number, end position).
        let mut inflight: VecDeque<(u64, Position)> = VecDeque::new();
        let mut completed: HashSet<u64> = HashSet::new();
        let mut next_seq = 0u64;
        let mut cursor_written = acked;
        let mut last_cursor_write = Instant::now();
        // Leftovers wholly before the cursor (deleted late by a crash) go first.
        self.checkpoint(acked);

        loop {
            // 1. Advance the acknowledged position over the contiguous prefix.
            completed.extend(self.done.lock().unwrap().drain(..));
            while let Some((seq, end)) = inflight.front().copied() {
                if !completed.remove(&seq) {
                    break;
                }
                inflight.pop_front();
                acked = end;
            }
            self.stats.in_flight.store(inflight.len() as u64, Ordering::Relaxed);
            if acked != cursor_written && last_cursor_write.elapsed() >= Duration::from_millis(100) {
                self.checkpoint(acked);
                cursor_written = acked;
                last_cursor_write = Instant::now();
            }

            // 2. Produce what is durable and not yet produced.
            let durable = *self.durable.position.lock().unwrap();
            let writer_done = self.durable.writer_done.load(Ordering::Acquire);
            let mut produced = 0;
            let mut blocked = false;
            while produced < 4096 {
                let record = match pending.take() {
                    Some(r) => r,
                    None => {
                        if reader.is_none() {
                            if read_at > durable
                                || (read_at.segment == durable.segment && read_at.offset >= durable.offset)
                            {
                                break;
                            }
                            match SegmentReader::open(&self.dir, read_at) {
                                Ok(r) => reader = Some(r),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot open spool segment");
                                    break;
                                }
                            }
                        }
                        let r = reader.as_mut().unwrap();
                        let limit = if r.segment() < durable.segment { u64::MAX } else { durable.offset };
                        match r.next(limit) {
                            Ok(Some(record)) => record,
                            Ok(None) if r.segment() < durable.segment => {
                                // Segment finished: a marker that is "acknowledged" at once
                                // moves the cursor past it once everything before is.
                                let next = Position { segment: r.segment() + 1, offset: 0 };
                                inflight.push_back((next_seq, next));
                                completed.insert(next_seq);
                                next_seq += 1;
                                read_at = next;
                                reader = None;
                                continue;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::error!(error = %e, "spool read failed");
                                break;
                            }
                        }
                    }
                };
                let seq = next_seq;
                let out = BaseRecord::with_opaque_to(&self.topic, Box::new(seq))
                    .key(&record.key[..])
                    .payload(&record.value[..]);
                match self.producer.send(out) {
                    Ok(()) => {
                        inflight.push_back((seq, record.end));
                        next_seq += 1;
                        read_at = record.end;
                        produced += 1;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The broker is slow or away: the record waits, on disk and here.
                        pending = Some(record);
                        blocked = true;
                        break;
                    }
                    Err((e, _)) => {
                        tracing::error!(error = %e, "produce failed; retrying");
                        pending = Some(record);
                        blocked = true;
                        break;
                    }
                }
            }

            // 3. Done when shutting down and everything durable is acknowledged.
            let drained = pending.is_none() && inflight.is_empty() && read_at >= durable;
            // (The durable end is re-read: the writer may have synced more meanwhile.)
            if self.stop.load(Ordering::Acquire)
                && writer_done
                && drained
                && *self.durable.position.lock().unwrap() == durable
            {
                self.checkpoint(acked);
                let _ = self.producer.flush(Duration::from_secs(1));
                return;
            }
            if blocked {
                std::thread::sleep(Duration::from_millis(5));
            } else if produced == 0 {
                let guard = self.durable.position.lock().unwrap();
                let _ = self.durable.changed.wait_timeout(guard, Duration::from_millis(10));
            }
        }
    }

    /// Persists the cursor and deletes the segments wholly before it.
    fn checkpoint(&self, acked: Position) {
        if let Err(e) = spool::write_cursor(&self.dir, acked) {
            tracing::error!(error = %e, "cannot persist the spool cursor");
            return;
        }
        for segment in spool::list_segments(&self.dir).unwrap_or_default() {
            if segment >= acked.segment {
                break;
            }
            let path = spool::segment_path(&self.dir, segment);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(&path).is_ok() {
                self.stats
                    .spool_bytes
                    .fetch_sub(len.min(self.stats.spool_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
        }
        metrics::gauge!("ricochet_spool_bytes").set(self.stats.spool_bytes.load(Ordering::Relaxed) as f64);
    }
}
