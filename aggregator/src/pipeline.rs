//! The consumer loop: Kafka → batch → ClickHouse, exactly once.
//!
//! Everything runs on one OS thread that owns the consumer: polling, batching,
//! flushing and the rebalance callback (librdkafka calls it from inside
//! `poll`). So a flush and a rebalance can never interleave, and a revoked
//! partition can never be written after its new owner read its position:
//!
//! - **assign**: wait until no rollup insert is running any more (one from a
//!   member that was killed may still be), then read the partitions' stored
//!   positions from ClickHouse and start consuming exactly there (Kafka's
//!   committed offsets are ignored).
//! - **revoke**: settle any insert whose outcome is unknown, then drop what the
//!   revoked partitions contributed to the pending batch.
//! - **verdict**: a click waits in [`Verdicts`] until its verdict is final
//!   (`verdict_delay` after it arrived, or once the partition has read events
//!   that much newer), then joins the pending batch. Only a decided prefix of
//!   each partition ever joins it, so the stored position of a partition is
//!   always the first offset not yet counted: a crash or a revocation re-reads
//!   the undecided events, like the pending batch. A rewind (after a failed or
//!   refused flush) forgets them too, and the context read past the stored
//!   position.
//! - **flush** (every `flush_interval` or `max_batch_events`, whichever first):
//!   raw events and recipients (idempotent), then rollups at every grain +
//!   position deltas in one atomic insert.
//!   On failure the assignment is paused, so Kafka keeps the backlog while
//!   ClickHouse is down and memory stays bounded by one batch; the attempt is
//!   settled (did it land?) before anything is written again, and the loop
//!   keeps polling meanwhile so rebalances are served. When the pause ends,
//!   every owned partition is sought back to its stored position: whatever was
//!   delivered and dropped in between is read again, never skipped.
//!
//! What an unclean exit can cost: nothing stored is lost and nothing is
//! counted twice; the pending batch (at most one flush interval) and the
//! events awaiting their verdict (at most one verdict delay) are read again by
//! the next owner. One window remains that no ClickHouse insert can close:
//! a member cut off from the group (kicked out while still able to reach
//! ClickHouse) whose insert *starts* after the new owner has fenced and read
//! the positions. The member polls, and so learns it lost the partitions,
//! before every write, which keeps that window to a single insert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use ricochet_schemas::{ClickEvent, Codec};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Admit, PartitionRange, Positions};
use crate::dead_letter::{self, DeadLetter, DeadLetters};
use crate::rollup::{Batch, BucketStart};
use crate::sink::{ClickHouseSink, Settled, SinkError};
use crate::status::{self, PipelineStatus};
use crate::verdict::{Rules, Verdicts};

/// Every rollup insert's `query_id` starts with this, so that an assignment can
/// find inserts still running (from a member that just died) and wait for them.
pub const QUERY_ID_PREFIX: &str = "ricochet-";

/// A request can sit in the server's socket for a moment before ClickHouse
/// registers it as a query. An attempt that looks unapplied is checked again
/// after this, so that an insert starting late is killed or seen, not retried
/// beside.
const SETTLE_GRACE: Duration = Duration::from_millis(300);

/// How often held events are checked for a final verdict.
const RELEASE_EVERY: Duration = Duration::from_millis(10);

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
    /// `partition.assignment.strategy`. `cooperative-sticky` moves only the
    /// partitions that change owner (verified on nisshi 0.8.1 and Kafka); an
    /// eager one (`range`, `roundrobin`) revokes everything on each rebalance.
    /// The pipeline handles both.
    pub assignment_strategy: String,
    /// `group.instance.id` (static membership): a restarted member with the same
    /// id takes its partitions back at once instead of after the session timeout.
    /// `None`: dynamic membership.
    pub group_instance_id: Option<String>,
    /// How long an assignment waits for rollup inserts still running before it
    /// kills them.
    pub fence_timeout: Duration,
    /// How long a click waits for the clicks that may change its verdict
    /// before it is counted.
    pub verdict_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// State shared between the loop and the rebalance callback. Only the consumer
/// thread ever touches it; the mutex exists because the callback gets `&self`.
struct State {
    batch: Batch,
    /// Events read but not decided yet: not in the batch, not covered by a
    /// stored position.
    verdicts: Verdicts<BucketStart>,
    positions: Positions,
    /// Dead letters the pending batch depends on.
    dead_letters: Vec<dead_letter::Pending>,
    /// An insert attempt whose outcome is not known yet.
    unsettled: Option<Attempt>,
    /// Newest event time (ms) per partition in the pending batch.
    newest_event_ms: HashMap<i32, i64>,
}

impl State {
    fn new(rules: Rules) -> Self {
        State {
            batch: Batch::default(),
            verdicts: Verdicts::new(rules),
            positions: Positions::default(),
            dead_letters: Vec::new(),
            unsettled: None,
            newest_event_ms: HashMap::new(),
        }
    }

    /// Moves the events decided by `now_ms` into the pending batch.
    fn release(&mut self, now_ms: i64) {
        let ingested_at = unix_now();
        for d in self.verdicts.release(now_ms) {
            let event = d.event.map(|(e, bucket, reason)| {
                let newest = self.newest_event_ms.entry(d.partition).or_insert(i64::MIN);
                *newest = (*newest).max(e.event_time_ms);
                (e, bucket, reason)
            });
            self.batch.add(d.partition, d.offset, event, ingested_at);
        }
    }

    /// Events read and not stored yet: the batch's and those awaiting a verdict.
    fn num_unstored(&self) -> usize {
        self.batch.num_events() + self.verdicts.num_held()
    }

    /// The batch covering `ranges` is stored: move the positions past it.
    fn stored(&mut self, ranges: &[PartitionRange], status: &PipelineStatus) {
        self.positions.advance(ranges);
        status.stored(ranges, self.newest_event_ms.values().max().copied());
        self.batch.clear();
        self.newest_event_ms.clear();
        self.dead_letters.clear();
        self.unsettled = None;
    }
}

#[derive(Clone, Debug)]
struct Attempt {
    query_id: String,
    ranges: Vec<PartitionRange>,
}

struct Ctx {
    rt: Handle,
    sink: ClickHouseSink,
    topic: String,
    fence_timeout: Duration,
    state: Mutex<State>,
    status: Arc<PipelineStatus>,
    shutdown: CancellationToken,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = if partitions.is_empty() {
                    HashMap::new()
                } else {
                    let Some(stored) = self.fenced_positions_blocking() else {
                        return;
                    };
                    stored
                };
                let mut state = self.state();
                for p in &partitions {
                    let pos = stored.get(p).copied();
                    let offset = pos.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&self.topic, *p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                    state.positions.assign(*p, pos);
                    self.status.assigned(*p, pos);
                }
                tracing::info!(?partitions, ?stored, "partitions assigned; resuming from stored positions");
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = result {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.settle_blocking();
                let mut state = self.state();
                let before = state.num_unstored();
                state.batch.revoke(&partitions);
                for p in &partitions {
                    state.verdicts.revoke(*p);
                    state.positions.revoke(*p);
                    state.newest_event_ms.remove(p);
                    self.status.revoked(*p);
                }
                let dropped = before - state.num_unstored();
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
                let mut state = self.state();
                let rules = state.verdicts.rules().clone();
                *state = State::new(rules);
                drop(state);
                self.status.revoked_all();
                let _ = consumer.unassign();
            }
        }
    }
}

impl Ctx {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Waits out rollup inserts still running, then reads the stored positions,
    /// retrying while ClickHouse is unreachable: consuming from anywhere else
    /// could count twice or skip. `None` only on shutdown.
    fn fenced_positions_blocking(&self) -> Option<HashMap<i32, i64>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let read = self.rt.block_on(async {
                self.fence().await?;
                self.sink.read_positions(&self.topic).await
            });
            match read {
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

    /// Waits until the rollup inserts running now have ended, killing them
    /// after `fence_timeout`. A member killed mid-insert leaves its insert
    /// running on the server; reading the positions before it ends would
    /// start the new owner behind a batch that then lands: counted twice.
    async fn fence(&self) -> Result<(), SinkError> {
        let running = || async {
            self.sink
                .client()
                .query("SELECT query_id FROM system.processes WHERE query_id LIKE ?")
                .bind(format!("{QUERY_ID_PREFIX}%"))
                .fetch_all::<String>()
                .await
        };
        let fenced = running().await?;
        if fenced.is_empty() {
            return Ok(());
        }
        tracing::info!(?fenced, "waiting for rollup inserts still running");
        let deadline = Instant::now() + self.fence_timeout;
        loop {
            let still: Vec<String> = running().await?.into_iter().filter(|q| fenced.contains(q)).collect();
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                for query_id in &still {
                    tracing::warn!(query_id, "killing a rollup insert that outlived the fence");
                    self.sink.client().query("KILL QUERY WHERE query_id = ? SYNC").bind(query_id).execute().await?;
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One try at finding out whether the unsettled attempt landed. `Ok` once
    /// nothing is unsettled any more.
    fn try_settle(&self) -> Result<(), SinkError> {
        let Some(attempt) = self.state().unsettled.clone() else {
            return Ok(());
        };
        let outcome = self.rt.block_on(async {
            let first = self.sink.settle(&attempt.query_id, &self.topic, &attempt.ranges).await?;
            if first == Settled::Applied {
                return Ok(first);
            }
            tokio::time::sleep(SETTLE_GRACE).await;
            self.sink.settle(&attempt.query_id, &self.topic, &attempt.ranges).await
        })?;
        let mut state = self.state();
        let label = match outcome {
            Settled::Applied => {
                state.stored(&attempt.ranges, &self.status);
                "applied"
            }
            Settled::NotApplied => {
                state.unsettled = None;
                "not_applied"
            }
        };
        metrics::counter!("ricochet_aggregator_settled_total", "outcome" => label).increment(1);
        tracing::info!(query_id = %attempt.query_id, ?outcome, "insert settled");
        Ok(())
    }

    /// Settles, however long ClickHouse takes to answer (the rebalance waits:
    /// the partitions must not move while an insert for them may still land),
    /// unless the process is shutting down; the next owner's fence then waits.
    fn settle_blocking(&self) {
        let mut backoff = Duration::from_millis(200);
        while let Err(e) = self.try_settle() {
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

/// What one write of the pending batch came to.
enum Written {
    /// Stored, or nothing to store.
    Done,
    /// Refused by the position check and dropped: consumption must rewind.
    Refused,
    /// Failed; the attempt may be unsettled.
    Failed(String),
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
        let ctx = Ctx {
            rt,
            sink,
            topic: config.topic.clone(),
            fence_timeout: config.fence_timeout,
            state: Mutex::new(State::new(Rules::with_delay(config.verdict_delay))),
            status: PipelineStatus::new(&config.topic),
            shutdown,
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            // Positions live in ClickHouse with the rollups; commits are a hint for lag tools.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", &config.assignment_strategy)
            // A ClickHouse outage pauses consumption, and the loop keeps polling
            // through it, so the default poll interval is safe.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        if let Some(id) = &config.group_instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<Ctx> = client.create_with_context(ctx)?;
        consumer.subscribe(&[&config.topic])?;
        let dead_letters = DeadLetters::new(&config.brokers, &config.dead_letter_topic)?;
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
        let refresher = status::spawn_refresher(&self.config.brokers, self.status(), self.ctx().shutdown.clone());
        // Verdicts are released every RELEASE_EVERY, not after each message:
        // far inside the verdict delay, and it spares a clock read and a walk
        // over every partition per message.
        let mut released_at = Instant::now();
        let mut now_ms = unix_now_ms();
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
                self.ctx().state().release(now_ms);
                released_at = Instant::now();
            }
            if self.time_to_flush() == Some(Duration::ZERO) {
                self.ctx().state().release(unix_now_ms());
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
        let state = self.ctx().state();
        let opened = state.batch.opened_at()?;
        if state.batch.num_events() >= self.config.max_batch_events {
            return Some(Duration::ZERO);
        }
        Some(self.config.flush_interval.saturating_sub(opened.elapsed()))
    }

    /// `now_ms`: the wall clock read at most [`RELEASE_EVERY`] ago (an
    /// arrival time needs no finer grain than the release cadence).
    fn accept(&self, message: &rdkafka::message::BorrowedMessage<'_>, now_ms: i64) {
        let (partition, offset) = (message.partition(), message.offset());
        let ctx = self.ctx();
        let mut state = ctx.state();
        match state.positions.admit(partition, offset) {
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
                if let Err(e) =
                    self.consumer.seek(&ctx.topic, partition, Offset::Offset(expected), Duration::from_secs(5))
                {
                    tracing::warn!(partition, error = %e, "seek back failed; the next message retries");
                }
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
                state.dead_letters.push(pending);
                None
            }
        };
        state.verdicts.push(partition, offset, event, now_ms);
    }

    /// Writes the pending batch, retrying (paused) until it is stored or
    /// revoked, or the process shuts down.
    fn flush(&mut self) {
        let mut backoff = self.config.min_backoff;
        let mut paused = false;
        let mut rewind = false;
        loop {
            match self.write_batch(paused) {
                Written::Done => break,
                Written::Refused => {
                    rewind = true;
                    break;
                }
                Written::Failed(e) => {
                    metrics::counter!("ricochet_aggregator_flush_failures_total").increment(1);
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "flush failed; pausing consumption and retrying");
                    if !paused {
                        paused = self.set_paused(true);
                    }
                    rewind = true;
                    // Nothing is written again before the failed attempt is
                    // settled; rebalances are served meanwhile.
                    loop {
                        if self.ctx().shutdown.is_cancelled() {
                            tracing::warn!(
                                "shutting down with the batch unstored; its partitions' next owner reads it again"
                            );
                            return;
                        }
                        self.idle(backoff);
                        backoff = (backoff * 2).min(self.config.max_backoff);
                        match self.ctx().try_settle() {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot settle the failed insert yet")
                            }
                        }
                    }
                }
            }
        }
        if paused {
            self.set_paused(false);
        }
        if rewind {
            self.rewind();
        }
        let pending = self.ctx().state().num_unstored();
        self.ctx().status.pending(pending, false);
    }

    /// One attempt at storing the pending batch.
    fn write_batch(&self, paused: bool) -> Written {
        let ctx = self.ctx();
        let mut state = ctx.state();
        if state.batch.is_empty() {
            state.dead_letters.clear();
            return Written::Done;
        }
        // Learn about a lost assignment (the next poll revokes it) before
        // writing for partitions that may belong to another member by now.
        // (Checked after the emptiness test: librdkafka keeps the flag set
        // until the next assignment, and an empty batch has nothing to lose.)
        if self.consumer.assignment_lost() {
            return Written::Failed("the assignment was lost".to_owned());
        }
        let ranges = state.batch.ranges();
        if let Err(e) = state.positions.verify(&ranges) {
            // Never applied twice: drop the batch, the stored position decides.
            // (`revoke`, not `clear`: `clear` marks the events as stored, and
            // they are to be read again.)
            tracing::error!(error = %e, "refusing batch");
            let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
            state.batch.revoke(&partitions);
            state.newest_event_ms.clear();
            return Written::Refused;
        }
        ctx.status.pending(state.num_unstored(), paused);
        let started = Instant::now();
        let state = &mut *state;
        let written = ctx.rt.block_on(async {
            self.dead_letters.confirm(&mut state.dead_letters).await?;
            ctx.sink.write_events(state.batch.event_rows()).await.map_err(|e| e.to_string())?;
            ctx.sink.write_recipients(state.batch.recipient_rows()).await.map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            return Written::Failed(e);
        }
        let attempt = Attempt { query_id: format!("{QUERY_ID_PREFIX}{}", uuid::Uuid::now_v7().simple()), ranges };
        // From here until it is answered or settled, the outcome is unknown.
        state.unsettled = Some(attempt.clone());
        let rows = state.batch.rollup_rows(&ctx.topic, |p| state.positions.stored(p));
        let result = ctx.rt.block_on(ctx.sink.write_rollups(&rows, &attempt.query_id));
        if let Err(e) = result {
            return Written::Failed(e.to_string());
        }
        metrics::histogram!("ricochet_aggregator_flush_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ricochet_aggregator_events_total").increment(state.batch.num_events() as u64);
        metrics::counter!("ricochet_aggregator_flushes_total").increment(1);
        metrics::histogram!("ricochet_aggregator_flush_rows").record(rows.len() as f64);
        state.stored(&attempt.ranges, &ctx.status);
        self.commit_hint(&attempt.ranges);
        Written::Done
    }

    /// Polls while paused so rebalances are served. A message delivered now
    /// (from a partition assigned during the pause) is dropped: `rewind` makes
    /// it come again.
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
        let pending = self.ctx().state().num_unstored();
        self.ctx().status.pending(pending, pause);
        if pause {
            return self.consumer.pause(&assignment).is_ok();
        }
        self.consumer.resume(&assignment).is_ok()
    }

    /// Moves every owned partition back to its stored position. Called after a
    /// pause or a dropped batch: whatever was delivered and not stored since
    /// (a dropped batch, messages polled while paused) comes again.
    fn rewind(&self) {
        let owned: Vec<(i32, Option<i64>)> = {
            let mut state = self.ctx().state();
            state.positions.rewind();
            let owned: Vec<(i32, Option<i64>)> = state.positions.owned().collect();
            // What awaited its verdict comes again too.
            for (partition, stored) in &owned {
                state.verdicts.rewind(*partition, *stored);
            }
            owned
        };
        for (partition, stored) in owned {
            let offset = stored.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = self.consumer.seek(&self.config.topic, partition, offset, Duration::from_secs(5)) {
                // Fetching has not started on a partition just assigned: it
                // delivered nothing and starts at the offset its assignment
                // set, the stored position.
                tracing::warn!(partition, error = %e, "seek to the stored position failed");
            }
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
