//! Retention: how long raw events, fine rollups (minute and 15-minute grains),
//! coarse rollups (hour and day) and recipients are kept, and the two ways of
//! enforcing it, chosen by the server's version:
//!
//! - **TTL** (ClickHouse ≥ [`TTL_SINCE`]): one `ALTER TABLE … MODIFY TTL` per
//!   table at start; the server deletes expired rows when it merges parts.
//!   Position rows (`grain = 0`) never expire.
//! - **A job** (18.16 has no TTL): every [`RetentionPolicy::interval`], drop the
//!   raw-event months that lie wholly past the limit (`click_events` is
//!   partitioned by month) and `ALTER TABLE … DELETE` expired rollup and
//!   recipient rows. `click_rollups` has no partition key on purpose (one
//!   insert must stay one part), so it cannot drop partitions; a mutation runs
//!   only when a count finds something to delete.
//!
//! A limit of 0 days keeps that data forever (the default: an upgrade never
//! deletes anything by itself). Raw events go a whole month at a time on the
//! job path, so they are kept between `raw_days` and `raw_days` + 31 days.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Months, NaiveDate, Utc};
use clickhouse::Client;
use tokio_util::sync::CancellationToken;

use crate::sql;
pub use crate::sql::{expired_rows, ttl_statements};

/// The first release with table TTL and `materialize_ttl_after_modify`,
/// rounded up to a long-term-support release to stay on tested ground.
pub const TTL_SINCE: ServerVersion = ServerVersion { major: 20, minor: 8 };

/// `SELECT version()`, reduced to what gates features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// `18.16.1` → 18.16; `None` for anything that is not `N.N…`.
    pub fn parse(version: &str) -> Option<Self> {
        let mut parts = version.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    pub fn has_ttl(self) -> bool {
        self >= TTL_SINCE
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Days each kind of data is kept; 0 keeps it forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub raw_days: u32,
    /// Minute and 15-minute rollups: what minute-granularity ranges and zones
    /// with half- or quarter-hour offsets read.
    pub fine_rollup_days: u32,
    /// Hour and day rollups, and recipients.
    pub rollup_days: u32,
    /// How often the job runs (servers without TTL).
    pub interval: Duration,
}

impl RetentionPolicy {
    pub fn keeps_everything(&self) -> bool {
        self.raw_days == 0 && self.fine_rollup_days == 0 && self.rollup_days == 0
    }
}

/// Whether the raw-event month `partition` (`toYYYYMM`, e.g. `202611`) lies
/// wholly before the limit at `now`.
pub fn month_expired(partition: &str, raw_days: u32, now: DateTime<Utc>) -> bool {
    let Ok(yyyymm) = partition.trim_matches('\'').parse::<u32>() else { return false };
    let Some(first) = NaiveDate::from_ymd_opt((yyyymm / 100) as i32, yyyymm % 100, 1) else { return false };
    let Some(next_month) = first.checked_add_months(Months::new(1)) else { return false };
    let end = next_month.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(i64::MAX);
    raw_days > 0 && end <= now.timestamp() - i64::from(raw_days) * 86_400
}

#[derive(Debug, thiserror::Error)]
#[error("retention: {0}")]
pub struct RetentionError(#[from] clickhouse::error::Error);

/// What one pass of the job removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub months_dropped: Vec<String>,
    /// Mutations started, as (table, condition).
    pub deletes: Vec<(&'static str, String)>,
}

/// One pass of the job (servers without TTL). Mutations are started, not
/// awaited (`mutations_sync` is newer than 18.16): `system.mutations` shows them.
pub async fn run_once(ch: &Client, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<Pass, RetentionError> {
    let mut pass = Pass::default();
    if policy.raw_days > 0 {
        let partitions: Vec<String> = ch.query(sql::ACTIVE_PARTITIONS).bind(sql::EVENTS_TABLE).fetch_all().await?;
        for p in partitions.into_iter().filter(|p| month_expired(p, policy.raw_days, now)) {
            // The partition id comes from the server and is checked to be digits.
            ch.query(&sql::drop_events_partition(p.trim_matches('\''))).execute().await?;
            pass.months_dropped.push(p);
        }
    }
    for (table, condition) in expired_rows(policy, now) {
        let n: u64 = ch.query(&sql::count_where(table, &condition)).fetch_one().await?;
        if n > 0 {
            ch.query(&sql::delete_where(table, &condition)).execute().await?;
            pass.deletes.push((table, condition));
        }
    }
    Ok(pass)
}

/// Enforces `policy` until shutdown: TTL once if the server has it, else the
/// job every `interval`. Errors are logged and retried at the next pass.
pub async fn run(ch: Client, version: ServerVersion, policy: RetentionPolicy, shutdown: CancellationToken) {
    if policy.keeps_everything() {
        return;
    }
    if version.has_ttl() {
        for statement in ttl_statements(&policy) {
            let done = ch.query(&statement).with_option("materialize_ttl_after_modify", "0").execute().await;
            match done {
                Ok(()) => tracing::info!(%statement, "retention ttl set"),
                Err(e) => tracing::error!(%statement, error = %e, "cannot set the retention ttl"),
            }
        }
        return;
    }
    tracing::info!(%version, ?policy, "no ttl on this server; running the retention job");
    loop {
        match run_once(&ch, &policy, Utc::now()).await {
            Ok(pass) if pass != Pass::default() => tracing::info!(?pass, "retention pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::NEVER;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn versions_gate_ttl() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion { major: 18, minor: 16 }));
        assert!(!ServerVersion::parse("18.16.1").unwrap().has_ttl());
        assert!(ServerVersion::parse("26.9.1.1").unwrap().has_ttl());
        assert!(ServerVersion::parse("20.8.3").unwrap().has_ttl());
        assert_eq!(ServerVersion::parse("nonsense"), None);
    }

    #[test]
    fn ttl_never_expires_positions_and_zero_days_keeps_forever() {
        let policy = RetentionPolicy { raw_days: 90, fine_rollup_days: 0, rollup_days: 400, ..Default::default() };
        let s = ttl_statements(&policy);
        assert_eq!(s[0], "ALTER TABLE click_events MODIFY TTL event_time + toIntervalDay(90)");
        assert_eq!(
            s[1],
            format!(
                "ALTER TABLE click_rollups MODIFY TTL multiIf(grain = 0, {NEVER}, grain IN (60, 900), {NEVER}, \
                 bucket_start + toIntervalDay(400))"
            )
        );
        assert!(s[2].ends_with("bucket_start + toIntervalDay(400)"));
        assert_eq!(
            s[3],
            format!(
                "ALTER TABLE click_breakdowns MODIFY TTL if(grain = 0, {NEVER}, bucket_start + toIntervalDay(400))"
            )
        );
        let forever = ttl_statements(&RetentionPolicy::default());
        assert_eq!(forever[0], format!("ALTER TABLE click_events MODIFY TTL greatest(event_time, {NEVER})"));
        assert!(forever[2].ends_with(&format!("greatest(bucket_start, {NEVER})")));
        assert!(forever[3].ends_with(&format!("greatest(bucket_start, {NEVER})")));
    }

    #[test]
    fn the_job_deletes_only_expired_grains_and_never_positions() {
        let now = at("2026-12-01T00:00:00Z");
        let policy = RetentionPolicy { raw_days: 30, fine_rollup_days: 7, rollup_days: 0, ..Default::default() };
        let rows = expired_rows(&policy, now);
        assert_eq!(rows.len(), 1, "coarse rollups and recipients are kept: {rows:?}");
        let cutoff = now.timestamp() - 7 * 86_400;
        assert_eq!(rows[0], ("click_rollups", format!("grain IN (60, 900) AND bucket_start < toDateTime({cutoff})")));
        assert!(expired_rows(&RetentionPolicy::default(), now).is_empty());
        let policy = RetentionPolicy { rollup_days: 400, ..Default::default() };
        let cutoff = now.timestamp() - 400 * 86_400;
        assert!(expired_rows(&policy, now)
            .contains(&("click_breakdowns", format!("grain != 0 AND bucket_start < toDateTime({cutoff})"))));
    }

    #[test]
    fn raw_months_go_once_wholly_past_the_limit() {
        let now = at("2026-12-01T00:00:00Z");
        // October ends 2026-11-01, 30 days before now: expired with 30 days, kept with 31.
        assert!(month_expired("202610", 30, now));
        assert!(!month_expired("202610", 31, now));
        assert!(!month_expired("202611", 1, now));
        assert!(!month_expired("202610", 0, now), "0 keeps forever");
        assert!(!month_expired("tuple()", 1, now));
    }
}
