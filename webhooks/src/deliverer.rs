//! Delivering: one run per active endpoint (and one per pending replay),
//! started and stopped as the endpoints change ([`supervise`]).
//!
//! A run reads the endpoint's client's partition of the `decided` topic
//! ([`crate::partition`]) with a Kafka consumer of its own, whose committed
//! offset is the endpoint's position: group `{prefix}.{webhook_id}`. Its
//! events go into lanes by recipient ([`crate::lanes`]), each lane sends one
//! batch at a time, and a failed batch is retried on the [`RetryPolicy`]'s
//! schedule while the other lanes go on. The position committed is the
//! lanes' (never past an undelivered event), so:
//!
//! - **Retries are durable.** What a killed deliverer had not delivered is at
//!   or past its committed position, in Kafka: the next run reads it again and
//!   sends it. Delivery is at least once; an event sent again keeps its
//!   `webhook-id` when it goes alone (the default, `batch_size` 1), and its
//!   `event_id` always.
//! - **Endpoints are isolated.** Each has its own reader, lanes and timers:
//!   a slow or dead receiver holds up only its own events. It holds at most
//!   `max_queued` of them in memory; the rest waits in Kafka.
//! - **A dead endpoint is let go.** `410 Gone` disables it at once; failing
//!   throughout a day disables it too. Both are written to the endpoint's
//!   record, where the API shows them; `failing_since` is written there when
//!   it starts failing, so a restart does not restart the day.
//!
//! A new endpoint starts with the events decided from its creation on
//! (Kafka's offsets for that time). A replay reads the partition from
//! `from`'s offset and sends the events that occurred in `[from, to)`, under
//! a group of its own, so it survives restarts too and never moves the live
//! position.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use ricochet_registry::KafkaConnection;
use ricochet_schemas::{Codec, DecidedEvent, Replay, WebhookRecord};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::endpoints::{EndpointWriter, Endpoints};
use crate::lanes::Lanes;
use crate::log::{DeliveryLog, DeliveryRow};
use crate::partition::partition_of;
use crate::retry::{Answer, Attempts, Health, Next, RetryPolicy};
use crate::send::{Attempt, Sender};
use crate::signing::WebhookSecret;

/// A replay reads this long past its `to` for events that occurred before
/// `to` but were decided after it (verdicts are held for seconds, longer
/// through an outage).
const REPLAY_DECIDED_SLACK_MS: i64 = 3_600_000;

/// Lanes per endpoint: recipients are spread over this many, each in order.
/// Far more than the requests in flight, so that a lane waiting out a retry
/// holds up only its share of recipients while the others keep every request
/// slot busy (with as many lanes as slots, a receiver failing 30 % of
/// requests at random left each slot waiting most of the time).
const LANES: usize = 64;

/// What every run shares.
pub struct Shared {
    pub kafka: KafkaConnection,
    pub decided_topic: String,
    pub group_prefix: String,
    pub concurrency: usize,
    pub max_queued: usize,
    pub retry: RetryPolicy,
    pub shutdown_grace: Duration,
    pub endpoints: Arc<Endpoints>,
    pub writer: EndpointWriter,
    pub sender: Sender,
    pub log: DeliveryLog,
    /// Whether this deliverer is the active one ([`crate::active`]): a
    /// standby runs no endpoint.
    pub active: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the decided topic {0} has no partitions yet")]
    NoTopic(String),
    #[error("writing the endpoint's record: {0}")]
    Record(#[from] crate::endpoints::EndpointsError),
}

/// A run's identity: an endpoint's live deliveries, or one of its replays.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RunKey {
    Live(String),
    Replay(String, String),
}

/// While this deliverer is the active one, starts a run for every active
/// endpoint and pending replay, stops the runs of endpoints deleted or
/// disabled, and restarts runs that failed; a standby runs none, and one that
/// stops being active stops them all. Until `shutdown`; then stops every run
/// (each lets its requests in flight finish and commits its position) and
/// returns.
pub async fn supervise(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut changes = shared.endpoints.subscribe();
    let mut active = shared.active.clone();
    let mut running: HashMap<RunKey, (CancellationToken, tokio::task::JoinHandle<bool>)> = HashMap::new();
    // Replays that reached their end in this process: not started again.
    let mut finished: HashSet<RunKey> = HashSet::new();
    loop {
        let mut wanted: HashMap<RunKey, (Arc<WebhookRecord>, Option<Replay>)> = HashMap::new();
        let delivering = *active.borrow_and_update();
        for w in shared.endpoints.all().into_iter().filter(|w| delivering && w.is_active()) {
            if let Some(r) = w.replay.clone() {
                wanted.insert(RunKey::Replay(w.webhook_id.clone(), r.id.clone()), (w.clone(), Some(r)));
            }
            wanted.insert(RunKey::Live(w.webhook_id.clone()), (w, None));
        }
        // Ended runs: a replay that finished is done; anything else restarts.
        let ended: Vec<RunKey> = running.iter().filter(|(_, (_, h))| h.is_finished()).map(|(k, _)| k.clone()).collect();
        for key in ended {
            let (_, handle) = running.remove(&key).expect("listed");
            if let (RunKey::Replay(..), Ok(true)) = (&key, handle.await) {
                finished.insert(key);
            }
        }
        running.retain(|key, (cancel, _)| {
            let keep = wanted.contains_key(key);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for (key, (w, replay)) in wanted {
            if running.contains_key(&key) || finished.contains(&key) {
                continue;
            }
            let cancel = shutdown.child_token();
            let handle = tokio::spawn(run_logged(shared.clone(), w.webhook_id.clone(), replay, cancel.clone()));
            running.insert(key, (cancel, handle));
        }
        metrics::gauge!("ricochet_webhook_runs").set(running.len() as f64);
        tokio::select! {
            _ = changes.changed() => {}
            Ok(()) = active.changed() => {}
            // Also a restart of failed runs, at most every few seconds.
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            () = shutdown.cancelled() => break,
        }
    }
    for (_, (cancel, _)) in running.iter() {
        cancel.cancel();
    }
    for (_, (_, handle)) in running {
        let _ = handle.await;
    }
}

/// One run; `true` if it reached its end (a replay), `false` if stopped or failed.
async fn run_logged(
    shared: Arc<Shared>,
    webhook_id: String,
    replay: Option<Replay>,
    cancel: CancellationToken,
) -> bool {
    match run(&shared, &webhook_id, replay.as_ref(), &cancel).await {
        Ok(done) => done,
        Err(e) => {
            metrics::counter!("ricochet_webhook_run_errors_total").increment(1);
            tracing::warn!(webhook_id, replay = ?replay.map(|r| r.id), error = %e, "webhook run stopped; restarting it shortly");
            false
        }
    }
}

/// A batch's request, in flight.
struct Sent {
    lane: usize,
    message_id: String,
    events: u32,
    attempt: Attempt,
}

async fn run(
    shared: &Shared,
    webhook_id: &str,
    replay: Option<&Replay>,
    cancel: &CancellationToken,
) -> Result<bool, RunError> {
    let Some(w) = shared.endpoints.get(webhook_id) else { return Ok(false) };
    let group = match replay {
        None => format!("{}.{webhook_id}", shared.group_prefix),
        Some(r) => format!("{}.{webhook_id}.replay.{}", shared.group_prefix, r.id),
    };
    let mut config = shared.kafka.client_config();
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka prefetches up to 64 MB a consumer by default; a reader
        // per endpoint needs far less ahead of its deliveries.
        .set("queued.max.messages.kbytes", "2048");
    let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
    let topic = shared.decided_topic.clone();
    let (start_from, to_ms) = match replay {
        None => (w.created_at_ms, None),
        Some(r) => (r.from_ms, Some(r.to_ms)),
    };
    let client_id = w.client_id.to_string();
    let (partitions, partition, start, end) = blocking(consumer.clone(), move |c| {
        let metadata = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(RunError::NoTopic(topic));
        }
        let partition = partition_of(&client_id, partitions);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let (_, high) = c.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
        let at = |ms: i64| -> Result<i64, RunError> {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(ms))?;
            let found = c.offsets_for_times(tpl, Duration::from_secs(10))?;
            Ok(match found.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => high,
            })
        };
        let start = match committed.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => at(start_from)?,
        };
        let end = to_ms.map(|to| at(to.saturating_add(REPLAY_DECIDED_SLACK_MS))).transpose()?;
        Ok((partitions, partition, start, end))
    })
    .await?;
    if end.is_some_and(|end| start >= end) {
        return Ok(true);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&shared.decided_topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    tracing::info!(webhook_id, group, partition, start, end, "webhook run started");

    let codec: Codec<DecidedEvent> = Codec::new();
    let mut lanes: Lanes<DecidedEvent> = Lanes::new(LANES, start);
    let lane_count = lanes.lane_count();
    let mut next_lane = 0;
    let mut attempts = vec![Attempts::default(); lane_count];
    let mut retry_at: Vec<Option<Instant>> = vec![None; lane_count];
    let mut health = Health { failing_since_ms: w.failing_since_ms };
    let mut in_flight = FuturesUnordered::new();
    let mut committed = start;
    let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    let label = if replay.is_some() { "replay" } else { "live" };
    let mut reading = true;
    let mut misrouted = false;
    let mut outcome: Option<bool> = None;

    while outcome.is_none() {
        // Send what idle lanes hold, unless waiting to retry, up to the
        // endpoint's cap of requests in flight; the lanes are visited from
        // where the last pass stopped, so none waits behind the others.
        let now = Instant::now();
        if let Some(w) = shared.endpoints.get(webhook_id) {
            for _ in 0..lane_count {
                if in_flight.len() >= shared.concurrency {
                    break;
                }
                let lane = next_lane;
                next_lane = (next_lane + 1) % lane_count;
                if retry_at[lane].is_some_and(|t| t > now) {
                    continue;
                }
                let Some(batch) = lanes.take(lane, w.batch_size.max(1).into()) else { continue };
                let batch: Vec<DecidedEvent> = batch.into_iter().cloned().collect();
                in_flight.push(send(shared, w.clone(), lane, batch));
            }
        }
        let reached_end = end.is_some_and(|end| lanes.committable() >= end);
        if reached_end && in_flight.is_empty() && lanes.queued() == 0 {
            outcome = Some(true);
            break;
        }
        let next_retry = retry_at.iter().flatten().min().copied();
        let may_read = reading && lanes.queued() < shared.max_queued;
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(sent) = in_flight.next() => {
                if let Some(disabled) = handle(shared, webhook_id, replay, &mut lanes, &mut attempts, &mut retry_at, &mut health, sent).await? {
                    tracing::warn!(webhook_id, reason = disabled, "webhook endpoint disabled");
                    outcome = Some(false);
                }
            }
            message = consumer.recv(), if may_read => {
                let m = message?;
                let offset = m.offset();
                if !misrouted && m.key().and_then(|k| std::str::from_utf8(k).ok()).is_some_and(|k| partition_of(k, partitions) != partition) {
                    // A client's events found outside murmur2's partition:
                    // whatever produced `clicks` did not partition as the
                    // edge does, and this endpoint's events may be elsewhere.
                    misrouted = true;
                    metrics::counter!("ricochet_webhook_misrouted_runs_total").increment(1);
                    tracing::error!(webhook_id, partition, offset, "decided records of another partition's client here: `clicks` is not partitioned by murmur2 of the client id, as the edge does; deliveries will miss events");
                }
                let event = m.payload().map(|p| codec.decode(p));
                match event {
                    Some(Ok(e)) if wanted(&w, replay, &e) => {
                        let key = recipient_key(&e);
                        lanes.push(offset, key, e);
                    }
                    Some(Err(e)) => {
                        // The aggregator writes this topic; a record it did
                        // not write is no event of a client's.
                        tracing::error!(webhook_id, offset, error = %e, "undecodable decided record skipped");
                        lanes.skip(offset);
                    }
                    _ => lanes.skip(offset),
                }
                if end.is_some_and(|end| offset + 1 >= end) {
                    reading = false;
                }
            }
            () = sleep_until(next_retry) => {}
            _ = commit_tick.tick() => {
                let position = lanes.committable();
                if position > committed {
                    commit(&consumer, &shared.decided_topic, partition, position, CommitMode::Async)?;
                    committed = position;
                }
                let pending = retry_at.iter().filter(|t| t.is_some()).count();
                metrics::gauge!("ricochet_webhook_retries_pending", "webhook_id" => webhook_id.to_owned(), "run" => label).set(pending as f64);
                metrics::gauge!("ricochet_webhook_queued_events", "webhook_id" => webhook_id.to_owned(), "run" => label).set(lanes.queued() as f64);
            }
            _ = lag_tick.tick() => {
                let topic = shared.decided_topic.clone();
                if let Ok(Ok((_, high))) = tokio::task::spawn_blocking({
                    let c = consumer.clone();
                    move || c.fetch_watermarks(&topic, partition, Duration::from_secs(2))
                }).await {
                    metrics::gauge!("ricochet_webhook_lag_events", "webhook_id" => webhook_id.to_owned(), "run" => label)
                        .set((high - lanes.committable()).max(0) as f64);
                }
            }
        }
    }
    // Stopping: let the requests in flight finish (within the grace), so
    // what they delivered is not sent again, then commit.
    let grace = tokio::time::sleep(shared.shutdown_grace);
    tokio::pin!(grace);
    while !in_flight.is_empty() {
        tokio::select! {
            Some(sent) = in_flight.next() => {
                handle(shared, webhook_id, replay, &mut lanes, &mut attempts, &mut retry_at, &mut health, sent).await?;
            }
            () = &mut grace => break,
        }
    }
    let position = lanes.committable();
    if position > committed {
        let (c, topic) = (consumer.clone(), shared.decided_topic.clone());
        blocking(c, move |c| Ok(commit(c, &topic, partition, position, CommitMode::Sync)?)).await?;
    }
    for gauge in ["ricochet_webhook_retries_pending", "ricochet_webhook_queued_events", "ricochet_webhook_lag_events"] {
        metrics::gauge!(gauge, "webhook_id" => webhook_id.to_owned(), "run" => label).set(0.0);
    }
    tracing::info!(webhook_id, position, "webhook run stopped");
    Ok(outcome.unwrap_or(false))
}

/// Whether the endpoint takes `e`: its client, its campaign if it names one,
/// a type it subscribed to, and for a replay, inside the range.
fn wanted(w: &WebhookRecord, replay: Option<&Replay>, e: &DecidedEvent) -> bool {
    e.client_id == w.client_id.as_str()
        && w.campaign_id.as_ref().is_none_or(|c| c.as_str() == e.campaign_id)
        && w.events.iter().any(|t| *t == crate::payload::event_type(e))
        && replay.is_none_or(|r| (r.from_ms..r.to_ms).contains(&e.occurred_at_ms))
}

/// One recipient's events share a lane; an event without a recipient goes
/// by its own id.
fn recipient_key(e: &DecidedEvent) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.recipient_id.as_deref().unwrap_or(&e.event_id).hash(&mut h);
    h.finish()
}

async fn send(shared: &Shared, w: Arc<WebhookRecord>, lane: usize, batch: Vec<DecidedEvent>) -> Sent {
    let message_id = crate::payload::message_id(&batch);
    let body = crate::payload::body(&batch, w.batch_size > 1);
    let now = chrono::Utc::now().timestamp_millis();
    let mut secrets = Vec::with_capacity(2);
    if let Ok(s) = WebhookSecret::parse(&w.secret) {
        secrets.push(s);
    }
    if let Some((previous, until)) = &w.previous_secret {
        if *until > now {
            if let Ok(s) = WebhookSecret::parse(previous) {
                secrets.push(s);
            }
        }
    }
    let refs: Vec<&WebhookSecret> = secrets.iter().collect();
    let attempt = shared.sender.send(&w.url, &refs, &message_id, body).await;
    Sent { lane, message_id, events: batch.len() as u32, attempt }
}

/// Applies one attempt's result; `Some(reason)` if the endpoint is now disabled.
#[allow(clippy::too_many_arguments)]
async fn handle(
    shared: &Shared,
    webhook_id: &str,
    replay: Option<&Replay>,
    lanes: &mut Lanes<DecidedEvent>,
    attempts: &mut [Attempts],
    retry_at: &mut [Option<Instant>],
    health: &mut Health,
    sent: Sent,
) -> Result<Option<&'static str>, RunError> {
    let Sent { lane, message_id, events, attempt } = sent;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let answer = attempt.answer;
    let attempt_number = attempts[lane].failed + 1;
    let next = shared.retry.after(&mut attempts[lane], answer, now_ms, rand::random::<f64>());
    let outcome = match next {
        Next::Done => "delivered",
        Next::Disable => "gone",
        Next::Dropped => "dropped",
        Next::RetryAt(_) if attempt.refused => "refused",
        Next::RetryAt(_) => "failed",
    };
    metrics::counter!("ricochet_webhook_deliveries_total", "outcome" => outcome).increment(1);
    if outcome == "delivered" {
        metrics::counter!("ricochet_webhook_events_delivered_total").increment(events.into());
    }
    if let Some(w) = shared.endpoints.get(webhook_id) {
        shared.log.record(DeliveryRow {
            client_id: w.client_id.to_string(),
            webhook_id: webhook_id.to_owned(),
            message_id,
            attempted_at: (now_ms / 1000) as u32,
            attempted_at_ms: now_ms,
            attempt: attempt_number,
            events,
            replay: u8::from(replay.is_some()),
            outcome,
            status: attempt.status.unwrap_or(0),
            latency_ms: attempt.latency.as_millis().min(u128::from(u32::MAX)) as u32,
            error: attempt.error,
        });
    }
    if answer == Answer::Delivered {
        // The receiver is up: lanes waiting out a backoff try again now
        // (keeping their count of failures, so their day still runs out),
        // rather than each sleeping out its own wait after an outage.
        retry_at.iter_mut().for_each(|at| *at = None);
    }
    match next {
        Next::Done | Next::Dropped => {
            lanes.finish(lane);
            attempts[lane] = Attempts::default();
            retry_at[lane] = None;
        }
        Next::RetryAt(at_ms) => {
            lanes.release(lane);
            retry_at[lane] = Some(Instant::now() + Duration::from_millis((at_ms - now_ms).max(0) as u64));
        }
        Next::Disable => lanes.release(lane),
    }
    if replay.is_some() {
        // A replay leaves the endpoint's health to its live run; a 410 ends it.
        return Ok((next == Next::Disable).then_some("gone"));
    }
    let was_failing = health.failing_since_ms;
    let disable = health.record(answer, now_ms, &shared.retry);
    let reason = match (disable, answer) {
        (true, Answer::Gone) => Some("gone"),
        (true, _) => Some("failing"),
        _ => None,
    };
    if reason.is_some() || was_failing.is_some() != health.failing_since_ms.is_some() {
        if let Some(current) = shared.endpoints.get(webhook_id) {
            let mut record = (*current).clone();
            record.failing_since_ms = health.failing_since_ms;
            if let Some(reason) = reason {
                record.disabled = Some((now_ms, reason.to_owned()));
            }
            shared.writer.put(record, &shared.endpoints).await?;
        }
    }
    Ok(reason)
}

fn commit(c: &StreamConsumer, topic: &str, partition: i32, offset: i64, mode: CommitMode) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    c.commit(&tpl, mode)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs a blocking consumer call off the async threads.
async fn blocking<T: Send + 'static>(
    consumer: Arc<StreamConsumer>,
    f: impl FnOnce(&StreamConsumer) -> Result<T, RunError> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(move || f(&consumer)).await.expect("a consumer call panicked")
}
