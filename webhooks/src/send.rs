//! One HTTP delivery: a signed POST to an endpoint, and what came of it.
//!
//! Addresses are checked where the connection is made: the client's DNS
//! resolver ([`PublicResolver`]) hands the connector only the addresses the
//! operator's [`Policy`] allows, so a name that now resolves inside the
//! network (DNS rebinding) gets no connection at all, and a literal address
//! in the URL is checked again before each attempt. Redirects are not
//! followed: a `3xx` is a failed delivery, never a way to a second target.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::retry::Answer;
use crate::signing::{self, WebhookSecret};
use crate::target::{self, Policy, TargetError};

/// What an attempt came to.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub answer: Answer,
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why it failed, for the deliveries list: empty on success.
    pub error: String,
    /// The target was refused by the SSRF rules.
    pub refused: bool,
}

/// The deliverer's HTTP client.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Policy,
}

impl Sender {
    pub fn new(policy: Policy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicResolver { policy }))
            .user_agent(concat!("Ricochet-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Sender { client, policy })
    }

    /// POSTs `body` to `url`, signed with each of `secrets`, as message
    /// `message_id`.
    pub async fn send(&self, url: &str, secrets: &[&WebhookSecret], message_id: &str, body: Vec<u8>) -> Attempt {
        let started = Instant::now();
        if let Err(e) = target::check_url(url, self.policy) {
            return refused(e, started);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self.client.post(url).header("content-type", "application/json");
        for (name, value) in signing::headers(secrets, message_id, timestamp, &body) {
            request = request.header(name, value);
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let answer = Answer::of_status(status);
                // The body is not read: receivers are asked for a status, and
                // a large answer must not cost the deliverer memory.
                let error = match answer {
                    Answer::Delivered => String::new(),
                    _ => format!("HTTP {status}"),
                };
                Attempt { answer, status: Some(status), latency: started.elapsed(), error, refused: false }
            }
            Err(e) => {
                if let Some(target) = target_error(&e) {
                    return refused(target.clone(), started);
                }
                let error = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    format!("could not connect: {}", root_cause(&e))
                } else {
                    root_cause(&e)
                };
                Attempt { answer: Answer::Failed, status: None, latency: started.elapsed(), error, refused: false }
            }
        }
    }
}

fn refused(e: TargetError, started: Instant) -> Attempt {
    Attempt { answer: Answer::Failed, status: None, latency: started.elapsed(), error: e.to_string(), refused: true }
}

fn target_error(e: &reqwest::Error) -> Option<&TargetError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<TargetError>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// Resolves names with the system's resolver, then lets through only what
/// the policy allows: every address must be allowed, or none is used.
struct PublicResolver {
    policy: Policy,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the URL's; reqwest puts it over this one.
            type BoxError = Box<dyn std::error::Error + Send + Sync>;
            let url = url::Url::parse(&format!("http://{host}/")).map_err(|e| Box::new(e) as BoxError)?;
            let addrs: Vec<SocketAddr> =
                target::resolve_public(&url, policy).await.map_err(|e| Box::new(e) as BoxError)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connection() {
        let sender = Sender::new(Policy::default(), Duration::from_secs(2)).unwrap();
        let secret = WebhookSecret::generate();
        let attempt = sender.send("http://localhost:9/hook", &[&secret], "msg_1", b"{}".to_vec()).await;
        assert!(attempt.refused, "{attempt:?}");
        assert_eq!(attempt.answer, Answer::Failed);
        assert!(attempt.error.contains("127.0.0.1") || attempt.error.contains("::1"), "{}", attempt.error);
        let literal = sender.send("http://10.0.0.5/hook", &[&secret], "msg_1", b"{}".to_vec()).await;
        assert!(literal.refused, "{literal:?}");
    }

    #[tokio::test]
    async fn allowed_private_targets_are_reached() {
        let sender = Sender::new(Policy { allow_private: true }, Duration::from_secs(2)).unwrap();
        let secret = WebhookSecret::generate();
        // Nothing listens on port 9 of loopback: a refused connection, not a refused target.
        let attempt = sender.send("http://localhost:9/hook", &[&secret], "msg_1", b"{}".to_vec()).await;
        assert!(!attempt.refused, "{attempt:?}");
        assert!(attempt.error.starts_with("could not connect"), "{}", attempt.error);
    }
}
