//! Erasing a recipient: applying the requests that `ricochet-api` records in
//! `erasure_requests` (`DELETE /v1/clients/{client_id}/recipients/{recipient_id}`).
//!
//! What is erased: the recipient's raw events (`click_events`) and recipient
//! rows (`click_recipients`). Rollup counts stay: they hold no recipient.
//!
//! **Why an erasure sticks.** Kafka, an edge's spool and a member that wakes
//! up late can all bring the recipient's events back after the deletes ran.
//! So the aggregator never inserts into those two tables: it inserts into
//! `click_events_in` and `click_recipients_in`, Null tables whose
//! materialized views pass a row on only if `(client_id, recipient_id)` is
//! not in the shard's `recipient_erasures` (migration 0008). The view reads
//! that table when the insert runs, inside ClickHouse, so the check cannot
//! go stale in a member's memory. For each shard, [`ClickHouseSink::erase`]:
//!
//! 1. writes the erasure rows (`applied = 0`, with quorum on a cluster):
//!    every insert that *starts* after this meets them and stores nothing of
//!    the recipient;
//! 2. waits out every insert into this database that was running at that
//!    moment (their query ids carry the database; one stuck past the insert
//!    timeout is killed, and its writer retries, meeting the rows): after this,
//!    no insert that could have missed the rows is still running;
//! 3. deletes the recipient's rows from both tables (`ALTER … DELETE`, a
//!    mutation: every part written before it, hence every row that got past
//!    the filter, is rewritten without them);
//! 4. waits the insert timeout and deletes again whatever of the recipient is
//!    there: an aggregator that writes this shard through *another replica*
//!    had its inserts running there, where step 2 cannot see them, and one
//!    that began before the erasure rows reached that replica can land after
//!    step 3. After the insert timeout each such insert has ended or been given
//!    up by its writer, and its part has replicated here. (A partition's
//!    writes all go to one shard, but members may name different replicas of it.)
//! 5. writes `applied = 1` rows, which take the request off the queue.
//!
//! A failure anywhere leaves the request pending and the whole sequence runs
//! again at the next pass; every step is idempotent. Every member runs the
//! job, so two may apply the same request at once: the rows collapse and the
//! second delete finds nothing.
//!
//! The mutations finish in the background, in seconds on a small table and
//! longer on a large one; `system.mutations` shows them.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::sink::{ClickHouseSink, WriteError};

/// Requests taken per shard per pass: one mutation per table covers them all.
pub const BATCH: usize = 500;

/// One pass over every shard. Returns how many requests it applied.
pub async fn run_once(sink: &ClickHouseSink) -> Result<usize, WriteError> {
    let mut applied = 0;
    for shard in 0..sink.num_shards() {
        let pending = sink.pending_erasures(shard, BATCH).await?;
        if pending.is_empty() {
            continue;
        }
        tracing::info!(shard, recipients = pending.len(), "erasing recipients");
        sink.erase(shard, &pending).await?;
        applied += pending.len();
    }
    Ok(applied)
}

/// Applies pending erasures every `interval` until shutdown; 0 turns it off.
pub async fn run(sink: ClickHouseSink, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    loop {
        match run_once(&sink).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("ricochet_aggregator_erasures_applied_total").increment(n as u64);
                tracing::info!(recipients = n, "erasures applied");
            }
            Err(e) => {
                metrics::counter!("ricochet_aggregator_erasure_failures_total").increment(1);
                tracing::warn!(error = %e, "erasure pass failed; retried at the next pass");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
