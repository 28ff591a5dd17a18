//! The fence of `infra/migrations/0007_fenced_rollups.sql` (and of its
//! copies in 0010 and for `click_breakdowns` in 0012 and 0013), as SQL, on both servers the product supports:
//! ClickHouse 18.16 (a real server) and a current one (chDB 26.x in the test
//! venv). The same inserts go to `click_counts_in` on each, each flush with a
//! breakdown row per link, and `click_rollups` must hold exactly the rows
//! written under each partition's current token: the newest owner row of the
//! highest generation. (Found this way: on 26.x an `ANY INNER JOIN` version of
//! the view also dropped every row but one per token, because `ANY` there
//! deduplicates the left side too.)

use ricochet_tests::repo_root;
use ricochet_tests::servers::ClickHouse;

const COLUMNS: &str =
    "grain, client_id, link_id, source_topic, source_partition, dimension, value, clicks, position_delta, \
     fence_partition, fence_token";
/// The breakdown insert's (0013's compact rows): no `source_partition`, the
/// view takes a position row's from its fence.
const BREAKDOWN_COLUMNS: &str = "grain, client_id, link_id, source_topic, dimension_code, value, human_click_count, \
     position_delta, fence_partition, fence_token";

/// Owner rows and writes, in order; what lands is checked below.
fn statements() -> Vec<String> {
    let owner = |partition: i32, generation: i32, at: u64, token: u64| {
        format!("INSERT INTO click_owners VALUES ('clicks', {partition}, {generation}, {at}, {token})")
    };
    // One flush: a count row and a breakdown row per link, and the position
    // row, under `token`.
    let flush = |partition: i32, token: u64, links: &[(&str, u64)], delta: i64| {
        let mut rows: Vec<String> = links
            .iter()
            .flat_map(|(link, clicks)| {
                [
                    format!("(60, 'c', '{link}', '', 0, '', '', {clicks}, 0, {partition}, {token})"),
                    format!("(3600, 'c', '{link}', '', 0, 'country', 'DE', {clicks}, 0, {partition}, {token})"),
                ]
            })
            .collect();
        rows.push(format!("(0, '', '', 'clicks', {partition}, '', '', 0, {delta}, {partition}, {token})"));
        let counts = format!("INSERT INTO click_counts_in ({COLUMNS}) VALUES {}", rows.join(", "));
        // The same flush's breakdown insert (0013), before the rollups'.
        let mut rows: Vec<String> = links
            .iter()
            .map(|(link, clicks)| {
                format!("(3600, 'c', '{link}', '', 'country', 'DE', {clicks}, 0, {partition}, {token})")
            })
            .collect();
        rows.push(format!("(0, '', '', 'clicks', '', '', 0, {delta}, {partition}, {token})"));
        let breakdowns =
            format!("INSERT INTO click_breakdowns_compact_in ({BREAKDOWN_COLUMNS}) VALUES {}", rows.join(", "));
        [breakdowns, counts]
    };
    let statements = vec![
        vec![owner(0, 5, 1_000, 111)],
        flush(0, 111, &[("l1", 1)], 7).to_vec(),
        // Another member acquires partition 0 in the same generation, later.
        vec![owner(0, 5, 2_000, 222)],
        flush(0, 111, &[("l1", 100)], 100).to_vec(),
        // The holder's flush of two links: both rows land, not one per token.
        flush(0, 222, &[("l1", 5), ("l2", 2)], 3).to_vec(),
        // A member of an older generation acquires later: it does not win.
        vec![owner(0, 4, 9_000, 333)],
        flush(0, 333, &[("l1", 1_000)], 1_000).to_vec(),
        // No owner row at all for partition 1.
        flush(1, 444, &[("l9", 10_000)], 10_000).to_vec(),
        // Partition 2's owner: its positions are its own, not partition 0's.
        vec![owner(2, 1, 1_000, 555)],
        flush(2, 555, &[("l3", 4)], 6).to_vec(),
    ];
    statements.into_iter().flatten().collect()
}

const RESULT: &str = "SELECT t, grain, source_partition, sum(clicks), sum(position_delta) FROM \
                      (SELECT 'b' AS t, grain, source_partition, clicks, position_delta FROM click_breakdowns \
                       UNION ALL SELECT 'r' AS t, grain, source_partition, clicks, position_delta FROM click_rollups) \
                      GROUP BY t, grain, source_partition ORDER BY t, grain, source_partition FORMAT TSV";

/// Count rows (grain 60, partition 0 on count rows) 1 + 5 + 2 + 4, and the
/// same in the breakdown rows (grain 3600) of both tables; positions 7 + 3
/// for partition 0 and 6 for partition 2 in each.
const EXPECTED: &str = "b\t0\t0\t0\t10\nb\t0\t2\t0\t6\nb\t3600\t0\t12\t0\n\
                        r\t0\t0\t0\t10\nr\t0\t2\t0\t6\nr\t60\t0\t12\t0\nr\t3600\t0\t12\t0\n";

#[tokio::test]
async fn the_fence_passes_only_the_current_token_on_clickhouse_18_16() {
    let dir = tempfile::tempdir().unwrap();
    let ch = ClickHouse::start(dir.path()).await;
    ricochet_warehouse::migrations::apply(&ch.warehouse_client(), None, &[]).await.unwrap();
    for s in statements() {
        ch.query(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    assert_eq!(ch.query(RESULT).await.unwrap(), EXPECTED);
}

#[test]
fn the_fence_passes_only_the_current_token_on_current_clickhouse() {
    let python = ricochet_tests::test_python();
    // The rollups and the fences (0006's data migration needs the runner's
    // checks; 0010's changes to the raw events need their tables).
    let migrations: Vec<String> = ricochet_warehouse::migrations::MIGRATIONS
        .iter()
        .filter(|(version, _)| {
            [
                "0005_click_rollups",
                "0007_fenced_rollups",
                "0010_breakdowns",
                "0012_click_breakdowns",
                "0013_compact_breakdown_input",
            ]
            .contains(version)
        })
        .flat_map(|(_, sql)| ricochet_warehouse::migrations::statements(sql))
        .filter(|s| !s.contains("ALTER TABLE click_events") && !s.contains("ALTER TABLE click_recipients"))
        .collect();
    let script = r#"
import json, sys
from chdb import session
spec = json.load(open(sys.argv[1]))
s = session.Session()
s.query("CREATE DATABASE IF NOT EXISTS fence")
s.query("USE fence")
for sql in spec["migrations"] + spec["statements"]:
    s.query(sql)
sys.stdout.write(s.query(spec["result"]).bytes().decode())
"#;
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({"migrations": migrations, "statements": statements(), "result": RESULT});
    std::fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
    std::fs::write(dir.path().join("fence.py"), script).unwrap();
    let out = std::process::Command::new(python)
        .arg(dir.path().join("fence.py"))
        .arg(dir.path().join("spec.json"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "chdb: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), EXPECTED);
}
