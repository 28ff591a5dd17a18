//! Which deliverer delivers. Several may run, for availability; exactly one
//! is active at a time, the others follow the endpoints and stand by.
//!
//! How: each deliverer joins the consumer group `{prefix}.active` on the
//! webhooks topic, which has one partition, and Kafka assigns that partition
//! to exactly one member of the group. The member holding it is active and
//! runs every endpoint; the others run none. When the active deliverer dies
//! or hangs, its group session ends (`session.timeout.ms`,
//! [`SESSION_TIMEOUT_MS`]) and Kafka hands the partition to a standby, which
//! starts each endpoint's run from the position the old one last committed:
//! what was queued or in flight there is sent again (at least once, with the
//! same `webhook-id`, so receivers can drop the repeat).
//!
//! Why not split the endpoints among the deliverers: each endpoint's run
//! reads a single partition of `decided` by manual assignment, which no group
//! arbitrates, so two deliverers running one endpoint would both send every
//! event. One active member keeps that impossible in steady state; a standby
//! that is running already takes over within the session timeout.
//!
//! The member never uses what it reads from the topic (the endpoints'
//! [`crate::endpoints::Follower`] reads it in full, apart): the group is only
//! the election.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use ricochet_registry::KafkaConnection;
use tokio::sync::watch;

/// How long a deliverer that stopped answering the group stays active: the
/// longest a dead active deliverer delays deliveries before a standby takes
/// over (librdkafka's default is 45 s).
pub const SESSION_TIMEOUT_MS: u32 = 10_000;

/// Whether this deliverer is the active one, as the group says.
pub struct Election {
    active: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Election {
    /// Joins the group `group` on `topic` (one partition) from a thread of
    /// its own; [`Self::active`] follows the assignment.
    pub fn start(kafka: &KafkaConnection, topic: &str, group: &str) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = kafka.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
            .set("heartbeat.interval.ms", (SESSION_TIMEOUT_MS / 5).to_string())
            // A deliverer joining or leaving as a standby leaves the active
            // one active: sticky, and without revoking it meanwhile.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Nothing read here is used: fetch as little as possible.
            .set("queued.max.messages.kbytes", "64");
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[topic])?;
        let (tx, active) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("webhooks-elect".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    // Serves the group's heartbeats and rebalances; messages are dropped.
                    let _ = consumer.poll(Duration::from_millis(200));
                    let holds = consumer.assignment().is_ok_and(|a| a.count() > 0);
                    tx.send_if_modified(|was| {
                        let changed = *was != holds;
                        if changed {
                            tracing::info!(
                                active = holds,
                                "webhook deliverer {}",
                                if holds { "is now the active one" } else { "stands by" }
                            );
                            metrics::gauge!("ricochet_webhooks_active").set(f64::from(u8::from(holds)));
                        }
                        *was = holds;
                        changed
                    });
                }
                // Leaving the group hands the partition over at once rather
                // than after the session timeout.
                consumer.unsubscribe();
            })
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
        Ok(Election { active, stop, thread: Some(thread) })
    }

    /// `true` while this deliverer is the active one.
    pub fn active(&self) -> watch::Receiver<bool> {
        self.active.clone()
    }

    /// Leaves the group (a standby takes over at once).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
