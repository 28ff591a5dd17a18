//! The API's contract, checked from outside: schemathesis (installed from PyPI
//! by `infra/test.sh`) reads `GET /v1/openapi.json` from a real `ricochet-api`
//! (real ClickHouse and broker, an aggregator and an edge beside it) and sends
//! generated requests, valid and invalid, with every check on. Any failure,
//! e.g. an undocumented status, a body off its schema, a valid value refused
//! or an invalid one taken, fails this test. The servers stop when the test
//! ends, pass or fail (they are owned by `Servers` and `Service`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ricochet_tests::servers::Servers;
use ricochet_tests::{client, repo_root, services};

/// Examples per operation and phase: enough to reach every parameter, bounded
/// so the run stays within a few minutes on a loaded 2-core machine.
const MAX_EXAMPLES: &str = "25";

/// Where `infra/test.sh` installs schemathesis; `RICOCHET_SCHEMATHESIS` overrides.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("RICOCHET_SCHEMATHESIS") {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("ricochet/venv/bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_failure_with_every_check() {
    let st = schemathesis();
    assert!(st.exists(), "{} is missing: infra/test.sh installs it (pinned, from PyPI)", st.display());
    let servers = Servers::start().await;
    let env =
        [("RICOCHET_TOKEN_KEYS", "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f".to_owned())];
    let _aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api = services::api(&servers, "api", &env).await;
    // Something to find: a client, a campaign and a link.
    client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    let _edge = services::redirect(&servers, "edge", &env).await;

    run_schemathesis(&st, &api.url(), Some(client::ADMIN_KEY), &servers);
}

/// The same run with no key at all, as anyone on the internet would send:
/// every operation that needs a key answers a documented 401 (or 429 once the
/// per-address bucket is spent), never a 5xx, and the public ones still keep
/// their contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_without_a_key_finds_no_contract_failure() {
    let st = schemathesis();
    assert!(st.exists(), "{} is missing: infra/test.sh installs it (pinned, from PyPI)", st.display());
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    // Every keyless request shares one bucket (this address's): widened here,
    // since 429 under a burst is hostile_input.rs's test and schemathesis
    // rightly wants the 401 a missing key deserves.
    let wide = [
        ("RICOCHET_API_RATE_LIMIT_PER_SEC", "100000".to_owned()),
        ("RICOCHET_API_RATE_LIMIT_BURST", "100000".to_owned()),
    ];
    let api = services::api(&servers, "api", &wide).await;
    client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    run_schemathesis(&st, &api.url(), None, &servers);
}

fn run_schemathesis(st: &std::path::Path, api: &str, key: Option<&str>, servers: &Servers) {
    let started = Instant::now();
    let mut cmd = Command::new(st);
    cmd.arg("--no-color")
        .arg("--config-file")
        .arg(repo_root().join("infra/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{api}/v1/openapi.json")])
        // One worker: with two, Hypothesis parses lambdas' source with `ast`
        // from two threads at once, and CPython 3.11's `ast` is not
        // thread-safe there (cpython#106905): a run on a clean CI clone
        // failed with "AST constructor recursion depth mismatch", an error
        // in the tool, not in the API.
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES, "--seed", "1", "--workers", "1"])
        .args(["--request-timeout", "30"])
        .current_dir(servers.path());
    if let Some(key) = key {
        cmd.args(["--header", &format!("Authorization: Bearer {key}")]);
    }
    let out = cmd.output().expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis took {:.0}s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "schemathesis reported failures (above); exit {:?}", out.status);
    assert!(started.elapsed() < Duration::from_secs(1200), "the contract run should stay short");
}
