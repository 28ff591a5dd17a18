//! The publisher: handlers → shared buffer → spool writer → disk → forwarder → Kafka.
//!
//! Three parties, each with one job:
//! - [`Publisher::publish`] (request handlers) encodes the event straight into
//!   a shared, mutex-guarded buffer of spool records (`click_wire`: no
//!   intermediate event, no allocation once the buffer has grown). It never
//!   blocks on I/O and never wakes a thread while the writer is busy: a full
//!   buffer or a full spool is a counted drop, and the recipient is
//!   redirected all the same.
//! - the **writer** thread takes the whole buffer every [`WRITER_TICK`] (a
//!   swap under the lock), appends it to the spool in one write, and fsyncs
//!   so that no accepted event waits longer than `fsync_interval` to be
//!   durable; only fsynced records are visible to the forwarder. When nothing
//!   arrived for a while it parks, and the next event wakes it: one wake-up
//!   after an idle spell, not one per event.
//! - the **forwarder** thread reads fsynced records in order and produces them;
//!   librdkafka acknowledges each. The contiguous acknowledged position is
//!   persisted as the spool's cursor and fully acknowledged segments are deleted.
//!   A record the broker failed to take is read again from the spool and
//!   resent; only one the broker refuses for what it is (too large, invalid)
//!   is given up, and counted.
//!
//! After a crash, the forwarder resends from the cursor: records between the
//! cursor and what the broker had acknowledged arrive twice, with the same
//! event id, and are dropped downstream. A SIGKILL loses only what was not yet
//! fsynced: at most one `fsync_interval` of events.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use ricochet_schemas::{click_wire, ClickWire, CodecError};

use crate::config::PublisherConfig;
use crate::spool::{self, Position, Record, SegmentReader, SegmentWriter, SpoolError};

/// How often the writer takes what the handlers appended. Short next to the
/// fsync interval (events reach the forwarder only at an fsync anyway), long
/// enough that at load every tick carries many events: ~500 wake-ups a
/// second instead of one per event.
pub const WRITER_TICK: Duration = Duration::from_millis(2);

/// How long a record the broker failed to take waits before it is resent:
/// a broker that fails every record (restarting, its storage busy) is asked
/// again at this pace, not in a tight loop.
const RESEND_AFTER: Duration = Duration::from_millis(200);

/// Idle ticks after which the writer parks until the next event.
const IDLE_TICKS_BEFORE_PARKING: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer could not be created: {0}")]
    Create(#[source] KafkaError),
    #[error("kafka security settings: {0}")]
    Security(#[from] ricochet_registry::KafkaSecurityError),
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
    /// Given up: the broker refused the record itself (see [`refuses_the_record`]).
    pub failed: AtomicU64,
    /// Deliveries that failed and were resent from the spool.
    pub resent: AtomicU64,
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
    /// Sequence numbers settled: delivered, or given up.
    done: Arc<Mutex<Vec<u64>>>,
    /// Sequence numbers to send again, with the error that failed them.
    failed_deliveries: Arc<Mutex<Vec<(u64, KafkaError)>>>,
    // Handles taken once: `counter!` looks the metric up by name on every call.
    delivered: metrics::Counter,
    failed: metrics::Counter,
}

/// Whether a failed delivery can never succeed, however often it is resent:
/// the broker refuses the record itself. Any other failure (the broker
/// restarting, its storage failing, a timeout, an error it does not name)
/// says nothing about the record, and the record is resent: dropping it
/// would lose a click that a broker back to health takes.
pub fn refuses_the_record(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    // The sequence number itself, not a `Box` of it: no allocation per event.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.delivered.increment(1);
            }
            Err((e, _)) if refuses_the_record(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.failed.increment(1);
                tracing::error!(error = %e, "click event refused by the broker; given up");
            }
            Err((e, _)) => {
                // librdkafka gave up on it (its retries are spent, or the broker's
                // error is one it does not retry): the forwarder resends it.
                self.failed_deliveries.lock().unwrap().push((seq as u64, e.clone()));
                return;
            }
        }
        self.done.lock().unwrap().push(seq as u64);
    }
}

/// Spool records appended by the handlers, waiting for the writer's next tick.
struct Pending {
    records: Vec<u8>,
    events: usize,
    /// Set by [`Publisher::shutdown`]: later events are refused, not lost unseen.
    closed: bool,
    /// The writer is asleep until an event arrives (set and cleared under the lock).
    parked: bool,
}

struct Inbox {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave a torn record: records
        // are only cut back on a size error, before the panic-free CRC.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Publisher {
    inbox: Arc<Inbox>,
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
        let failed_deliveries = Arc::new(Mutex::new(Vec::new()));
        let acks = Acks {
            stats: stats.clone(),
            done: done.clone(),
            failed_deliveries: failed_deliveries.clone(),
            delivered: metrics::counter!("ricochet_ingest_events_delivered_total"),
            failed: metrics::counter!("ricochet_ingest_events_failed_total"),
        };
        let producer: ThreadedProducer<Acks> =
            config.client_config()?.create_with_context(acks).map_err(PublishError::Create)?;
        let inbox = Arc::new(Inbox {
            pending: Mutex::new(Pending { records: Vec::new(), events: 0, closed: false, parked: false }),
            wake: Condvar::new(),
            capacity: config.spool.queue_capacity,
        });
        let stop = Arc::new(AtomicBool::new(false));

        let w = WriterLoop {
            inbox: inbox.clone(),
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
            failed_deliveries,
            resent: metrics::counter!("ricochet_ingest_events_resent_total"),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let threads = vec![
            std::thread::Builder::new().name("spool-writer".into()).spawn(move || w.run()).expect("spawn"),
            std::thread::Builder::new().name("spool-forwarder".into()).spawn(move || f.run()).expect("spawn"),
        ];
        Ok(Publisher { inbox, stats, max_bytes: config.spool.max_bytes, stop, threads: Mutex::new(threads) })
    }

    /// Hands one event to the spool, to be produced with `key`. Never blocks
    /// on I/O: the event is encoded into the shared buffer under a lock held
    /// for the encoding only (well under a microsecond).
    pub fn publish(&self, key: &str, click: &ClickWire<'_>) -> Result<(), PublishError> {
        let bytes = self.stats.spool_bytes.load(Ordering::Relaxed);
        if bytes >= self.max_bytes {
            return Err(PublishError::SpoolFull { bytes });
        }
        let mut pending = self.inbox.lock();
        if pending.closed {
            return Err(PublishError::Closed);
        }
        if pending.events >= self.inbox.capacity {
            return Err(PublishError::QueueFull);
        }
        spool::encode_record_with(key.as_bytes(), &mut pending.records, |out| click_wire::encode(click, out))?;
        pending.events += 1;
        if pending.parked {
            pending.parked = false;
            self.inbox.wake.notify_one();
        }
        drop(pending);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
        {
            let mut pending = self.inbox.lock();
            pending.closed = true;
            pending.parked = false;
            self.inbox.wake.notify_one();
        }
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
    inbox: Arc<Inbox>,
    writer: SegmentWriter,
    durable: Arc<Durable>,
    stats: Arc<PublishStats>,
    interval: Duration,
    segment_bytes: u64,
}

impl WriterLoop {
    fn run(mut self) {
        // An event can arrive just after a take and waits one tick for the
        // next; syncing a tick early keeps "accepted → durable" within the
        // fsync interval, which is what a SIGKILL may lose.
        let sync_every = self.interval.saturating_sub(WRITER_TICK);
        let mut batch: Vec<u8> = Vec::new();
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut idle_ticks = 0u32;
        loop {
            let (events, closing) = {
                let mut pending = self.inbox.lock();
                if pending.events == 0 && !pending.closed && !dirty && idle_ticks >= IDLE_TICKS_BEFORE_PARKING {
                    // Nothing to write and nothing to sync: sleep until an event
                    // (or shutdown) wakes us, rather than ticking for nothing.
                    pending.parked = true;
                    while pending.parked && !pending.closed {
                        pending = self.inbox.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
                    }
                    idle_ticks = 0;
                }
                // Swap, not copy: the handlers go on filling last tick's buffer.
                std::mem::swap(&mut pending.records, &mut batch);
                (std::mem::take(&mut pending.events), pending.closed)
            };
            if events > 0 {
                idle_ticks = 0;
                match self.writer.append(&batch) {
                    Ok(()) => {
                        self.stats.spool_bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        dirty = true;
                    }
                    Err(e) => {
                        metrics::counter!("ricochet_edge_events_dropped_total", "reason" => "spool_io")
                            .increment(events as u64);
                        tracing::error!(error = %e, events, "spool write failed; events dropped");
                    }
                }
                batch.clear();
            } else {
                idle_ticks = idle_ticks.saturating_add(1);
            }
            if dirty && (closing || last_sync.elapsed() >= sync_every) {
                self.sync(false);
                last_sync = Instant::now();
                dirty = false;
            }
            if self.writer.position().offset >= self.segment_bytes {
                self.sync(true);
            }
            if closing {
                break;
            }
            std::thread::sleep(WRITER_TICK);
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
    failed_deliveries: Arc<Mutex<Vec<(u64, KafkaError)>>>,
    resent: metrics::Counter,
    stats: Arc<PublishStats>,
    stop: Arc<AtomicBool>,
}

/// A produced record not yet settled: its sequence number and where it lies in the spool.
#[derive(Clone, Copy)]
struct InFlight {
    seq: u64,
    start: Position,
    end: Position,
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
        // Produced records in log order (so in sequence-number order).
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut completed: HashSet<u64> = HashSet::new();
        // Failed deliveries to send again, oldest first: (record, due).
        let mut resend: VecDeque<(InFlight, Instant)> = VecDeque::new();
        let mut next_seq = 0u64;
        let mut cursor_written = acked;
        let mut last_cursor_write = Instant::now();
        // Leftovers wholly before the cursor (deleted late by a crash) go first.
        self.checkpoint(acked);

        loop {
            // 1. Advance the acknowledged position over the contiguous prefix.
            completed.extend(self.done.lock().unwrap().drain(..));
            while let Some(front) = inflight.front().copied() {
                if !completed.remove(&front.seq) {
                    break;
                }
                inflight.pop_front();
                acked = front.end;
            }
            self.schedule_resends(&inflight, &mut resend);
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
            while let Some((record, _)) = resend.front().filter(|(_, due)| *due <= Instant::now()) {
                match self.send_again(*record) {
                    Ok(()) => {
                        resend.pop_front();
                        produced += 1;
                    }
                    Err(()) => {
                        blocked = true;
                        break;
                    }
                }
            }
            while produced < 4096 && !blocked {
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
                                inflight.push_back(InFlight { seq: next_seq, start: read_at, end: next });
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
                let out =
                    BaseRecord::with_opaque_to(&self.topic, seq as usize).key(record.key()).payload(record.value());
                match self.producer.send(out) {
                    Ok(()) => {
                        inflight.push_back(InFlight { seq, start: read_at, end: record.end });
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
            let drained = pending.is_none() && inflight.is_empty() && resend.is_empty() && read_at >= durable;
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
            // Blocked, or only resends that are not due yet: poll again shortly.
            if blocked || (produced == 0 && !resend.is_empty()) {
                std::thread::sleep(Duration::from_millis(5));
            } else if produced == 0 {
                let guard = self.durable.position.lock().unwrap();
                let _ = self.durable.changed.wait_timeout(guard, Duration::from_millis(10));
            }
        }
    }

    /// Queues the failed deliveries for a resend after [`RESEND_AFTER`]. They
    /// stay in `inflight`, so the cursor cannot pass them until delivered.
    fn schedule_resends(&self, inflight: &VecDeque<InFlight>, resend: &mut VecDeque<(InFlight, Instant)>) {
        let failed: Vec<(u64, KafkaError)> = std::mem::take(&mut *self.failed_deliveries.lock().unwrap());
        let Some((_, last_error)) = failed.last() else {
            return;
        };
        tracing::warn!(events = failed.len(), error = %last_error, "deliveries failed; resending them from the spool");
        let due = Instant::now() + RESEND_AFTER;
        for (seq, _) in &failed {
            match inflight.binary_search_by_key(seq, |r| r.seq) {
                Ok(i) => resend.push_back((inflight[i], due)),
                Err(_) => tracing::error!(seq, "a failed delivery is not in flight; cannot resend it"),
            }
        }
    }

    /// Reads one record again from the spool and produces it under its old
    /// sequence number. `Err` when the producer's queue is full: try later.
    fn send_again(&self, record: InFlight) -> Result<(), ()> {
        let read = SegmentReader::open(&self.dir, record.start).and_then(|mut r| r.next(u64::MAX));
        let spooled = match read {
            Ok(Some(spooled)) if spooled.end == record.end => spooled,
            other => {
                // Cannot happen while the cursor is held before it; never skip silently.
                tracing::error!(?other, "a record to resend is not where it was in the spool; retrying");
                return Err(());
            }
        };
        let out =
            BaseRecord::with_opaque_to(&self.topic, record.seq as usize).key(spooled.key()).payload(spooled.value());
        match self.producer.send(out) {
            Ok(()) => {
                self.stats.resent.fetch_add(1, Ordering::Relaxed);
                self.resent.increment(1);
                Ok(())
            }
            Err(_) => Err(()),
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
