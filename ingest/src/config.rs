//! Publishing settings: the producer (each field names the librdkafka key it
//! sets) and the disk spool in front of it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ricochet_registry::kafka::{KafkaConnection, KafkaSecurity, KafkaSecurityError};

#[derive(Args, Clone, Debug)]
pub struct PublisherConfig {
    /// Kafka bootstrap servers (`bootstrap.servers`).
    #[arg(long = "kafka-brokers", env = "RICOCHET_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic click events go to. Keyed by client id.
    #[arg(long = "clicks-topic", env = "RICOCHET_CLICKS_TOPIC", default_value = "clicks")]
    pub topic: String,

    /// How long the producer waits to fill a batch (`linger.ms`). Batching is what
    /// lets one producer carry a blast; 5 ms is invisible next to network latency.
    #[arg(long = "kafka-linger-ms", env = "RICOCHET_KAFKA_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u32,

    /// Batch compression (`compression.type`): none, gzip, snappy, lz4 or zstd.
    #[arg(long = "kafka-compression", env = "RICOCHET_KAFKA_COMPRESSION", default_value = "lz4")]
    pub compression: String,

    /// Events the producer holds in memory (`queue.buffering.max.messages`). Past
    /// it, events simply wait in the spool: memory stays bounded in an outage.
    #[arg(long = "kafka-queue-max-messages", env = "RICOCHET_KAFKA_QUEUE_MAX_MESSAGES", default_value_t = 100_000)]
    pub queue_max_messages: u32,

    /// TLS and SASL to the brokers (`RICOCHET_KAFKA_SECURITY_PROTOCOL`, …).
    #[command(flatten)]
    pub security: KafkaSecurity,

    #[command(flatten)]
    pub spool: SpoolConfig,
}

#[derive(Args, Clone, Debug)]
pub struct SpoolConfig {
    /// Directory of the disk spool every event passes through. Keep it on local disk.
    #[arg(long = "spool-dir", env = "RICOCHET_SPOOL_DIR", default_value = "./ricochet-spool")]
    pub dir: PathBuf,

    /// Upper bound of the spool on disk. When full, the edge still redirects and
    /// counts the events it drops (`ricochet_edge_events_dropped_total{reason="spool_full"}`).
    /// 1 GiB holds about 3 million events.
    #[arg(long = "spool-max-bytes", env = "RICOCHET_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub max_bytes: u64,

    /// Size at which a spool segment is closed and a new one started.
    #[arg(long = "spool-segment-bytes", env = "RICOCHET_SPOOL_SEGMENT_BYTES", default_value_t = 16 << 20)]
    pub segment_bytes: u64,

    /// How often the spool is fsynced (ms). A SIGKILL loses at most the events of
    /// the last interval; a graceful shutdown loses none.
    #[arg(long = "spool-fsync-ms", env = "RICOCHET_SPOOL_FSYNC_MS", default_value_t = 100)]
    pub fsync_interval_ms: u64,

    /// Events waiting between the request handlers and the spool writer.
    #[arg(long = "spool-queue", env = "RICOCHET_SPOOL_QUEUE", default_value_t = 65_536)]
    pub queue_capacity: usize,
}

impl SpoolConfig {
    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }
}

impl PublisherConfig {
    /// The brokers and the security settings, checked: what the edge's other
    /// Kafka clients (topics, registry tail) are made from too.
    pub fn connection(&self) -> Result<KafkaConnection, KafkaSecurityError> {
        KafkaConnection::new(&self.brokers, &self.security)
    }

    pub(crate) fn client_config(&self) -> Result<rdkafka::ClientConfig, KafkaSecurityError> {
        let mut c = self.connection()?.client_config();
        // Idempotence implies acks=all and bounded in-flight requests: retries
        // can neither duplicate nor reorder events within a partition.
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", &self.compression)
            .set("queue.buffering.max.messages", self.queue_max_messages.to_string())
            // Never give up on an event: while the broker is away it waits in the
            // producer's bounded queue and, behind that, in the spool.
            .set("message.timeout.ms", "0")
            // The Java client's partitioner, so every Kafka client maps a client id
            // to the same partition.
            .set("partitioner", "murmur2_random");
        Ok(c)
    }
}
