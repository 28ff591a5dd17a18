//! The consumer loop: Kafka in, ClickHouse out, and [`Protocol`] deciding
//! in between. This file is I/O only: every state change of exactly-once, and
//! the argument for it, is in [`crate::protocol`]; every statement is in
//! [`crate::sql`].
//!
//! Everything runs on one OS thread that owns the consumer: polling, batching,
//! flushing and the rebalance callback (librdkafka calls it from inside
//! `poll`). So a flush and a rebalance never interleave:
//!
//! - **assign**: acquire the partitions (owner rows with fresh tokens under
//!   the group's generation, the fence, the stored positions) and start
//!   consuming exactly there (Kafka's committed offsets are ignored);
//! - **revoke**: settle an insert whose outcome is unknown, then drop what
//!   the revoked partitions held;
//! - **verdict**: a click waits in the protocol until its verdict is final,
//!   then joins the pending batch;
//! - **flush** (every `flush_interval`, or at `max_batch_events`, or before
//!   the rollup rows could outgrow one block): dead letters confirmed (a
//!   refused one blocks only its partition), raw events and recipients
//!   (idempotent), then per shard one breakdowns + their positions insert
//!   and one rollups + positions insert, each through the fence, then the
//!   positions read back. On failure the assignment is paused
//!   (Kafka keeps the backlog, memory stays one batch), an unknown outcome is
//!   settled before anything is written again, and the loop keeps polling so
//!   rebalances are served; then every partition is sought back to its stored
//!   position.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use ricochet_schemas::{ClickEvent, Codec};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Admit, PartitionRange};
use crate::dead_letter::{self, DeadLetter, DeadLetters};
use crate::decided::{DecidedPublisher, FlushRecords};
use crate::protocol::{Acquired, Attempt, Protocol, ProtocolError, Verdict};
use crate::rollup::BucketStart;
use crate::sink::{ClickHouseSink, Positions, WriteError};
use crate::sql::MAX_INSERT_BLOCK_ROWS;
use crate::status::{self, PipelineStatus};
use crate::verdict::Rules;

/// How often held events are checked for a final verdict.
const RELEASE_EVERY: Duration = Duration::from_millis(10);

/// The consumer's `session.timeout.ms`: a member silent this long is out of
/// the group, and a member fenced out of a partition waits this long before
/// it acquires the partition again (a true zombie learns from Kafka first).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a flush waits for the broker to acknowledge dead letters before
/// it blocks their partitions and flushes the others.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(2);

/// A flush starts before the batch could make more rollup rows than half of
/// one insert block.
const MAX_ROLLUP_ROWS: usize = MAX_INSERT_BLOCK_ROWS / 2;

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub kafka: ricochet_registry::KafkaConnection,
    pub group_id: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub flush_interval: Duration,
    pub max_batch_events: usize,
    /// First wait after a failed flush; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// `partition.assignment.strategy`. `cooperative-sticky` moves only the
    /// partitions that change owner; an eager one (`range`, `roundrobin`)
    /// revokes everything on each rebalance. The pipeline handles both.
    pub assignment_strategy: String,
    /// `group.instance.id` (static membership). `None`: dynamic membership.
    pub group_instance_id: Option<String>,
    /// How long a click waits for the clicks that may change its verdict
    /// before it is counted.
    pub verdict_delay: Duration,
    /// Where stored events are published with their verdicts
    /// ([`crate::decided`]); `None`: not published.
    pub decided_topic: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What the loop does to partitions beside consuming them.
#[derive(Default)]
struct Held {
    /// Fenced out by another member's token: acquired again at the instant,
    /// if Kafka still assigns them to us.
    fenced: HashMap<i32, Instant>,
    /// A dead letter was refused: resumed (and read again) at the instant.
    blocked: HashMap<i32, (Instant, Duration)>,
}

/// Shared between the loop and the rebalance callback. Only the consumer
/// thread touches it; the mutexes exist because the callback gets `&self`.
struct Ctx {
    rt: Handle,
    sink: ClickHouseSink,
    topic: String,
    protocol: Mutex<Protocol>,
    held: Mutex<Held>,
    /// Dead-letter deliveries in flight, per partition.
    dead_letters: Mutex<HashMap<i32, Vec<dead_letter::Pending>>>,
    status: Arc<PipelineStatus>,
    /// The decided-events topic's publisher, if it is on.
    decided: Option<DecidedPublisher>,
    shutdown: CancellationToken,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let generation = generation(consumer);
                let Some(acquired) = self.acquire_blocking(&partitions, generation) else {
                    return;
                };
                for a in &acquired {
                    // What a previous owner counted but did not publish goes out first.
                    if let Some(decided) = &self.decided {
                        decided.catch_up(&self.rt, &self.sink, a.partition, a.stored);
                    }
                    let offset = a.stored.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&self.topic, a.partition, offset) {
                        tracing::error!(partition = a.partition, error = %e, "cannot set start offset");
                    }
                    self.protocol().assign(*a);
                    self.status.assigned(a.partition, a.stored);
                }
                tracing::info!(
                    ?partitions,
                    generation,
                    "partitions assigned: acquired, resuming from their stored positions"
                );
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = result {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.settle_blocking();
                // The next owner reads the decided partitions' ends: ours must be there.
                if let Some(decided) = &self.decided {
                    decided.flush(Duration::from_secs(10));
                }
                let dropped: usize = partitions.iter().map(|p| self.forget(*p)).sum();
                metrics::counter!("ricochet_aggregator_revoked_pending_events_total").increment(dropped as u64);
                tracing::info!(
                    ?partitions,
                    dropped,
                    lost = consumer.assignment_lost(),
                    "partitions revoked; their pending share dropped"
                );
                let result = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                self.settle_blocking();
                let owned: Vec<i32> = self.protocol().owned().into_iter().map(|(p, _)| p).collect();
                for p in owned {
                    self.forget(p);
                }
                self.status.revoked_all();
                let _ = consumer.unassign();
            }
        }
    }
}

/// The consumer group's current generation (librdkafka's view): the fence's
/// epoch. -1 outside a group.
fn generation(consumer: &BaseConsumer<Ctx>) -> i32 {
    // SAFETY: the metadata is created and destroyed here, and the handle
    // outlives the call.
    unsafe {
        let md = rdkafka::bindings::rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if md.is_null() {
            return -1;
        }
        let generation = rdkafka::bindings::rd_kafka_consumer_group_metadata_generation_id(md);
        rdkafka::bindings::rd_kafka_consumer_group_metadata_destroy(md);
        generation
    }
}

impl Ctx {
    fn protocol(&self) -> MutexGuard<'_, Protocol> {
        self.protocol.lock().unwrap()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap()
    }

    /// Drops a partition everywhere: protocol, held, dead letters, status.
    fn forget(&self, partition: i32) -> usize {
        let dropped = self.protocol().revoke(partition);
        let mut held = self.held();
        held.fenced.remove(&partition);
        held.blocked.remove(&partition);
        drop(held);
        self.dead_letters.lock().unwrap().remove(&partition);
        self.status.revoked(partition);
        dropped
    }

    /// Acquires `partitions`, retrying while ClickHouse is unreachable:
    /// consuming from anywhere else could count twice or skip. `None` only
    /// on shutdown.
    fn acquire_blocking(&self, partitions: &[i32], generation: i32) -> Option<Vec<Acquired>> {
        if partitions.is_empty() {
            return Some(Vec::new());
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.rt.block_on(self.sink.acquire(partitions, generation)) {
                Ok(acquired) => return Some(acquired),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot acquire partitions; retrying");
                    if self.shutdown.is_cancelled() {
                        return None;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One try at settling the insert whose outcome is unknown: its
    /// partitions are acquired again (so a late copy of it lands nowhere) and
    /// their positions say whether it landed. Returns the partitions to seek.
    fn try_settle(&self, generation: i32) -> Result<Vec<(i32, Option<i64>)>, WriteError> {
        let Some(attempt) = self.protocol().unsettled().cloned() else {
            return Ok(Vec::new());
        };
        let acquired = self.rt.block_on(self.sink.acquire(&attempt.partitions(), generation))?;
        let verdicts = self.protocol().settled(&acquired).unwrap_or_default();
        let mut seeks = Vec::new();
        for (p, verdict) in verdicts {
            let label = match verdict {
                Verdict::Stored => {
                    // Counted, and its batch is gone: published by a catch-up.
                    if let Some(decided) = &self.decided {
                        decided.mark_behind(p);
                    }
                    "applied"
                }
                Verdict::Retry { stored } => {
                    seeks.push((p, stored));
                    "not_applied"
                }
                Verdict::Fenced => "fenced",
            };
            metrics::counter!("ricochet_aggregator_settled_total", "outcome" => label).increment(1);
            tracing::info!(partition = p, outcome = label, "insert settled");
        }
        let stored: Vec<PartitionRange> = attempt
            .parts
            .iter()
            .filter(|part| {
                acquired.iter().any(|a| a.partition == part.range.partition && a.stored == Some(part.range.next))
            })
            .map(|part| part.range)
            .collect();
        self.status.stored(&stored, None);
        Ok(seeks)
    }

    /// Settles, however long ClickHouse takes (the rebalance waits: the
    /// partitions must not move while an insert for them may still land),
    /// unless the process is shutting down; the next owner's fence then holds.
    fn settle_blocking(&self) {
        let mut backoff = Duration::from_millis(200);
        // The generation the attempt was written under: a revocation settles
        // before the partitions move on.
        let generation = self.protocol().unsettled().and_then(|a| a.parts.first()).map_or(-1, |p| p.fence.generation);
        while let Err(e) = self.try_settle(generation) {
            if self.shutdown.is_cancelled() {
                tracing::warn!(error = %e, "shutting down with an insert unsettled");
                return;
            }
            tracing::warn!(error = %e, "cannot settle the last insert yet; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// How one write of an attempt ended.
enum Outcome {
    /// The breakdown and rollup inserts were acknowledged; the positions
    /// read back (the rollups', then the breakdowns').
    Written(Positions, Positions),
    /// Nothing of the rollups can have landed.
    NotApplied(WriteError),
    /// Some rollup insert may have landed: settle.
    Unknown(WriteError),
}

pub struct Pipeline {
    config: PipelineConfig,
    consumer: BaseConsumer<Ctx>,
    dead_letters: DeadLetters,
    codec: Codec<ClickEvent>,
}

impl Pipeline {
    pub fn new(
        config: PipelineConfig,
        sink: ClickHouseSink,
        rt: Handle,
        shutdown: CancellationToken,
    ) -> Result<Self, PipelineError> {
        let decided = match &config.decided_topic {
            Some(topic) => Some(DecidedPublisher::new(&config.kafka, topic, &config.topic, &config.group_id)?),
            None => None,
        };
        let ctx = Ctx {
            rt,
            sink,
            topic: config.topic.clone(),
            protocol: Mutex::new(Protocol::new(Rules::with_delay(config.verdict_delay))),
            held: Mutex::new(Held::default()),
            dead_letters: Mutex::new(HashMap::new()),
            status: PipelineStatus::new(&config.topic),
            decided,
            shutdown,
        };
        let mut client = config.kafka.client_config();
        client
            .set("group.id", &config.group_id)
            // Positions live in ClickHouse with the rollups; commits are a hint for lag tools.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", &config.assignment_strategy)
            // A ClickHouse outage pauses consumption, and the loop keeps polling
            // through it, so the default poll interval is safe.
            .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
            .set("heartbeat.interval.ms", "1000");
        if let Some(id) = &config.group_instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<Ctx> = client.create_with_context(ctx)?;
        consumer.subscribe(&[&config.topic])?;
        let dead_letters = DeadLetters::new(&config.kafka, &config.dead_letter_topic)?;
        Ok(Pipeline { config, consumer, dead_letters, codec: Codec::new() })
    }

    fn ctx(&self) -> &Ctx {
        self.consumer.context()
    }

    /// Lag, freshness and what the loop is doing, for `/v1/status`.
    pub fn status(&self) -> Arc<PipelineStatus> {
        self.ctx().status.clone()
    }

    /// Runs until shutdown, then flushes what it holds. Call from a dedicated thread.
    pub fn run(mut self) {
        let refresher = status::spawn_refresher(&self.config.kafka, self.status(), self.ctx().shutdown.clone());
        // Verdicts are released every RELEASE_EVERY, not after each message:
        // far inside the verdict delay, and it spares a clock read and a walk
        // over every partition per message.
        let mut released_at = Instant::now();
        let mut now_ms = unix_now_ms();
        self.report_dead_letters(0);
        while !self.ctx().shutdown.is_cancelled() {
            let wait = self.time_to_flush().unwrap_or(Duration::from_millis(100)).min(Duration::from_millis(100));
            let polled = self.consumer.poll(wait);
            let due = released_at.elapsed() >= RELEASE_EVERY;
            if due {
                now_ms = unix_now_ms();
            }
            match polled {
                Some(Ok(message)) => self.accept(&message, now_ms),
                Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
                None => {}
            }
            if due {
                self.ctx().protocol().release(now_ms, unix_now());
                released_at = Instant::now();
                self.resume_held();
            }
            if self.time_to_flush() == Some(Duration::ZERO) {
                self.ctx().protocol().release(unix_now_ms(), unix_now());
                self.flush();
            }
        }
        self.flush();
        self.dead_letters.flush(Duration::from_secs(5));
        self.consumer.unsubscribe();
        if let Some(r) = refresher {
            let _ = r.join();
        }
        tracing::info!("pipeline stopped");
    }

    /// `Some(0)` when the batch must be flushed now, `Some(d)` when it must be in `d`.
    fn time_to_flush(&self) -> Option<Duration> {
        let protocol = self.ctx().protocol();
        let batch = protocol.batch();
        let opened = batch.opened_at()?;
        if batch.num_events() >= self.config.max_batch_events || batch.num_rollup_rows() >= MAX_ROLLUP_ROWS {
            return Some(Duration::ZERO);
        }
        Some(self.config.flush_interval.saturating_sub(opened.elapsed()))
    }

    /// `now_ms`: the wall clock read at most [`RELEASE_EVERY`] ago.
    fn accept(&self, message: &rdkafka::message::BorrowedMessage<'_>, now_ms: i64) {
        let (partition, offset) = (message.partition(), message.offset());
        let ctx = self.ctx();
        let mut protocol = ctx.protocol();
        match protocol.admit(partition, offset) {
            Admit::Apply => {}
            Admit::AlreadyApplied => {
                metrics::counter!("ricochet_aggregator_replayed_skipped_total").increment(1);
                return;
            }
            Admit::AlreadyPending => {
                metrics::counter!("ricochet_aggregator_redelivered_skipped_total").increment(1);
                return;
            }
            Admit::NotOwned => return,
            Admit::Gap { expected } => {
                metrics::counter!("ricochet_aggregator_offset_gaps_total").increment(1);
                tracing::warn!(partition, offset, expected, "offsets skipped; reading again from the expected offset");
                drop(protocol);
                self.seek(partition, Some(expected));
                return;
            }
            Admit::ApplyAfterGap { missing } => {
                metrics::counter!("ricochet_aggregator_messages_expired_total").increment(missing as u64);
                tracing::error!(partition, offset, missing, "messages expired from the topic before they were counted");
            }
        }
        let decoded = match message.payload() {
            None => Err("empty payload".to_owned()),
            Some(p) => self.codec.decode(p).map_err(|e| e.to_string()).and_then(|e| {
                match BucketStart::of_millis(e.event_time_ms) {
                    Some(b) => Ok((e, b)),
                    None => Err(format!("event_time {} ms is outside 1970..2106", e.event_time_ms)),
                }
            }),
        };
        let poison = decoded.is_err();
        let event = match decoded {
            Ok(ok) => Some(ok),
            Err(reason) => {
                metrics::counter!("ricochet_aggregator_poison_messages_total").increment(1);
                tracing::warn!(partition, offset, %reason, "poison message set aside to the dead-letter topic");
                let pending = self.dead_letters.send(DeadLetter {
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    reason,
                    source: (ctx.topic.clone(), partition, offset),
                });
                ctx.dead_letters.lock().unwrap().entry(partition).or_default().push(pending);
                protocol.dead_letter(partition, offset);
                None
            }
        };
        protocol.hold(partition, offset, event, now_ms);
        if poison {
            let unconfirmed = protocol.num_dead_letters_unconfirmed();
            drop(protocol);
            self.report_dead_letters(unconfirmed);
        }
    }

    fn report_dead_letters(&self, unconfirmed: usize) {
        metrics::gauge!("ricochet_aggregator_dead_letters_unconfirmed").set(unconfirmed as f64);
        self.ctx().status.dead_letters_unconfirmed(unconfirmed);
    }

    /// Waits (at most [`DEAD_LETTER_WAIT`]) for the broker to acknowledge the
    /// dead letters the batch depends on. A partition whose letter was refused
    /// or is still unanswered goes back to its stored position and pauses for
    /// a backoff; the other partitions flush on.
    fn confirm_dead_letters(&self) {
        let ctx = self.ctx();
        let waiting = ctx.protocol().awaiting_dead_letters();
        if waiting.is_empty() {
            return;
        }
        let deadline = Instant::now() + DEAD_LETTER_WAIT;
        for p in waiting {
            let mut pending = ctx.dead_letters.lock().unwrap().remove(&p).unwrap_or_default();
            let left = deadline.saturating_duration_since(Instant::now());
            let confirmed = ctx.rt.block_on(async {
                tokio::time::timeout(left, self.dead_letters.confirm(&mut pending))
                    .await
                    .unwrap_or_else(|_| Err("the broker did not acknowledge in time".to_owned()))
            });
            match confirmed {
                Ok(()) => ctx.protocol().dead_letters_confirmed(p),
                Err(e) => {
                    metrics::counter!("ricochet_aggregator_dead_letter_failures_total").increment(1);
                    let Some(stored) = ctx.protocol().block(p) else { continue };
                    let backoff = {
                        let mut held = ctx.held();
                        let next = held
                            .blocked
                            .get(&p)
                            .map_or(self.config.min_backoff, |(_, b)| (*b * 2).min(self.config.max_backoff));
                        held.blocked.insert(p, (Instant::now() + next, next));
                        next
                    };
                    tracing::warn!(
                        partition = p,
                        error = %e,
                        backoff_ms = backoff.as_millis() as u64,
                        "a dead letter was not acknowledged; this partition is read again later, the others go on"
                    );
                    self.pause(p, true);
                    self.seek(p, stored);
                }
            }
        }
        self.refresh_dead_letters();
    }

    /// Dead letters waiting for the broker, counting a blocked partition's
    /// refused letters until the partition is stored past them.
    fn refresh_dead_letters(&self) {
        let unconfirmed = self.ctx().protocol().num_dead_letters_unconfirmed();
        let blocked = self.ctx().held().blocked.len();
        self.report_dead_letters(unconfirmed + blocked);
    }

    /// Resumes blocked partitions whose backoff is over, and acquires again
    /// fenced ones that Kafka still assigns to this member.
    fn resume_held(&self) {
        let ctx = self.ctx();
        let now = Instant::now();
        let (unblock, refence): (Vec<i32>, Vec<i32>) = {
            let mut held = ctx.held();
            let unblock: Vec<i32> = held.blocked.iter().filter(|(_, (at, _))| *at <= now).map(|(p, _)| *p).collect();
            for p in &unblock {
                // Keep the backoff (doubled on the next refusal) until a flush stores the partition.
                if let Some(entry) = held.blocked.get_mut(p) {
                    entry.0 = Instant::now() + Duration::from_secs(3600);
                }
            }
            let refence: Vec<i32> = held.fenced.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
            for p in &refence {
                held.fenced.remove(p);
            }
            (unblock, refence)
        };
        for p in unblock {
            self.pause(p, false);
        }
        if refence.is_empty() {
            return;
        }
        let assigned: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let still: Vec<i32> = refence.into_iter().filter(|p| assigned.contains(p)).collect();
        if still.is_empty() {
            return;
        }
        let generation = generation(&self.consumer);
        let Ok(acquired) = ctx.rt.block_on(ctx.sink.acquire(&still, generation)) else {
            let mut held = ctx.held();
            for p in still {
                held.fenced.insert(p, Instant::now() + SESSION_TIMEOUT);
            }
            return;
        };
        for a in acquired {
            tracing::warn!(partition = a.partition, generation, "fenced partition still assigned here; acquired again");
            ctx.protocol().assign(a);
            ctx.status.assigned(a.partition, a.stored);
            self.seek(a.partition, a.stored);
            self.pause(a.partition, false);
        }
    }

    /// Writes the pending batch, retrying (paused) until it is stored, gone
    /// with its partitions, or the process shuts down.
    fn flush(&mut self) {
        let mut backoff = self.config.min_backoff;
        let mut paused = false;
        loop {
            self.confirm_dead_letters();
            let attempt = match self.ctx().protocol().begin() {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(ProtocolError::MustSettle) => {
                    if !self.settle_paused(&mut paused, &mut backoff) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot begin a write");
                    break;
                }
            };
            self.ctx().status.pending(self.ctx().protocol().num_unstored(), paused);
            let started = Instant::now();
            match self.write(&attempt) {
                Outcome::Written(stored, breakdowns) => {
                    let decided = self.decided_records(&attempt, &stored);
                    let (verdicts, newest) = {
                        let mut protocol = self.ctx().protocol();
                        let newest = protocol.newest_event_ms();
                        (protocol.written(&stored, &breakdowns).unwrap_or_default(), newest)
                    };
                    self.apply(&attempt, verdicts, newest, started);
                    self.publish_decided(decided, &stored);
                    self.commit_hint(&attempt.ranges());
                    break;
                }
                Outcome::NotApplied(e) => {
                    let _ = self.ctx().protocol().failed();
                    self.failed(&e, &mut paused, &mut backoff);
                    if self.ctx().shutdown.is_cancelled() {
                        return;
                    }
                }
                Outcome::Unknown(e) => {
                    let _ = self.ctx().protocol().unknown();
                    metrics::counter!("ricochet_aggregator_flush_failures_total").increment(1);
                    tracing::warn!(error = %e, "a rollup insert's outcome is unknown; settling it");
                    if !self.settle_paused(&mut paused, &mut backoff) {
                        return;
                    }
                }
            }
        }
        if paused {
            self.set_paused(false);
            // Messages polled while paused were dropped: read them again.
            let seeks = self.ctx().protocol().rewind();
            for (p, stored) in seeks {
                self.seek(p, stored);
            }
        }
        let pending = self.ctx().protocol().num_unstored();
        self.ctx().status.pending(pending, false);
        self.refresh_dead_letters();
        // Nearly always nothing is behind: the owned positions are only
        // gathered when a partition needs catching up.
        if let Some(decided) = self.ctx().decided.as_ref().filter(|d| d.is_behind()) {
            let owned: HashMap<i32, Option<i64>> = self.ctx().protocol().owned().into_iter().collect();
            decided.catch_up_behind(&self.ctx().rt, &self.ctx().sink, &owned);
        }
    }

    /// The decided events of each partition the written attempt stored,
    /// encoded before the batch lets go of them.
    fn decided_records(&self, attempt: &Attempt, stored: &HashMap<i32, i64>) -> Vec<FlushRecords> {
        let ctx = self.ctx();
        let Some(decided) = &ctx.decided else { return Vec::new() };
        let protocol = ctx.protocol();
        attempt
            .parts
            .iter()
            .filter(|part| stored.get(&part.range.partition) == Some(&part.range.next))
            .map(|part| {
                let p = part.range.partition;
                FlushRecords {
                    partition: p,
                    next: part.range.next,
                    records: decided.encode(p, protocol.batch().event_rows_of(&[p])),
                }
            })
            .collect()
    }

    /// Publishes what [`Self::decided_records`] encoded, once stored.
    fn publish_decided(&self, flushed: Vec<FlushRecords>, stored: &HashMap<i32, i64>) {
        let ctx = self.ctx();
        let Some(decided) = &ctx.decided else { return };
        for f in flushed {
            if stored.get(&f.partition) == Some(&f.next) {
                decided.publish(&ctx.rt, &ctx.sink, f.partition, f.next, f.records);
            }
        }
    }

    /// A failed write: pause consumption and wait out the backoff, serving rebalances.
    fn failed(&self, e: &WriteError, paused: &mut bool, backoff: &mut Duration) {
        metrics::counter!("ricochet_aggregator_flush_failures_total").increment(1);
        match e {
            WriteError::Refused(_) => {
                tracing::error!(error = %e, "clickhouse refuses the batch as it is; retrying (a schema out of step?)")
            }
            _ => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "flush failed; pausing and retrying")
            }
        }
        if !*paused {
            *paused = self.set_paused(true);
        }
        self.idle(*backoff);
        *backoff = (*backoff * 2).min(self.config.max_backoff);
    }

    /// Settles the unknown insert, paused, until done or shutdown (`false`).
    fn settle_paused(&self, paused: &mut bool, backoff: &mut Duration) -> bool {
        if !*paused {
            *paused = self.set_paused(true);
        }
        loop {
            let generation = generation(&self.consumer);
            match self.ctx().try_settle(generation) {
                Ok(seeks) => {
                    for (p, stored) in seeks {
                        self.seek(p, stored);
                    }
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot settle the failed insert yet"),
            }
            if self.ctx().shutdown.is_cancelled() {
                tracing::warn!("shutting down with an insert unsettled; the partitions' next owner fences it");
                return false;
            }
            self.idle(*backoff);
            *backoff = (*backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One write of an attempt: raw events and recipients of every shard,
    /// then each shard's rollups through the fence, then the positions.
    fn write(&self, attempt: &Attempt) -> Outcome {
        let ctx = self.ctx();
        let protocol = ctx.protocol();
        let batch = protocol.batch();
        let shards = ctx.sink.by_shard(&attempt.parts);
        ctx.rt.block_on(async {
            for w in &shards {
                let partitions: Vec<i32> = w.parts.iter().map(|p| p.range.partition).collect();
                let idempotent = async {
                    ctx.sink.write_events(w.shard, batch.event_rows_of(&partitions)).await?;
                    ctx.sink.write_recipients(w.shard, batch.recipient_rows_of(&partitions)).await
                };
                if let Err(e) = idempotent.await {
                    return Outcome::NotApplied(e);
                }
            }
            // Per shard, the breakdowns first, then the rollups: the rollups
            // decide where reading resumes, so the breakdowns are never behind
            // them (see `protocol::breakdowns_from`). Once anything was sent,
            // any failure may have left part of the flush stored: settle.
            let mut any_sent = false;
            for w in &shards {
                let breakdowns = batch.breakdown_chunks(&ctx.topic, &w.parts);
                match ctx.sink.write_breakdowns(w.shard, breakdowns).await {
                    Ok(rows) => {
                        any_sent = true;
                        metrics::histogram!("ricochet_aggregator_flush_breakdown_rows").record(rows as f64);
                    }
                    Err(e @ WriteError::Retry(_)) | Err(e @ WriteError::Refused(_)) if !any_sent => {
                        return Outcome::NotApplied(e)
                    }
                    Err(e) => return Outcome::Unknown(e),
                }
                match ctx.sink.write_rollups(w.shard, batch.rollup_rows(&ctx.topic, &w.parts)).await {
                    Ok(rows) => metrics::histogram!("ricochet_aggregator_flush_rows").record(rows as f64),
                    Err(e) => return Outcome::Unknown(e),
                }
            }
            match ctx.sink.read_positions_of(&attempt.partitions()).await {
                Ok((stored, breakdowns)) => Outcome::Written(stored, breakdowns),
                // Acknowledged but not read back: settling finds out.
                Err(e) => Outcome::Unknown(e),
            }
        })
    }

    /// What became of each partition of a written attempt.
    fn apply(&self, attempt: &Attempt, verdicts: Vec<(i32, Verdict)>, newest: Option<i64>, started: Instant) {
        let ctx = self.ctx();
        let mut stored = Vec::new();
        let mut events = 0;
        for (p, verdict) in verdicts {
            match verdict {
                Verdict::Stored => {
                    if let Some(part) = attempt.parts.iter().find(|part| part.range.partition == p) {
                        stored.push(part.range);
                    }
                    ctx.held().blocked.remove(&p);
                }
                Verdict::Retry { stored } => self.seek(p, stored),
                Verdict::Fenced => {
                    metrics::counter!("ricochet_aggregator_fenced_total").increment(1);
                    tracing::warn!(
                        partition = p,
                        "another member holds this partition: its rows were dropped by the fence; pausing it"
                    );
                    ctx.status.revoked(p);
                    ctx.held().fenced.insert(p, Instant::now() + SESSION_TIMEOUT);
                    self.pause(p, true);
                }
            }
        }
        for r in &stored {
            events += (r.next - r.first) as u64;
        }
        ctx.status.stored(&stored, newest);
        metrics::histogram!("ricochet_aggregator_flush_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ricochet_aggregator_events_total").increment(events);
        metrics::counter!("ricochet_aggregator_flushes_total").increment(1);
    }

    /// Polls while paused so rebalances are served. A message delivered now
    /// is dropped: the rewind after the pause makes it come again.
    fn idle(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let _ = self.consumer.poll(until.saturating_duration_since(Instant::now()));
        }
    }

    fn set_paused(&self, pause: bool) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        let pending = self.ctx().protocol().num_unstored();
        self.ctx().status.pending(pending, pause);
        if pause {
            return self.consumer.pause(&assignment).is_ok();
        }
        self.consumer.resume(&assignment).is_ok()
    }

    fn pause(&self, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, partition);
        let result = if pause { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        if let Err(e) = result {
            tracing::warn!(partition, pause, error = %e, "cannot pause or resume a partition");
        }
    }

    fn seek(&self, partition: i32, stored: Option<i64>) {
        let offset = stored.map_or(Offset::Beginning, Offset::Offset);
        if let Err(e) = self.consumer.seek(&self.config.topic, partition, offset, Duration::from_secs(5)) {
            // Fetching has not started on a partition just assigned: it
            // delivered nothing and starts at the offset its assignment set.
            tracing::warn!(partition, error = %e, "seek failed");
        }
    }

    fn commit_hint(&self, ranges: &[PartitionRange]) {
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            let _ = tpl.add_partition_offset(&self.config.topic, r.partition, Offset::Offset(r.next));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit hint failed");
        }
    }
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}
