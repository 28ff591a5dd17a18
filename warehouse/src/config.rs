//! ClickHouse connection settings, one clap group flattened into each
//! service's config so both read the same `RICOCHET_CLICKHOUSE_*` variables.

use clap::Args;

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
        clickhouse::Client::default()
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
