//! TLS to ClickHouse and to Kafka, on real servers with a CA made for the test.
//!
//! - ClickHouse 18.16 serves HTTPS itself (`https_port`, `<openSSL><server>`):
//!   the aggregator and the API reach it at `https://127.0.0.1:PORT` trusting
//!   only `RICOCHET_CLICKHOUSE_CA_FILE`, and without that CA the aggregator
//!   refuses to start, naming the certificate.
//! - nisshi serves TLS itself (`--cert`, `--key`: its listener then only
//!   accepts TLS, and advertises the same port), so no stunnel is needed: the
//!   edge, the API and the aggregator all reach it with
//!   `RICOCHET_KAFKA_SECURITY_PROTOCOL=ssl` and `RICOCHET_KAFKA_SSL_CA_LOCATION`.
//!
//! - SASL: nisshi does SCRAM-SHA-256/512 (`nisshi user create`, then
//!   `--authentication`): the aggregator and the API authenticate with
//!   SCRAM-SHA-512 over TLS (`sasl_ssl`), the edge with SCRAM-SHA-256, and a
//!   wrong password is refused with either. nisshi has no PLAIN and does not
//!   ask for client certificates (so mutual TLS is not shown here);
//!   `registry/src/kafka.rs`'s `librdkafka_takes_every_protocol_and_mechanism`
//!   shows librdkafka takes PLAIN and SCRAM-SHA-256 with every protocol.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ricochet_tests::client;
use ricochet_tests::process::Proc;
use ricochet_tests::servers::{ClickHouse, Kafka, Servers};
use ricochet_tests::{eventually, free_port, services};

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` command (infra/install.sh installs it).
struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl (infra/install.sh)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ricochet test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    Certs { ca: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key") }
}

fn tempdir() -> tempfile::TempDir {
    let keep = std::env::var_os("RICOCHET_KEEP_TEST_DIRS").is_some();
    tempfile::Builder::new().prefix("ricochet-tls-").disable_cleanup(keep).tempdir().expect("tempdir")
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// Creates a link through the API, clicks it once on the edge and waits until
/// the API's stats (read from ClickHouse) count it.
async fn one_click_is_counted(api: &str, edge: &str) {
    let started = client::now_secs();
    let link = client::create_link(api, "acme", "tls", "https://shop.example/tls").await;
    let http = client::http();
    eventually("the edge to redirect the new link", Duration::from_secs(30), || {
        let url = format!("{edge}/{}", link.code);
        let http = http.clone();
        async move { (http.get(url).send().await.ok()?.status() == 302).then_some(()) }
    })
    .await;
    eventually("the click to be counted", Duration::from_secs(60), || async {
        let stats = client::link_stats(api, &link.link_id, started - 60, client::now_secs() + 3600).await;
        (client::total_clicks(&stats) == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_aggregator_and_the_api_reach_clickhouse_over_https_with_their_own_ca() {
    let dir = tempdir();
    let certs = make_certs(&dir.path().join("tls"));
    let https_port = free_port();
    let config_d = format!(
        "<yandex>\n  <https_port>{https_port}</https_port>\n  <openSSL><server>\n    \
         <certificateFile>{}</certificateFile>\n    <privateKeyFile>{}</privateKeyFile>\n    \
         <verificationMode>none</verificationMode>\n    <loadDefaultCAFile>false</loadDefaultCAFile>\n    \
         <disableProtocols>sslv2,sslv3</disableProtocols>\n  </server></openSSL>\n</yandex>\n",
        path(&certs.server_cert),
        path(&certs.server_key),
    );
    let (ch_dir, kafka_dir) = (dir.path().join("clickhouse"), dir.path().join("kafka"));
    let (clickhouse, kafka) = tokio::join!(
        ClickHouse::start_on(&ch_dir, [free_port(), free_port(), free_port()], &config_d),
        Kafka::start(&kafka_dir),
    );
    let servers = Servers { clickhouse, kafka, dir };
    let https_url = format!("https://127.0.0.1:{https_port}");

    // Without the CA, the certificate is not trusted, and the aggregator says so.
    let mut cmd = Command::new(services::bin("ricochet-aggregator"));
    cmd.env("RICOCHET_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RICOCHET_KAFKA_BROKERS", servers.kafka.brokers())
        .env("RICOCHET_CLICKHOUSE_URL", &https_url)
        .env("RUST_BACKTRACE", "0");
    let mut untrusting = Proc::spawn("aggregator-without-ca", cmd, &servers.path().join("aggregator-without-ca.log"));
    eventually("the aggregator without the CA to give up", Duration::from_secs(30), || {
        let running = untrusting.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    // Read whole: the numbered "Caused by" lines are what names the certificate.
    let log = std::fs::read_to_string(servers.path().join("aggregator-without-ca.log")).unwrap_or_default();
    assert!(
        log.contains("connecting to ClickHouse") && log.contains("invalid peer certificate: UnknownIssuer"),
        "{log}"
    );

    // With it, migrations run, clicks are counted and the API reads them, all over https.
    let tls = [("RICOCHET_CLICKHOUSE_URL", https_url.clone()), ("RICOCHET_CLICKHOUSE_CA_FILE", path(&certs.ca))];
    let _aggregator = services::aggregator(&servers, "aggregator", &tls).await;
    let api = services::api(&servers, "api", &tls).await;
    let edge = services::redirect(&servers, "edge", &[]).await;
    one_click_is_counted(&api.url(), &edge.url()).await;
    let tables = servers.clickhouse.query("SELECT count() FROM system.tables WHERE name = 'click_rollups'").await;
    assert_eq!(tables.unwrap().trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_reaches_a_tls_broker() {
    let dir = tempdir();
    let certs = make_certs(&dir.path().join("tls"));
    let tls_args = ["--cert".to_owned(), path(&certs.server_cert), "--key".to_owned(), path(&certs.server_key)];
    let (ch_dir, kafka_dir) = (dir.path().join("clickhouse"), dir.path().join("kafka"));
    let (clickhouse, kafka) = tokio::join!(ClickHouse::start(&ch_dir), Kafka::start_with(&kafka_dir, &tls_args));
    let servers = Servers { clickhouse, kafka, dir };
    let tls =
        [("RICOCHET_KAFKA_SECURITY_PROTOCOL", "ssl".to_owned()), ("RICOCHET_KAFKA_SSL_CA_LOCATION", path(&certs.ca))];
    // The edge (publisher, registry tail), the API (registry writer and tail,
    // status client) and the aggregator (consumer, registry tail, status refresher).
    let _aggregator = services::aggregator(&servers, "aggregator", &tls).await;
    let api = services::api(&servers, "api", &tls).await;
    let edge = services::redirect(&servers, "edge", &tls).await;
    one_click_is_counted(&api.url(), &edge.url()).await;
}

/// Every Kafka client a service makes starts from `KafkaConnection::client_config`
/// (registry/src/kafka.rs), so none can miss the security settings.
#[test]
fn no_service_makes_a_kafka_client_of_its_own() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("registry/src/kafka.rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("ClientConfig::new()") {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    for crate_dir in ["ingest", "registry", "redirect", "aggregator", "api", "warehouse", "serve", "signals"] {
        walk(&ricochet_tests::repo_root().join(crate_dir).join("src"), &mut found);
    }
    assert!(found.is_empty(), "ClientConfig::new() outside KafkaConnection::client_config: {found:?}");
}

/// The broker binary infra/kafka/run.sh runs.
fn nisshi() -> PathBuf {
    if let Some(bin) = std::env::var_os("NISSHI_BIN") {
        return bin.into();
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let bin = home.join("bin/nisshi");
    if bin.exists() {
        bin
    } else {
        "nisshi".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_authenticates_with_scram_over_tls() {
    let dir = tempdir();
    let certs = make_certs(&dir.path().join("tls"));
    let (ch_dir, kafka_dir) = (dir.path().join("clickhouse"), dir.path().join("kafka"));
    // nisshi keeps SCRAM credentials in its storage: made on an open broker,
    // then the same storage is served with authentication required, over TLS.
    let (clickhouse, mut open) = tokio::join!(ClickHouse::start(&ch_dir), Kafka::start(&kafka_dir));
    for (mechanism, user, password) in [("scram512", "ricochet", "s3cret"), ("scram256", "ricochet256", "s3cret256")] {
        let out = Command::new(nisshi())
            .args(["user", "create", "--broker", &format!("tcp://{}", open.brokers()), "--mechanism", mechanism])
            .args([user, password])
            .output()
            .expect("nisshi user create");
        assert!(out.status.success(), "nisshi user create: {}", String::from_utf8_lossy(&out.stderr));
    }
    open.stop();
    drop(open);
    let args = [
        "--authentication".to_owned(),
        "--cert".to_owned(),
        path(&certs.server_cert),
        "--key".to_owned(),
        path(&certs.server_key),
    ];
    let kafka = Kafka::start_with(&kafka_dir, &args).await;
    // The broker does check: a wrong password gets no metadata, the right one
    // does, with either mechanism.
    use ricochet_registry::kafka::SaslMechanism;
    let metadata = |mechanism: SaslMechanism, user: &str, password: &str| {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use ricochet_registry::kafka::{KafkaConnection, KafkaSecurity, SecurityProtocol};
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(mechanism),
            sasl_username: Some(user.into()),
            sasl_password: Some(password.into()),
            ssl_ca_location: Some(certs.ca.clone()),
            ..KafkaSecurity::default()
        };
        let client: BaseConsumer =
            KafkaConnection::new(&kafka.brokers(), &security).unwrap().client_config().create().unwrap();
        client.fetch_metadata(None, Duration::from_secs(5)).map(|_| ())
    };
    assert!(metadata(SaslMechanism::ScramSha512, "ricochet", "wrong").is_err(), "a wrong SCRAM password was accepted");
    metadata(SaslMechanism::ScramSha512, "ricochet", "s3cret").expect("metadata with the right SCRAM-SHA-512 password");
    assert!(
        metadata(SaslMechanism::ScramSha256, "ricochet256", "wrong").is_err(),
        "a wrong SCRAM-SHA-256 password was accepted"
    );
    metadata(SaslMechanism::ScramSha256, "ricochet256", "s3cret256")
        .expect("metadata with the right SCRAM-SHA-256 password");
    let servers = Servers { clickhouse, kafka, dir };
    let sasl = [
        ("RICOCHET_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".to_owned()),
        ("RICOCHET_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
        ("RICOCHET_KAFKA_SASL_USERNAME", "ricochet".to_owned()),
        ("RICOCHET_KAFKA_SASL_PASSWORD", "s3cret".to_owned()),
        ("RICOCHET_KAFKA_SSL_CA_LOCATION", path(&certs.ca)),
    ];
    let _aggregator = services::aggregator(&servers, "aggregator", &sasl).await;
    let api = services::api(&servers, "api", &sasl).await;
    // The edge with the other mechanism: both work end to end.
    let sasl_256 = [
        ("RICOCHET_KAFKA_SECURITY_PROTOCOL", "sasl_ssl".to_owned()),
        ("RICOCHET_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256".to_owned()),
        ("RICOCHET_KAFKA_SASL_USERNAME", "ricochet256".to_owned()),
        ("RICOCHET_KAFKA_SASL_PASSWORD", "s3cret256".to_owned()),
        ("RICOCHET_KAFKA_SSL_CA_LOCATION", path(&certs.ca)),
    ];
    let edge = services::redirect(&servers, "edge", &sasl_256).await;
    one_click_is_counted(&api.url(), &edge.url()).await;
}
