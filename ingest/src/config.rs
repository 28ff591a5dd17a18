//! Producer settings. Each field names the librdkafka key it sets.

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct PublisherConfig {
    /// Kafka bootstrap servers (`bootstrap.servers`).
    #[arg(
        long = "kafka-brokers",
        env = "RICOCHET_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Topic click events go to. Keyed by client id.
    #[arg(
        long = "clicks-topic",
        env = "RICOCHET_CLICKS_TOPIC",
        default_value = "clicks"
    )]
    pub topic: String,

    /// How long the producer waits to fill a batch (`linger.ms`). Batching is what
    /// lets one producer carry a blast; 5 ms is invisible next to network latency.
    #[arg(
        long = "kafka-linger-ms",
        env = "RICOCHET_KAFKA_LINGER_MS",
        default_value_t = 5
    )]
    pub linger_ms: u32,

    /// Batch compression (`compression.type`): none, gzip, snappy, lz4 or zstd.
    #[arg(
        long = "kafka-compression",
        env = "RICOCHET_KAFKA_COMPRESSION",
        default_value = "lz4"
    )]
    pub compression: String,

    /// Events held in memory while the broker is slow (`queue.buffering.max.messages`).
    /// When full, publishing fails fast and the caller decides (the edge counts a drop).
    #[arg(
        long = "kafka-queue-max-messages",
        env = "RICOCHET_KAFKA_QUEUE_MAX_MESSAGES",
        default_value_t = 1_000_000
    )]
    pub queue_max_messages: u32,

    /// How long librdkafka keeps retrying one event before reporting it failed
    /// (`message.timeout.ms`). 5 minutes rides out a broker restart.
    #[arg(
        long = "kafka-message-timeout-ms",
        env = "RICOCHET_KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub message_timeout_ms: u32,
}

impl PublisherConfig {
    /// A config with the defaults above, for tests and tools.
    pub fn new(brokers: impl Into<String>) -> Self {
        PublisherConfig {
            brokers: brokers.into(),
            topic: "clicks".into(),
            linger_ms: 5,
            compression: "lz4".into(),
            queue_max_messages: 1_000_000,
            message_timeout_ms: 300_000,
        }
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            // Idempotence implies acks=all and bounded in-flight requests: retries
            // can neither duplicate nor reorder events within a partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", &self.compression)
            .set(
                "queue.buffering.max.messages",
                self.queue_max_messages.to_string(),
            )
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            // The Java client's partitioner, so every Kafka client maps a client id
            // to the same partition.
            .set("partitioner", "murmur2_random");
        c
    }
}
