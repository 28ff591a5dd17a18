//! Retention on ClickHouse 18.16 (no TTL): one pass of the job drops the raw
//! months wholly past the limit and deletes expired rollup and recipient rows,
//! grain by grain, and never touches a position or anything recent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ricochet_aggregator::retention::{self, RetentionPolicy, ServerVersion};
use ricochet_tests::eventually;
use ricochet_tests::servers::ClickHouse;
use ricochet_warehouse::migrations;

const DAY: i64 = 86_400;

#[tokio::test]
async fn the_job_expires_old_data_and_keeps_positions_and_recent_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await;
    let client = ch.warehouse_client();
    migrations::apply(&client, None, &[]).await.unwrap();
    let version = client.query("SELECT version()").fetch_one::<String>().await.unwrap();
    assert!(!ServerVersion::parse(&version).unwrap().has_ttl(), "this test is the job path: {version}");

    let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let t = now.timestamp();
    // Raw events: September (wholly past 30 days), and November (within).
    ch.query(&format!(
        "INSERT INTO click_events (event_id, event_time, client_id) VALUES \
         ('old', toDateTime({}), 'c'), ('new', toDateTime({}), 'c')",
        t - 75 * DAY,
        t - 3 * DAY
    ))
    .await
    .unwrap();
    // Rollups at every grain, 3 and 60 days old, plus a position row.
    let mut rows = vec!["(0, '', '', '', toDateTime(0), 'clicks', 4, 0, 1234)".to_owned()];
    for grain in [60, 900, 3600, 86_400] {
        for age in [3, 60] {
            let bucket = (t - age * DAY) / grain * grain;
            rows.push(format!("({grain}, 'c', 'k', 'l{age}', toDateTime({bucket}), '', 0, 1, 0)"));
        }
    }
    ch.query(&format!(
        "INSERT INTO click_rollups (grain, client_id, campaign_id, link_id, bucket_start, source_topic, \
         source_partition, clicks, position_delta) VALUES {}",
        rows.join(", ")
    ))
    .await
    .unwrap();
    ch.query(&format!(
        "INSERT INTO click_recipients (client_id, campaign_id, link_id, bucket_start, human, recipient_id) VALUES \
         ('c', 'k', 'l', toDateTime({}), 1, 'r-old'), ('c', 'k', 'l', toDateTime({}), 1, 'r-new')",
        t - 60 * DAY,
        t - 3 * DAY
    ))
    .await
    .unwrap();

    let policy =
        RetentionPolicy { raw_days: 30, fine_rollup_days: 7, rollup_days: 45, interval: Duration::from_secs(3600) };
    let pass = retention::run_once(&client, &policy, now).await.unwrap();
    assert_eq!(pass.months_dropped, vec!["202609".to_owned()]);
    assert_eq!(pass.deletes.len(), 3, "{pass:?}");
    eventually("the delete mutations", Duration::from_secs(60), || async {
        (ch.number("SELECT count() FROM system.mutations WHERE is_done = 0").await == 0).then_some(())
    })
    .await;

    assert_eq!(ch.query("SELECT event_id FROM click_events FORMAT TSV").await.unwrap(), "new\n");
    let kept = ch
        .query("SELECT grain, link_id FROM click_rollups WHERE grain != 0 ORDER BY grain, link_id FORMAT TSV")
        .await
        .unwrap();
    assert_eq!(kept, "60\tl3\n900\tl3\n3600\tl3\n86400\tl3\n", "only the 3-day-old rows are left at every grain");
    assert_eq!(
        ch.number("SELECT sum(position_delta) FROM click_rollups WHERE grain = 0 AND source_partition = 4").await,
        1234,
        "the position is untouched"
    );
    assert_eq!(ch.query("SELECT recipient_id FROM click_recipients FORMAT TSV").await.unwrap(), "r-new\n");

    // A second pass finds nothing left to do: no mutation per pass when nothing expired.
    assert_eq!(retention::run_once(&client, &policy, now).await.unwrap(), retention::Pass::default());
}

/// The deliveries log keeps its last days: a day wholly past the limit goes
/// (its partition dropped), the days within it stay, and a second pass finds
/// nothing more to drop.
#[tokio::test]
async fn the_webhook_deliveries_log_drops_the_days_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await;
    let client = ch.warehouse_client();
    migrations::apply(&client, None, &[]).await.unwrap();
    let t = Utc::now().timestamp();
    let ages = [40, 31, 29, 10, 0];
    let rows: Vec<String> =
        ages.iter().map(|age| format!("('c', 'w', 'msg-{age}', toDateTime({}), 'delivered')", t - age * DAY)).collect();
    ch.query(&format!(
        "INSERT INTO webhook_deliveries (client_id, webhook_id, message_id, attempted_at, outcome) VALUES {}",
        rows.join(", ")
    ))
    .await
    .unwrap();

    let dropped = ricochet_webhooks::log::expire_once(&client, 30).await.unwrap();
    assert_eq!(dropped.len(), 2, "the days 40 and 31 days back: {dropped:?}");
    let left: Vec<String> =
        client.query("SELECT message_id FROM webhook_deliveries ORDER BY message_id").fetch_all().await.unwrap();
    assert_eq!(left, vec!["msg-0", "msg-10", "msg-29"]);
    assert!(ricochet_webhooks::log::expire_once(&client, 30).await.unwrap().is_empty(), "nothing more to drop");

    // A table partitioned by month (the first version of migration 0011):
    // its partitions (YYYYMM) are not days, and none is dropped, not even
    // the current month's.
    ch.query("DROP TABLE webhook_deliveries").await.unwrap();
    ch.query(
        "CREATE TABLE webhook_deliveries (client_id String, webhook_id String, message_id String,          attempted_at DateTime, outcome String) ENGINE = MergeTree() PARTITION BY toYYYYMM(attempted_at)          ORDER BY (client_id, webhook_id)",
    )
    .await
    .unwrap();
    ch.query(&format!(
        "INSERT INTO webhook_deliveries (client_id, message_id, attempted_at) VALUES ('c', 'now', toDateTime({t})),          ('c', 'old', toDateTime({}))",
        t - 75 * DAY
    ))
    .await
    .unwrap();
    assert!(ricochet_webhooks::log::expire_once(&client, 30).await.unwrap().is_empty(), "months are not days");
    let left: Vec<String> =
        client.query("SELECT message_id FROM webhook_deliveries ORDER BY message_id").fetch_all().await.unwrap();
    assert_eq!(left, vec!["now", "old"]);
}
