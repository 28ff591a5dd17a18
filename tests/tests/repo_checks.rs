//! Checks on the repository itself; no servers.
//!
//! - `infra/compose.yaml` parses and is complete: every service, each with a
//!   health check, the edge's spool and snapshot on a volume, the servers' data on
//!   volumes, and only settings the service it is set on reads.
//! - The README's configuration table documents every environment variable the
//!   services read, and nothing else; the docs call a deprecated one deprecated.
//! - `infra/stack.sh` keeps its keys private: 0600 files in a 0700 folder, and no
//!   key on a command line.
//!
//! The services' settings come from their clap definitions, which are what
//! `ricochet-redirect --help`, `ricochet-aggregator --help`, `ricochet-api --help` and
//! `ricochet-webhooks --help` print, so nothing here parses Rust source.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

const SERVICES: [&str; 4] = ["ricochet-redirect", "ricochet-aggregator", "ricochet-api", "ricochet-webhooks"];

/// One environment variable a service reads.
#[derive(Debug)]
struct Setting {
    /// The services that read it.
    services: BTreeSet<&'static str>,
    /// Its `--help` text.
    help: String,
}

/// Every environment variable each service reads, as its clap command declares it.
fn settings() -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    for (service, command) in [
        ("ricochet-redirect", ricochet_redirect::RedirectConfig::command()),
        ("ricochet-aggregator", ricochet_aggregator::AggregatorConfig::command()),
        ("ricochet-api", ricochet_api::ApiConfig::command()),
        ("ricochet-webhooks", ricochet_webhooks::config::WebhooksConfig::command()),
    ] {
        collect(service, &command, &mut out);
    }
    assert!(out.len() > 20, "too few settings found: {:?}", out.keys());
    out
}

fn collect(service: &'static str, command: &clap::Command, out: &mut BTreeMap<String, Setting>) {
    for arg in command.get_arguments() {
        let Some(var) = arg.get_env() else { continue };
        let var = var.to_str().expect("variable names are UTF-8").to_owned();
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        let setting = out.entry(var).or_insert_with(|| Setting { services: BTreeSet::new(), help: String::new() });
        setting.services.insert(service);
        if setting.help.is_empty() {
            setting.help = help;
        }
    }
    for sub in command.get_subcommands() {
        collect(service, sub, out);
    }
}

fn compose() -> Value {
    let text = read("infra/compose.yaml");
    let mut doc: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("infra/compose.yaml does not parse: {e}"));
    doc.apply_merge().unwrap_or_else(|e| panic!("infra/compose.yaml: merge keys: {e}"));
    doc
}

fn services(doc: &Value) -> BTreeMap<String, &Value> {
    doc.get("services")
        .and_then(Value::as_mapping)
        .expect("compose.yaml has a `services` mapping")
        .iter()
        .map(|(name, service)| (name.as_str().expect("service names are strings").to_owned(), service))
        .collect()
}

/// A service's `environment`, in either of compose's two spellings.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().expect("variable names are strings").to_owned(), value)
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let item = item.as_str().expect("environment entries are strings");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Some(other) => panic!("environment is neither a mapping nor a list: {other:?}"),
    }
}

/// `(source, target)` of a service's volumes, short (`src:dst[:mode]`) or long syntax.
fn volumes(service: &Value) -> Vec<(String, String)> {
    let Some(list) = service.get("volumes").and_then(Value::as_sequence) else { return Vec::new() };
    list.iter()
        .map(|v| match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_else(|| panic!("volume {s:?} has no target")).to_owned();
                (source, target)
            }
            Value::Mapping(_) => (
                v.get("source").and_then(Value::as_str).unwrap_or_default().to_owned(),
                v.get("target").and_then(Value::as_str).expect("a long-syntax volume has a target").to_owned(),
            ),
            other => panic!("volume {other:?}"),
        })
        .collect()
}

/// The binary a compose service runs: the first word of its `command`.
fn binary(service: &Value) -> Option<String> {
    match service.get("command")? {
        Value::Sequence(words) => words.first()?.as_str().map(str::to_owned),
        Value::String(line) => line.split_whitespace().next().map(str::to_owned),
        _ => None,
    }
}

/// Whether a named volume (not a bind mount) of `service` holds `path`.
fn on_named_volume(service: &Value, named: &BTreeSet<String>, path: &str) -> bool {
    volumes(service)
        .iter()
        .any(|(source, target)| named.contains(source) && Path::new(path).starts_with(Path::new(target)))
}

#[test]
fn compose_file_parses_and_is_complete() {
    let doc = compose();
    let services = services(&doc);
    let named: BTreeSet<String> = doc
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();

    // Every service, Kafka in KRaft mode (no ZooKeeper).
    for name in ["kafka", "clickhouse"] {
        assert!(services.contains_key(name), "compose.yaml has no `{name}` service: {:?}", services.keys());
    }
    let kafka_env = environment(services["kafka"]);
    assert!(
        kafka_env.get("KAFKA_PROCESS_ROLES").is_some_and(|r| r.contains("controller")),
        "Kafka is not in KRaft mode (KAFKA_PROCESS_ROLES with controller): {kafka_env:?}"
    );
    assert!(!services.contains_key("zookeeper"), "a ZooKeeper service: Kafka runs in KRaft mode");
    let by_binary: BTreeMap<String, &str> =
        services.iter().filter_map(|(name, s)| Some((binary(s)?, name.as_str()))).collect();
    for bin in SERVICES {
        assert!(by_binary.contains_key(bin), "no compose service runs {bin}");
    }

    for (name, service) in &services {
        // Something to run.
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "service {name} has neither image nor build"
        );
        // A health check that is a real probe.
        let check = service.get("healthcheck").unwrap_or_else(|| panic!("service {name} has no healthcheck"));
        assert!(
            check.get("disable").and_then(Value::as_bool) != Some(true),
            "service {name}'s healthcheck is disabled"
        );
        let test = check.get("test").unwrap_or_else(|| panic!("service {name}'s healthcheck has no test"));
        let words: Vec<&str> = match test {
            Value::Sequence(words) => words.iter().filter_map(Value::as_str).collect(),
            Value::String(line) => vec![line.as_str()],
            other => panic!("service {name}'s healthcheck test is {other:?}"),
        };
        assert!(
            (words.len() >= 2 && ["CMD", "CMD-SHELL"].contains(&words[0]))
                || (words.len() == 1 && !words[0].is_empty() && words[0] != "NONE"),
            "service {name}'s healthcheck test {words:?} runs nothing"
        );
        // Every service it waits for exists.
        if let Some(deps) = service.get("depends_on").and_then(Value::as_mapping) {
            for dep in deps.keys().filter_map(Value::as_str) {
                assert!(services.contains_key(dep), "service {name} depends on an unknown service {dep}");
            }
        }
        // Named volumes are declared.
        for (source, target) in volumes(service) {
            let bind = source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
            assert!(bind || named.contains(&source), "service {name} mounts undeclared volume {source} on {target}");
        }
    }

    // The servers keep their data on volumes.
    assert!(
        on_named_volume(
            services["kafka"],
            &named,
            kafka_env.get("KAFKA_LOG_DIRS").map_or("/var/lib/kafka/data", String::as_str)
        ),
        "Kafka's log dirs are not on a named volume"
    );
    assert!(
        on_named_volume(services["clickhouse"], &named, "/var/lib/clickhouse"),
        "ClickHouse's data is not on a named volume"
    );

    // The Ricochet services probe /readyz.
    for bin in SERVICES {
        let name = by_binary[bin];
        let test = serde_norway::to_string(&services[name]["healthcheck"]["test"]).unwrap();
        assert!(test.contains("/readyz"), "service {name} ({bin}) does not probe /readyz: {test}");
    }

    // The edge's spool and registry snapshot survive the container.
    let edge = services[by_binary["ricochet-redirect"]];
    let edge_env = environment(edge);
    let spool =
        edge_env.get("RICOCHET_SPOOL_DIR").expect("the edge's RICOCHET_SPOOL_DIR is set (the default is relative)");
    assert!(spool.starts_with('/'), "RICOCHET_SPOOL_DIR {spool:?} is not absolute");
    assert!(on_named_volume(edge, &named, spool), "the edge's spool {spool} is not on a named volume");
    let snapshot =
        edge_env.get("RICOCHET_REGISTRY_SNAPSHOT").cloned().unwrap_or_else(|| format!("{spool}/registry.snapshot"));
    assert!(
        on_named_volume(edge, &named, &snapshot),
        "the edge's registry snapshot {snapshot} is not on a named volume"
    );
}

#[test]
fn compose_sets_only_settings_its_services_read() {
    let settings = settings();
    let doc = compose();
    let mut wrong = Vec::new();
    for (name, service) in services(&doc) {
        let bin = binary(service);
        for var in environment(service).keys().filter(|v| v.starts_with("RICOCHET_")) {
            match (settings.get(var), bin.as_deref()) {
                (None, _) => wrong.push(format!("{name} sets {var}, which no service reads")),
                (Some(s), Some(bin)) if SERVICES.contains(&bin) && !s.services.contains(bin) => {
                    wrong.push(format!("{name} sets {var}, which {bin} does not read (only {:?})", s.services))
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "infra/compose.yaml:\n  {}", wrong.join("\n  "));
}

/// The variables the README's configuration table names. A cell may name several:
/// `` `RICOCHET_A`, `RICOCHET_B` `` or `` `RICOCHET_CLICKHOUSE_DATABASE` / `_USER` ``,
/// where `_USER` replaces the last word of the name before it.
fn readme_table() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme.split("\n## Configuration\n").nth(1).expect("README has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap();
    let mut vars = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        let mut last = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let name = if let Some(suffix) = name.strip_prefix('_') {
                let stem = last.rsplit_once('_').map_or(last.as_str(), |(stem, _)| stem);
                format!("{stem}_{suffix}")
            } else {
                name.to_owned()
            };
            if name.starts_with("RICOCHET_") {
                last = name.clone();
                vars.insert(name);
            }
        }
    }
    assert!(vars.len() > 20, "too few variables in the README's table: {vars:?}");
    vars
}

#[test]
fn readme_documents_every_setting() {
    let settings = settings();
    let table = readme_table();
    let missing: Vec<_> = settings.keys().filter(|v| !table.contains(*v)).collect();
    let stale: Vec<_> = table.iter().filter(|v| !settings.contains_key(*v)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's configuration table: missing {missing:?} (read by the services), \
         stale {stale:?} (read by none)"
    );
}

/// Paragraphs (blank-line separated) of the project's Markdown documents.
fn doc_paragraphs() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md"), repo().join("infra/README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut out = Vec::new();
    for file in files {
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for paragraph in text.split("\n\n") {
            out.push((name.clone(), paragraph.to_owned()));
        }
    }
    out
}

#[test]
fn docs_call_deprecated_settings_deprecated() {
    let settings = settings();
    let deprecated: Vec<&String> =
        settings.iter().filter(|(_, s)| s.help.to_lowercase().contains("deprecated")).map(|(v, _)| v).collect();
    let mut wrong = Vec::new();
    for (file, paragraph) in doc_paragraphs() {
        for var in &deprecated {
            if paragraph.contains(var.as_str()) && !paragraph.to_lowercase().contains("deprecated") {
                wrong.push(format!("{file}: recommends {var}, deprecated:\n{paragraph}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    let doc = compose();
    for (name, service) in services(&doc) {
        for var in environment(service).keys() {
            assert!(!deprecated.contains(&var), "compose service {name} sets deprecated {var}");
        }
    }
}

#[test]
fn dockerfile_context_leaves_out_the_stack_state() {
    let ignore = read("infra/Dockerfile.dockerignore");
    let patterns: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for wanted in [".stack", ".git", "**/.env"] {
        assert!(
            patterns.iter().any(|p| p.trim_end_matches('/') == wanted),
            "infra/Dockerfile.dockerignore does not leave out {wanted}: {patterns:?}"
        );
    }
    let dockerfile = read("infra/Dockerfile");
    assert!(dockerfile.contains("ricochet-healthcheck"), "the image lacks the health-check probe compose runs");
}

/// A file's permission bits, in octal: `"600"`.
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode();
    format!("{:o}", mode & 0o7777)
}

/// `infra/stack.sh ARGS` with a private state folder, without the caller's keys.
fn stack(dir: &Path, args: &[&str], path_prefix: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("infra/stack.sh"))
        .args(args)
        .env("RICOCHET_STACK_DIR", dir)
        .env_remove("RICOCHET_ADMIN_KEY")
        .env_remove("RICOCHET_TOKEN_KEYS");
    if let Some(prefix) = path_prefix {
        cmd.env("PATH", format!("{}:{}", prefix.display(), std::env::var("PATH").unwrap_or_default()));
    }
    // What a default umask makes: 0644 files, 0755 folders.
    let output = with_umask(0o022, || cmd.output().expect("running infra/stack.sh"));
    assert!(
        output.status.success(),
        "infra/stack.sh {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `f` with the process umask set to `mask` (children inherit it).
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps the process's file-creation mask; the tests of
    // this binary that create files check modes only of what stack.sh creates.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    unsafe { libc::umask(old) };
    out
}

#[test]
fn stack_keeps_its_keys_private() {
    let tmp = tempfile::tempdir().unwrap();

    // A fresh state folder.
    let dir = tmp.path().join("stack");
    stack(&dir, &["secrets"], None);
    assert_eq!(mode(&dir), "700", "the state folder");
    let admin = std::fs::read_to_string(dir.join("admin-key")).unwrap();
    let admin = admin.trim();
    assert!(admin.len() >= 32 && admin.bytes().all(|b| b.is_ascii_hexdigit()), "admin key {admin:?}");
    let tokens = std::fs::read_to_string(dir.join("token-keys")).unwrap();
    let secret = tokens.trim().strip_prefix("k1:").unwrap_or_else(|| panic!("token keys {tokens:?}"));
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "token keys {tokens:?}");
    assert_eq!(std::fs::read_to_string(dir.join("admin.header")).unwrap(), format!("Authorization: Bearer {admin}\n"));
    for file in ["admin-key", "token-keys", "admin.header"] {
        assert_eq!(mode(&dir.join(file)), "600", "{file}");
    }
    // A second run keeps the keys.
    stack(&dir, &["secrets"], None);
    assert_eq!(std::fs::read_to_string(dir.join("admin-key")).unwrap().trim(), admin);

    // A folder an older stack.sh left readable to all: closed, keys kept.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(old.join("admin-key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(old.join("admin-key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    stack(&old, &["secrets"], None);
    assert_eq!(mode(&old), "700", "the old state folder");
    assert_eq!(mode(&old.join("admin-key")), "600", "the old admin-key");
    assert_eq!(std::fs::read_to_string(old.join("admin-key")).unwrap(), "0123456789abcdef0123456789abcdef\n");

    // The demo step talks to the API with the admin key and a client key, both off
    // every command line. A stand-in curl logs its arguments and the headers it is
    // handed in files, and answers as the API would.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = tmp.path().join("log");
    std::fs::create_dir(&log).unwrap();
    let token_key = "ab".repeat(32);
    std::fs::write(
        bin.join("curl"),
        format!(
            r#"#!/usr/bin/env bash
printf '%s\n' "$*" >>'{log}/argv'
prev="" url=""
for a in "$@"; do
    if [[ $prev == -H && $a == @* ]]; then cat "${{a#@}}" >>'{log}/headers'; fi
    if [[ $a == http* ]]; then url=$a; fi
    prev=$a
done
case $url in
    */v1/links) echo '{{"link_id":"0196a0b0-0000-7000-8000-000000000000","tracking_url":"http://127.0.0.1:8080/QxD1y9Gk"}}' ;;
    */v1/clients/demo/api-keys) echo '{{"key":"rk_democlientkey0123456789"}}' ;;
    */v1/clients/demo/token-keys) echo '{{"keys":[{{"kid":"k1","key":"{token_key}"}}]}}' ;;
    *) echo "stand-in curl: unexpected $url" >&2; exit 22 ;;
esac
"#,
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("curl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = stack(&dir, &["demo"], Some(&bin));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("http://127.0.0.1:8080/QxD1y9Gk/k1."), "no signed demo URL in:\n{stdout}");

    let argv = std::fs::read_to_string(log.join("argv")).unwrap();
    assert_eq!(argv.lines().count(), 3, "curl calls:\n{argv}");
    assert!(!argv.contains(admin), "the admin key is on a curl command line:\n{argv}");
    assert!(!argv.contains("rk_democlientkey"), "the client key is on a curl command line:\n{argv}");
    let headers = std::fs::read_to_string(log.join("headers")).unwrap();
    // Link, key and signing keys, all with the admin key: the demo (dashboard)
    // key is `read` only, so it cannot fetch the signing keys.
    assert_eq!(
        headers.matches(&format!("Authorization: Bearer {admin}\n")).count(),
        3,
        "the admin key did not reach curl in a header file:\n{headers}"
    );
    assert!(argv.contains(r#""scopes":["read"]"#), "the demo key is not minted `read` only:\n{argv}");
    assert_eq!(mode(&dir.join("demo.header")), "600", "demo.header");
    assert!(!stdout.contains(admin), "the admin key is printed:\n{stdout}");
}
