//! When a failed delivery is tried again, and when an endpoint is given up
//! on: the deliverer's state changes, pure (no clock, no randomness of its
//! own, no I/O), so that a property test can drive them through any
//! sequence of answers.
//!
//! - **Retries.** A delivery that fails is tried again after an exponential
//!   backoff (5 s, 10 s, 20 s, … capped at an hour), each wait stretched by
//!   up to a fifth at random so that the deliveries a dead endpoint held do
//!   not all come back at the same instant. It keeps being retried until 24
//!   hours after its first failure (Standard Webhooks' and Svix's schedules
//!   run about as long), then it is dropped and counted.
//! - **Endpoints.** A 2xx is success. `410 Gone` means the receiver wants no
//!   more: the endpoint is disabled at once. An endpoint whose every delivery
//!   has failed for 24 hours is disabled too, and flagged in the API, so a
//!   dead receiver stops costing retries.

use std::time::Duration;

/// What a receiver answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Delivered,
    /// `410 Gone`.
    Gone,
    /// Any other status, a timeout, a refused connection or a refused target.
    Failed,
}

impl Answer {
    /// The answer an HTTP status means.
    pub fn of_status(status: u16) -> Answer {
        match status {
            200..=299 => Answer::Delivered,
            410 => Answer::Gone,
            _ => Answer::Failed,
        }
    }
}

/// How long and how often failed deliveries are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The first wait.
    pub first: Duration,
    /// The longest wait between two attempts (before jitter).
    pub max: Duration,
    /// How long after its first failure a delivery is still retried, and
    /// how long an endpoint may fail throughout before it is disabled.
    pub give_up_after: Duration,
    /// Each wait is stretched by up to this share, at random.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            jitter: 0.2,
        }
    }
}

/// What becomes of one delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered: nothing more to do.
    Done,
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Retried for `give_up_after` without success: dropped, and counted.
    Dropped,
    /// The receiver answered `410 Gone`: disable its endpoint.
    Disable,
}

/// One delivery's attempts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// How many attempts failed.
    pub failed: u32,
    /// When the first of them failed (ms).
    pub first_failure_ms: Option<i64>,
}

impl RetryPolicy {
    /// The wait before attempt `failed + 1`, before jitter.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// What follows an attempt that got `answer` at `now_ms`; `random` is a
    /// number in `[0, 1)` for the jitter. `attempts` is updated.
    pub fn after(&self, attempts: &mut Attempts, answer: Answer, now_ms: i64, random: f64) -> Next {
        match answer {
            Answer::Delivered => Next::Done,
            Answer::Gone => Next::Disable,
            Answer::Failed => {
                attempts.failed += 1;
                let first = *attempts.first_failure_ms.get_or_insert(now_ms);
                let deadline = first + self.give_up_after.as_millis() as i64;
                if now_ms >= deadline {
                    return Next::Dropped;
                }
                let wait = self.backoff(attempts.failed).as_millis() as f64;
                let stretched = wait * (1.0 + self.jitter * random.clamp(0.0, 1.0));
                // The last retry lands on the deadline rather than past it.
                Next::RetryAt((now_ms + stretched as i64).min(deadline))
            }
        }
    }
}

/// An endpoint's health: whether it has been failing, since when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The first failure since its last success (ms); `None`: healthy.
    pub failing_since_ms: Option<i64>,
}

impl Health {
    /// Records an answer; `true` when the endpoint must now be disabled
    /// (`410 Gone`, or failing throughout `policy.give_up_after`).
    pub fn record(&mut self, answer: Answer, now_ms: i64, policy: &RetryPolicy) -> bool {
        match answer {
            Answer::Delivered => {
                self.failing_since_ms = None;
                false
            }
            Answer::Gone => true,
            Answer::Failed => {
                let since = *self.failing_since_ms.get_or_insert(now_ms);
                now_ms - since >= policy.give_up_after.as_millis() as i64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 24 * HOUR_MS;

    #[test]
    fn the_backoff_doubles_from_five_seconds_to_an_hour() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=12).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn statuses_mean_what_the_issue_says() {
        assert_eq!(Answer::of_status(200), Answer::Delivered);
        assert_eq!(Answer::of_status(204), Answer::Delivered);
        assert_eq!(Answer::of_status(410), Answer::Gone);
        for s in [301, 400, 404, 429, 500, 503] {
            assert_eq!(Answer::of_status(s), Answer::Failed, "{s}");
        }
    }

    #[test]
    fn gone_disables_the_endpoint_at_once() {
        let p = RetryPolicy::default();
        assert_eq!(p.after(&mut Attempts::default(), Answer::Gone, 0, 0.5), Next::Disable);
        assert!(Health::default().record(Answer::Gone, 0, &p));
    }

    #[test]
    fn an_endpoint_failing_for_a_day_is_disabled_and_a_success_resets_it() {
        let p = RetryPolicy::default();
        let mut h = Health::default();
        assert!(!h.record(Answer::Failed, 0, &p));
        assert!(!h.record(Answer::Failed, DAY_MS - 1, &p));
        assert!(!h.record(Answer::Delivered, DAY_MS - 1, &p));
        assert!(!h.record(Answer::Failed, DAY_MS, &p), "the clock restarts after a success");
        assert!(h.record(Answer::Failed, 2 * DAY_MS, &p));
    }

    proptest! {
        /// Whatever the failures' timing and the jitter: a failed delivery
        /// is retried later than now, no sooner than its backoff and no later
        /// than its backoff stretched by the jitter, never past 24 hours after
        /// its first failure, and dropped only once those 24 hours are over.
        #[test]
        fn a_failing_delivery_is_retried_for_a_day_then_dropped(
            randoms in proptest::collection::vec(0.0f64..1.0, 1..200),
            start in 0i64..1_000_000_000_000,
        ) {
            let p = RetryPolicy::default();
            let mut attempts = Attempts::default();
            let mut now = start;
            let mut dropped = false;
            for r in randoms {
                match p.after(&mut attempts, Answer::Failed, now, r) {
                    Next::RetryAt(at) => {
                        let wait = p.backoff(attempts.failed).as_millis() as i64;
                        let deadline = start + DAY_MS;
                        prop_assert!(at > now, "retry at {at}, now {now}");
                        prop_assert!(at <= deadline, "retry at {at} past the day");
                        prop_assert!(at == deadline || at >= now + wait, "retry at {at} before its backoff {wait}");
                        prop_assert!(at <= now + wait + wait / 5 + 1, "retry at {at}: more than the jitter");
                        now = at;
                    }
                    Next::Dropped => {
                        prop_assert!(now >= start + DAY_MS, "dropped at {now}, before a day from {start}");
                        dropped = true;
                        break;
                    }
                    other => prop_assert!(false, "a failure gave {other:?}"),
                }
            }
            // An hour-capped backoff reaches the day in at most 40 attempts.
            if attempts.failed > 40 {
                prop_assert!(dropped, "{} attempts and still retrying", attempts.failed);
            }
            prop_assert_eq!(attempts.first_failure_ms, Some(start));
        }

        /// A success at any point ends the delivery; and the endpoint is
        /// disabled exactly when it has failed throughout a day.
        #[test]
        fn health_follows_the_answers(
            steps in proptest::collection::vec((0i64..4 * HOUR_MS, 0u8..10), 1..300),
        ) {
            let p = RetryPolicy::default();
            let mut h = Health::default();
            let mut now = 0;
            let mut failing_since: Option<i64> = None;
            for (gap, kind) in steps {
                now += gap;
                let answer = if kind < 2 { Answer::Delivered } else { Answer::Failed };
                let disabled = h.record(answer, now, &p);
                if answer == Answer::Delivered {
                    failing_since = None;
                    prop_assert!(!disabled);
                    prop_assert_eq!(p.after(&mut Attempts::default(), answer, now, 0.3), Next::Done);
                } else {
                    let since = *failing_since.get_or_insert(now);
                    prop_assert_eq!(disabled, now - since >= DAY_MS);
                }
            }
        }
    }
}
