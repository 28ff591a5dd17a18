//! The example queries in `docs/data-model.md` run against the real schema on
//! the real server, so the documentation cannot drift from the tables.

use ricochet_tests::servers::Servers;
use ricochet_tests::{repo_root, services};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_query_runs() {
    let servers = Servers::start().await;
    // The aggregator applies the migrations at start.
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let doc = std::fs::read_to_string(repo_root().join("docs/data-model.md")).unwrap();
    let queries: Vec<&str> = doc.split("```sql\n").skip(1).map(|block| block.split("```").next().unwrap()).collect();
    assert!(queries.len() >= 6, "the data model documents its example queries");
    for q in queries {
        if let Err(e) = servers.clickhouse.query(q).await {
            panic!("documented query fails:\n{q}\n{e}");
        }
    }
}
