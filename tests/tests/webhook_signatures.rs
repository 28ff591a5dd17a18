//! Ricochet's webhook signatures are Standard Webhooks signatures: the
//! specification's own Python library (`standardwebhooks` from PyPI, in the
//! test venv that `infra/install.sh` makes) accepts every delivery signed
//! with `ricochet_webhooks::signing`, and refuses it once the body, the id,
//! the timestamp or the secret differ (issue 17, "the signatures verify with
//! a Standard Webhooks reference implementation").

use std::process::Command;

use rand::Rng;
use ricochet_webhooks::signing::{headers, WebhookSecret};
use serde_json::{json, Value};

/// Verifies each case with the reference library: `true` where it accepts.
const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
results = []
for case in json.load(open(sys.argv[1])):
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
        results.append(True)
    except Exception:
        results.append(False)
print(json.dumps(results))
"#;

#[test]
fn the_reference_library_accepts_ricochets_signatures_and_only_them() {
    let mut rng = rand::rng();
    let now = chrono::Utc::now().timestamp();
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for i in 0..40 {
        let secret = WebhookSecret::generate();
        let id = format!("msg_{:032x}", rng.random::<u128>());
        // A delivery as the deliverer sends it: JSON, non-ASCII included.
        let body = json!({
            "type": "click.human",
            "timestamp": now,
            "data": {"event_id": format!("{:x}", rng.random::<u64>()), "campaign_id": format!("bf-{i}"),
                     "country": "DE", "reason": "human", "link_id": "Überweisung ✓"}
        })
        .to_string();
        let signed = |secrets: &[&WebhookSecret], id: &str, ts: i64, body: &str| {
            let h: serde_json::Map<String, Value> = headers(secrets, id, ts, body.as_bytes())
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect();
            Value::Object(h)
        };
        let shown = secret.to_shown();
        // As signed: accepted; with a second (rotated) signature beside it too.
        cases.push(json!({"secret": shown, "body": body, "headers": signed(&[&secret], &id, now, &body)}));
        expected.push(true);
        let other = WebhookSecret::generate();
        cases.push(json!({"secret": shown, "body": body, "headers": signed(&[&other, &secret], &id, now, &body)}));
        expected.push(true);
        // Anything changed: refused.
        let tampered = body.replace("click.human", "click.bot");
        cases.push(json!({"secret": shown, "body": tampered, "headers": signed(&[&secret], &id, now, &body)}));
        expected.push(false);
        let mut h = signed(&[&secret], &id, now, &body);
        h["webhook-id"] = Value::String(format!("{id}0"));
        cases.push(json!({"secret": shown, "body": body, "headers": h}));
        expected.push(false);
        let mut h = signed(&[&secret], &id, now, &body);
        h["webhook-timestamp"] = Value::String((now + 1).to_string());
        cases.push(json!({"secret": shown, "body": body, "headers": h}));
        expected.push(false);
        cases.push(json!({"secret": other.to_shown(), "body": body, "headers": signed(&[&secret], &id, now, &body)}));
        expected.push(false);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = Command::new(ricochet_tests::test_python())
        .args(["-c", VERIFY])
        .arg(&path)
        .output()
        .expect("the test venv's python (infra/install.sh)");
    assert!(out.status.success(), "the reference library: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), expected.len());
    let wrong: Vec<String> = results
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (got, want))| got != want)
        .map(|(i, (got, _))| format!("case {i} ({}): {}", i % 6, if *got { "accepted" } else { "refused" }))
        .collect();
    assert!(wrong.is_empty(), "{} of {} cases judged wrong:\n{}", wrong.len(), results.len(), wrong.join("\n"));
}
