//! The consumer loop: Kafka → batch → ClickHouse, exactly once.
//!
//! Everything runs on one OS thread that owns the consumer: polling, batching,
//! flushing and the rebalance callback (librdkafka calls it from inside
//! `poll`). So a flush and a rebalance can never interleave, and a revoked
//! partition can never be written after its new owner read its position:
//!
//! - **assign**: read the partitions' stored positions from ClickHouse and
//!   start consuming exactly there (Kafka's committed offsets are ignored).
//! - **revoke**: settle any insert whose outcome is unknown, then drop what the
//!   revoked partitions contributed to the pending batch.
//! - **flush** (every `flush_interval` or `max_batch_events`, whichever first):
//!   raw events (idempotent), then rollups + positions in one atomic insert.
//!   On failure the assignment is paused, so Kafka keeps the backlog while
//!   ClickHouse is down and memory stays bounded by one batch; the attempt is
//!   settled (did it land?) before anything is retried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use ricochet_schemas::{ClickEvent, Codec};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Admit, PartitionRange, Positions};
use crate::dead_letter::DeadLetters;
use crate::rollup::{Batch, BucketStart};
use crate::sink::{ClickHouseSink, Settled};

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub flush_interval: Duration,
    pub max_batch_events: usize,
    /// First wait after a failed flush; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// State shared between the loop and the rebalance callback. Only the consumer
/// thread ever touches it; the mutex exists because the callback gets `&self`.
#[derive(Default)]
struct State {
    batch: Batch,
    positions: Positions,
    /// Dead-letter deliveries the pending batch depends on.
    dead_letters: Vec<DeliveryFuture>,
    /// An insert attempt whose outcome is not known yet.
    unsettled: Option<Attempt>,
}

#[derive(Clone)]
struct Attempt {
    query_id: String,
    ranges: Vec<PartitionRange>,
}

struct Ctx {
    rt: Handle,
    sink: ClickHouseSink,
    topic: String,
    state: Mutex<State>,
    shutdown: CancellationToken,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let Some(stored) = self.read_positions_blocking() else {
                    return;
                };
                let mut state = self.state.lock().unwrap();
                for p in &partitions {
                    let pos = stored.get(p).copied();
                    let offset = pos.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&self.topic, *p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                    state.positions.assign(*p, pos);
                }
                tracing::info!(
                    ?partitions,
                    ?stored,
                    "partitions assigned; resuming from stored positions"
                );
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.settle_blocking();
                let mut state = self.state.lock().unwrap();
                state.batch.revoke(&partitions);
                for p in &partitions {
                    state.positions.revoke(*p);
                }
                tracing::info!(
                    ?partitions,
                    "partitions revoked; their pending share dropped"
                );
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                self.settle_blocking();
                let mut state = self.state.lock().unwrap();
                state.batch.clear();
                state.positions = Positions::default();
                let _ = consumer.unassign();
            }
        }
    }
}

impl Ctx {
    /// Reads the stored positions, retrying while ClickHouse is unreachable:
    /// consuming from anywhere else could count twice or skip.
    fn read_positions_blocking(&self) -> Option<HashMap<i32, i64>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.rt.block_on(self.sink.read_positions(&self.topic)) {
                Ok(p) => return Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read stored positions; retrying");
                    if self.shutdown.is_cancelled() {
                        return None;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Resolves an unknown insert outcome, however long ClickHouse takes to answer.
    fn settle_blocking(&self) {
        let attempt = self.state.lock().unwrap().unsettled.clone();
        let Some(attempt) = attempt else { return };
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.rt.block_on(self.sink.settle(
                &attempt.query_id,
                &self.topic,
                &attempt.ranges,
            )) {
                Ok(outcome) => {
                    let mut state = self.state.lock().unwrap();
                    state.unsettled = None;
                    if outcome == Settled::Applied {
                        state.positions.advance(&attempt.ranges);
                        state.batch.clear();
                        state.dead_letters.clear();
                    }
                    tracing::info!(query_id = %attempt.query_id, ?outcome, "insert settled");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot settle the last insert yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

pub struct Pipeline {
    config: PipelineConfig,
    consumer: BaseConsumer<Ctx>,
    dead_letters: DeadLetters,
    codec: Codec<ClickEvent>,
    /// Earliest offset per partition polled while paused, to seek back to on resume.
    rewind: HashMap<i32, i64>,
}

impl Pipeline {
    pub fn new(
        config: PipelineConfig,
        sink: ClickHouseSink,
        rt: Handle,
        shutdown: CancellationToken,
    ) -> Result<Self, PipelineError> {
        let ctx = Ctx {
            rt,
            sink,
            topic: config.topic.clone(),
            state: Mutex::default(),
            shutdown,
        };
        let consumer: BaseConsumer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            // Positions live in ClickHouse with the rollups; commits are a hint for lag tools.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A ClickHouse outage pauses consumption, and the loop keeps polling
            // through it, so the default poll interval is safe.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(ctx)?;
        consumer.subscribe(&[&config.topic])?;
        let dead_letters = DeadLetters::new(&config.brokers, &config.dead_letter_topic)?;
        Ok(Pipeline {
            config,
            consumer,
            dead_letters,
            codec: Codec::new(),
            rewind: HashMap::new(),
        })
    }

    fn ctx(&self) -> &Ctx {
        self.consumer.context()
    }

    /// Runs until shutdown, then flushes what it holds. Call from a dedicated thread.
    pub fn run(mut self) {
        while !self.ctx().shutdown.is_cancelled() {
            let wait = self
                .time_to_flush()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            match self.consumer.poll(wait) {
                Some(Ok(message)) => self.accept(&message),
                Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
                None => {}
            }
            if self.time_to_flush() == Some(Duration::ZERO) {
                self.flush();
            }
        }
        self.flush();
        self.dead_letters.flush(Duration::from_secs(5));
        self.consumer.unsubscribe();
        tracing::info!("pipeline stopped");
    }

    /// `Some(0)` when the batch must be flushed now, `Some(d)` when it must be in `d`.
    fn time_to_flush(&self) -> Option<Duration> {
        let state = self.ctx().state.lock().unwrap();
        let opened = state.batch.opened_at()?;
        if state.batch.num_events() >= self.config.max_batch_events {
            return Some(Duration::ZERO);
        }
        Some(self.config.flush_interval.saturating_sub(opened.elapsed()))
    }

    fn accept(&self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        let ctx = self.consumer.context();
        let mut state = ctx.state.lock().unwrap();
        match state.positions.admit(partition, offset) {
            Admit::Apply => {}
            Admit::AlreadyApplied => {
                metrics::counter!("ricochet_aggregator_replayed_skipped_total").increment(1);
                return;
            }
            Admit::NotOwned => return,
        }
        let decoded = match message.payload() {
            None => Err("empty payload".to_owned()),
            Some(p) => self
                .codec
                .decode(p)
                .map_err(|e| e.to_string())
                .and_then(|e| match BucketStart::of_millis(e.event_time_ms) {
                    Some(b) => Ok((e, b)),
                    None => Err(format!(
                        "event_time {} ms is outside 1970..2106",
                        e.event_time_ms
                    )),
                }),
        };
        let event = match decoded {
            Ok(ok) => Some(ok),
            Err(reason) => {
                metrics::counter!("ricochet_aggregator_poison_messages_total").increment(1);
                tracing::warn!(partition, offset, %reason, "poison message set aside to the dead-letter topic");
                match self.dead_letters.send(
                    message.key(),
                    message.payload(),
                    &reason,
                    (&ctx.topic, partition, offset),
                ) {
                    Ok(delivery) => state.dead_letters.push(delivery),
                    Err(e) => {
                        tracing::error!(error = %e, "dead-letter enqueue failed; the flush will retry it")
                    }
                }
                None
            }
        };
        state.batch.add(partition, offset, event, unix_now());
    }

    /// Writes the pending batch, retrying (paused) until it is stored or revoked.
    fn flush(&mut self) {
        let mut backoff = self.config.min_backoff;
        let mut paused = false;
        loop {
            let ctx = self.consumer.context();
            let (attempt, result) = {
                let mut state = ctx.state.lock().unwrap();
                if state.batch.is_empty() {
                    state.dead_letters.clear();
                    break;
                }
                let ranges = state.batch.ranges();
                if let Err(e) = state.positions.verify(&ranges) {
                    // Never applied twice: drop the batch, the stored position decides.
                    tracing::error!(error = %e, "refusing batch");
                    state.batch.clear();
                    break;
                }
                let attempt = Attempt {
                    query_id: format!("ricochet-{}", uuid::Uuid::now_v7().simple()),
                    ranges,
                };
                state.unsettled = Some(attempt.clone());
                let dead_letters = std::mem::take(&mut state.dead_letters);
                let rows = state.batch.rollup_rows(&ctx.topic);
                let started = Instant::now();
                let result = ctx.rt.block_on(async {
                    for d in dead_letters {
                        match d.await {
                            Ok(Ok(_)) => {}
                            Ok(Err((e, _))) => return Err(format!("dead-letter delivery: {e}")),
                            Err(_) => return Err("dead-letter delivery cancelled".to_owned()),
                        }
                    }
                    ctx.sink
                        .write_events(state.batch.event_rows())
                        .await
                        .map_err(|e| e.to_string())?;
                    ctx.sink
                        .write_rollups(&rows, &attempt.query_id)
                        .await
                        .map_err(|e| e.to_string())
                });
                if result.is_ok() {
                    metrics::histogram!("ricochet_aggregator_flush_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("ricochet_aggregator_events_total")
                        .increment(state.batch.num_events() as u64);
                    metrics::counter!("ricochet_aggregator_flushes_total").increment(1);
                    metrics::histogram!("ricochet_aggregator_flush_rows").record(rows.len() as f64);
                    state.positions.advance(&attempt.ranges);
                    state.batch.clear();
                    state.unsettled = None;
                }
                (attempt, result)
            };
            match result {
                Ok(()) => {
                    self.commit_hint(&attempt.ranges);
                    break;
                }
                Err(e) => {
                    metrics::counter!("ricochet_aggregator_flush_failures_total").increment(1);
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "flush failed; pausing consumption and retrying");
                    if !paused {
                        paused = self.set_paused(true);
                    }
                    self.idle(backoff);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    // Did the failed attempt land after all? (Also settles it if a
                    // revoke during `idle` has not already.)
                    self.consumer.context().settle_blocking();
                }
            }
        }
        if paused {
            self.set_paused(false);
        }
    }

    /// Polls while paused so rebalances are served; anything polled is rewound.
    fn idle(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if let Some(Ok(m)) = self
                .consumer
                .poll(until.saturating_duration_since(Instant::now()))
            {
                let e = self.rewind.entry(m.partition()).or_insert(m.offset());
                *e = (*e).min(m.offset());
            }
        }
    }

    fn set_paused(&mut self, pause: bool) -> bool {
        let Ok(assignment) = self.consumer.assignment() else {
            return false;
        };
        if pause {
            return self.consumer.pause(&assignment).is_ok();
        }
        let _ = self.consumer.resume(&assignment);
        let positions: HashMap<i32, Option<i64>> =
            self.ctx().state.lock().unwrap().positions.owned().collect();
        for (partition, offset) in self.rewind.drain() {
            // Seek to the stored position if it is later: those messages are counted.
            let target = positions
                .get(&partition)
                .copied()
                .flatten()
                .map_or(offset, |p| p.max(offset));
            if positions.contains_key(&partition) {
                if let Err(e) = self.consumer.seek(
                    &self.config.topic,
                    partition,
                    Offset::Offset(target),
                    Duration::from_secs(5),
                ) {
                    tracing::error!(partition, error = %e, "seek after pause failed");
                }
            }
        }
        true
    }

    fn commit_hint(&self, ranges: &[PartitionRange]) {
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            let _ =
                tpl.add_partition_offset(&self.config.topic, r.partition, Offset::Offset(r.next));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit hint failed");
        }
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}
