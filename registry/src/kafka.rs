//! How every Kafka client of every service reaches the brokers: the bootstrap
//! list plus one set of security settings (TLS, SASL), flattened into each
//! service's config so all read the same `RICOCHET_KAFKA_*` variables. Every
//! `ClientConfig` a service makes starts from [`KafkaConnection::client_config`].

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;

/// `security.protocol`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    #[value(name = "plaintext")]
    Plaintext,
    #[value(name = "ssl")]
    Ssl,
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn is_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `sasl.mechanism` (GSSAPI/Kerberos and OAUTHBEARER are not supported).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS and SASL to the brokers. Each field names the librdkafka key it sets.
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaSecurity {
    /// `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long = "kafka-security-protocol",
        env = "RICOCHET_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext",
        global = true
    )]
    pub protocol: SecurityProtocol,

    /// `sasl.mechanism`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Needs a
    /// `sasl_*` protocol, a username and a password.
    #[arg(long = "kafka-sasl-mechanism", env = "RICOCHET_KAFKA_SASL_MECHANISM", value_enum, global = true)]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// `sasl.username`.
    #[arg(long = "kafka-sasl-username", env = "RICOCHET_KAFKA_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,

    /// `sasl.password`.
    #[arg(long = "kafka-sasl-password", env = "RICOCHET_KAFKA_SASL_PASSWORD", hide_env_values = true, global = true)]
    pub sasl_password: Option<String>,

    /// `ssl.ca.location`: PEM file of the CA(s) the brokers' certificates are
    /// checked against. Unset: the system's trust store.
    #[arg(long = "kafka-ssl-ca-location", env = "RICOCHET_KAFKA_SSL_CA_LOCATION", global = true)]
    pub ssl_ca_location: Option<PathBuf>,

    /// `ssl.certificate.location`: this client's PEM certificate (mutual TLS).
    #[arg(long = "kafka-ssl-certificate-location", env = "RICOCHET_KAFKA_SSL_CERTIFICATE_LOCATION", global = true)]
    pub ssl_certificate_location: Option<PathBuf>,

    /// `ssl.key.location`: the PEM private key of that certificate.
    #[arg(long = "kafka-ssl-key-location", env = "RICOCHET_KAFKA_SSL_KEY_LOCATION", global = true)]
    pub ssl_key_location: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaSecurityError {
    #[error(
        "RICOCHET_KAFKA_SASL_MECHANISM needs RICOCHET_KAFKA_SECURITY_PROTOCOL sasl_plaintext or sasl_ssl, not {0}"
    )]
    MechanismWithoutSasl(&'static str),
    #[error("RICOCHET_KAFKA_SECURITY_PROTOCOL {0} needs RICOCHET_KAFKA_SASL_MECHANISM")]
    SaslWithoutMechanism(&'static str),
    #[error("SASL needs RICOCHET_KAFKA_SASL_USERNAME and RICOCHET_KAFKA_SASL_PASSWORD")]
    MissingCredentials,
    #[error("{0} is set but RICOCHET_KAFKA_SECURITY_PROTOCOL is {1}: TLS files need ssl or sasl_ssl")]
    TlsFileWithoutTls(&'static str, &'static str),
    #[error("RICOCHET_KAFKA_SSL_CERTIFICATE_LOCATION and RICOCHET_KAFKA_SSL_KEY_LOCATION go together")]
    CertificateWithoutKey,
    #[error("{0}: {1} is not a readable file")]
    MissingFile(&'static str, PathBuf),
}

impl KafkaSecurity {
    /// Checks the settings fit together and the files exist, so that a service
    /// refuses to start rather than retrying a handshake that cannot succeed.
    pub fn validate(&self) -> Result<(), KafkaSecurityError> {
        let protocol = self.protocol.as_librdkafka();
        match (self.protocol.is_sasl(), self.sasl_mechanism) {
            (false, Some(_)) => return Err(KafkaSecurityError::MechanismWithoutSasl(protocol)),
            (true, None) => return Err(KafkaSecurityError::SaslWithoutMechanism(protocol)),
            (true, Some(_)) if self.sasl_username.is_none() || self.sasl_password.is_none() => {
                return Err(KafkaSecurityError::MissingCredentials)
            }
            _ => {}
        }
        let files = [
            ("RICOCHET_KAFKA_SSL_CA_LOCATION", &self.ssl_ca_location),
            ("RICOCHET_KAFKA_SSL_CERTIFICATE_LOCATION", &self.ssl_certificate_location),
            ("RICOCHET_KAFKA_SSL_KEY_LOCATION", &self.ssl_key_location),
        ];
        for (name, path) in files {
            let Some(path) = path else { continue };
            if !self.protocol.is_tls() {
                return Err(KafkaSecurityError::TlsFileWithoutTls(name, protocol));
            }
            if !Path::new(path).is_file() {
                return Err(KafkaSecurityError::MissingFile(name, path.clone()));
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(KafkaSecurityError::CertificateWithoutKey);
        }
        Ok(())
    }

    /// Sets these settings on `config` (nothing for the plaintext default).
    pub fn apply<'a>(&self, config: &'a mut ClientConfig) -> &'a mut ClientConfig {
        config.set("security.protocol", self.protocol.as_librdkafka());
        if let Some(m) = self.sasl_mechanism {
            config.set("sasl.mechanism", m.as_librdkafka());
        }
        if let Some(u) = &self.sasl_username {
            config.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            config.set("sasl.password", p);
        }
        let files = [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                config.set(key, path.to_string_lossy());
            }
        }
        config
    }
}

/// Where the brokers are and how to reach them: what every Kafka client is made from.
#[derive(Clone, Debug)]
pub struct KafkaConnection {
    brokers: String,
    security: KafkaSecurity,
}

impl KafkaConnection {
    /// Checked settings (see [`KafkaSecurity::validate`]).
    pub fn new(brokers: &str, security: &KafkaSecurity) -> Result<Self, KafkaSecurityError> {
        security.validate()?;
        Ok(KafkaConnection { brokers: brokers.to_owned(), security: security.clone() })
    }

    /// A plaintext broker, no security: tools and tests on a local broker.
    pub fn plaintext(brokers: &str) -> Self {
        KafkaConnection { brokers: brokers.to_owned(), security: KafkaSecurity::default() }
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A fresh `ClientConfig` with `bootstrap.servers` and the security settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut config);
        config
    }
}

/// A bare broker list is a plaintext connection (the benchmarks' local broker).
impl From<&str> for KafkaConnection {
    fn from(brokers: &str) -> Self {
        KafkaConnection::plaintext(brokers)
    }
}

impl From<&String> for KafkaConnection {
    fn from(brokers: &String) -> Self {
        KafkaConnection::plaintext(brokers)
    }
}

impl From<&KafkaConnection> for KafkaConnection {
    fn from(kafka: &KafkaConnection) -> Self {
        kafka.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: KafkaSecurity,
    }

    fn parse(flags: &[&str]) -> KafkaSecurity {
        Cli::try_parse_from(std::iter::once("test").chain(flags.iter().copied())).unwrap().security
    }

    #[test]
    fn the_default_is_plaintext_and_valid() {
        let s = parse(&[]);
        assert_eq!(s.protocol, SecurityProtocol::Plaintext);
        assert_eq!(s.validate(), Ok(()));
        let c = KafkaConnection::new("b:9092", &s).unwrap().client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.mechanism"), None);
    }

    #[test]
    fn a_mechanism_needs_a_sasl_protocol() {
        let s = parse(&["--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u", "--kafka-sasl-password", "p"]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::MechanismWithoutSasl("plaintext")));
        let s = parse(&["--kafka-security-protocol", "ssl", "--kafka-sasl-mechanism", "SCRAM-SHA-256"]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::MechanismWithoutSasl("ssl")));
    }

    #[test]
    fn a_sasl_protocol_needs_a_mechanism_and_credentials() {
        let s = parse(&["--kafka-security-protocol", "sasl_ssl"]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::SaslWithoutMechanism("sasl_ssl")));
        let s = parse(&["--kafka-security-protocol", "sasl_plaintext", "--kafka-sasl-mechanism", "SCRAM-SHA-512"]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::MissingCredentials));
    }

    #[test]
    fn tls_files_must_exist_and_need_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let ca = ca.to_str().unwrap();
        let s = parse(&["--kafka-ssl-ca-location", ca]);
        assert_eq!(
            s.validate(),
            Err(KafkaSecurityError::TlsFileWithoutTls("RICOCHET_KAFKA_SSL_CA_LOCATION", "plaintext"))
        );
        let missing = dir.path().join("nope.pem");
        let s = parse(&["--kafka-security-protocol", "ssl", "--kafka-ssl-ca-location", missing.to_str().unwrap()]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::MissingFile("RICOCHET_KAFKA_SSL_CA_LOCATION", missing)));
        let s = parse(&["--kafka-security-protocol", "ssl", "--kafka-ssl-certificate-location", ca]);
        assert_eq!(s.validate(), Err(KafkaSecurityError::CertificateWithoutKey));
        let s = parse(&["--kafka-security-protocol", "ssl", "--kafka-ssl-ca-location", ca]);
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.apply(&mut ClientConfig::new()).get("ssl.ca.location"), Some(ca));
    }

    #[test]
    fn sasl_settings_reach_the_client_config() {
        let s = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-256",
            "--kafka-sasl-username",
            "ricochet",
            "--kafka-sasl-password",
            "secret",
        ]);
        let c = KafkaConnection::new("b:9093", &s).unwrap().client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.username"), Some("ricochet"));
        assert_eq!(c.get("sasl.password"), Some("secret"));
    }

    /// The local broker does SCRAM-SHA-512 over TLS only (tests/tests/tls.rs),
    /// so for the other pairs this proves what can be proved without a
    /// server: librdkafka accepts every protocol and mechanism we offer, i.e.
    /// it was built with TLS, PLAIN and SCRAM.
    /// Without rdkafka's `ssl` feature, creation fails with librdkafka's own
    /// "built without SSL support" / "unsupported" message.
    #[test]
    fn librdkafka_takes_every_protocol_and_mechanism() {
        use rdkafka::producer::BaseProducer;
        for protocol in ["ssl", "sasl_plaintext", "sasl_ssl"] {
            for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
                let mut flags = vec!["--kafka-security-protocol", protocol];
                if protocol.starts_with("sasl") {
                    let sasl = ["--kafka-sasl-username", "u", "--kafka-sasl-password", "p"];
                    flags.extend(["--kafka-sasl-mechanism", mechanism].iter().chain(&sasl));
                }
                let s = parse(&flags);
                let made = KafkaConnection::new("127.0.0.1:1", &s).unwrap().client_config().create::<BaseProducer>();
                if let Err(e) = made {
                    panic!("{protocol} {mechanism}: librdkafka refused the settings: {e}");
                }
            }
        }
        // And a wrong value reaches librdkafka, which names it.
        let mut c = KafkaConnection::plaintext("127.0.0.1:1").client_config();
        c.set("security.protocol", "sasl_plaintext").set("sasl.mechanism", "SCRAM-SHA-1024");
        c.set("sasl.username", "u").set("sasl.password", "p");
        let err = c.create::<BaseProducer>().err().expect("librdkafka refuses an unknown mechanism");
        assert!(err.to_string().contains("SCRAM-SHA-1024") || err.to_string().contains("sasl.mechanism"), "{err}");
    }
}
