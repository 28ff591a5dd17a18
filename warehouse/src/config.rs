//! ClickHouse connection settings, one clap group flattened into each
//! service's config so both read the same `RICOCHET_CLICKHOUSE_*` variables.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Args, Clone, Debug)]
pub struct ClickHouseConfig {
    /// ClickHouse HTTP interface.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123", global = true)]
    pub clickhouse_url: String,

    #[arg(long, env = "RICOCHET_CLICKHOUSE_DATABASE", default_value = "default", global = true)]
    pub clickhouse_database: String,

    #[arg(long, env = "RICOCHET_CLICKHOUSE_USER", default_value = "default", global = true)]
    pub clickhouse_user: String,

    #[arg(long, env = "RICOCHET_CLICKHOUSE_PASSWORD", default_value = "", hide_env_values = true, global = true)]
    pub clickhouse_password: String,

    /// Compress ClickHouse traffic with LZ4. Off by default: ClickHouse 18.16
    /// answers compressed requests with an empty body. Worth enabling on current
    /// ClickHouse across a network.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_LZ4", default_value_t = false, global = true)]
    pub clickhouse_lz4: bool,

    /// Cluster mode: the cluster's name in the servers' `<remote_servers>`.
    /// Migrations then create replicated `_local` tables `ON CLUSTER` and
    /// `Distributed` tables over them; the aggregator writes to the `_local`
    /// tables of the server at `RICOCHET_CLICKHOUSE_URL`, reads go through the
    /// `Distributed` ones (see `docs/cluster.md`). Unset: one server, plain tables.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_CLUSTER", global = true)]
    pub clickhouse_cluster: Option<String>,

    /// PEM file of the CA(s) that signed ClickHouse's certificate, for an
    /// `https://` URL: then only these are trusted. Unset: the system's trust
    /// store. Read (and checked) at start.
    #[arg(long, env = "RICOCHET_CLICKHOUSE_CA_FILE", value_parser = CaFile::load, global = true)]
    pub clickhouse_ca_file: Option<CaFile>,
}

/// A CA file, read and parsed when the settings are.
#[derive(Clone, Debug)]
pub struct CaFile {
    pub path: PathBuf,
    certs: Arc<Vec<CertificateDer<'static>>>,
}

impl CaFile {
    pub fn load(path: &str) -> Result<CaFile, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("reading CA certificates from {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path} holds no PEM certificate"));
        }
        Ok(CaFile { path: path.into(), certs: Arc::new(certs) })
    }

    /// A ClickHouse client whose HTTPS trusts only this file's CAs.
    fn clickhouse_client(&self) -> clickhouse::Client {
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(self.certs.iter().cloned());
        if ignored > 0 {
            tracing::warn!(path = %self.path.display(), added, ignored, "some CA certificates could not be used");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        clickhouse::Client::with_http_client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                // The crate's own default: below ClickHouse's 3 s keep-alive.
                .pool_idle_timeout(Duration::from_secs(2))
                .build(https),
        )
    }
}

impl ClickHouseConfig {
    /// Cluster mode, validated: the names are spliced into DDL.
    pub fn cluster(&self) -> Result<Option<crate::cluster::Cluster>, crate::cluster::ClusterError> {
        self.clickhouse_cluster
            .as_deref()
            .map(|name| crate::cluster::Cluster::new(name, &self.clickhouse_database))
            .transpose()
    }

    pub fn client(&self) -> clickhouse::Client {
        self.client_for(&self.clickhouse_url)
    }

    /// A client of another server of the same deployment (a shard).
    pub fn client_for(&self, url: &str) -> clickhouse::Client {
        let client = match &self.clickhouse_ca_file {
            Some(ca) => ca.clickhouse_client(),
            None => clickhouse::Client::default(),
        };
        client
            .with_url(url)
            .with_database(&self.clickhouse_database)
            .with_user(&self.clickhouse_user)
            .with_password(&self.clickhouse_password)
            // 18.16 lacks RowBinaryWithNamesAndTypes, which row validation needs.
            .with_validation(false)
            .with_compression(if self.clickhouse_lz4 {
                clickhouse::Compression::Lz4
            } else {
                clickhouse::Compression::None
            })
    }
}

/// The server's version, to check it answers before doing anything else.
pub async fn server_version(client: &clickhouse::Client) -> Result<String, clickhouse::error::Error> {
    client.query("SELECT version()").fetch_one::<String>().await
}
