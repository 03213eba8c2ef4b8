//! The `[sqs]` settings and the SQS client: credentials from the standard chain, the region
//! of the queue URL, HTTPS through the TLS stack reqwest already brings.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::SharedHttpClient;
use aws_sdk_sqs::Client;

/// Validated `[sqs]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsSettings {
    /// The queue EventBridge delivers to, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs`.
    pub queue_url: String,
    /// Messages asked for per `ReceiveMessage` (1-10).
    pub max_messages: i32,
    /// Long-polling wait per `ReceiveMessage` (0-20 s).
    pub wait_time_seconds: i32,
    /// Visibility timeout set on receive and on every extension (1-43200 s).
    pub visibility_timeout_seconds: i32,
    /// Concurrent receive loops.
    pub concurrency: usize,
    /// Most messages received and not yet finished; receiving waits beyond it.
    pub max_inflight: usize,
    /// How long SIGTERM/SIGINT waits for in-flight messages before flushing deletes and exiting.
    pub shutdown_grace: Duration,
}

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum SqsRunError {
    #[error("no AWS region: set AWS_REGION (or a region in the AWS profile), or use a queue URL of the form https://sqs.REGION.amazonaws.com/ACCOUNT/NAME")]
    NoRegion,
}

/// The region of an AWS queue URL: `https://sqs.eu-west-1.amazonaws.com/...` (or the legacy
/// `https://eu-west-1.queue.amazonaws.com/...`) gives `eu-west-1`; other hosts give `None`.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?.split(':').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => *region,
        [region, "queue", "amazonaws", ..] => *region,
        _ => return None,
    };
    let plausible = region.contains('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    plausible.then(|| region.to_owned())
}

/// The HTTP client of every AWS call: hyper with rustls and ring (the TLS stack reqwest already
/// brings), the platform's root certificates. Plain `http://` works too (emulators).
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The SQS client: credentials from the standard chain (environment, profile, web identity,
/// ECS/EKS, IMDS), `AWS_ENDPOINT_URL_SQS` honoured, HTTPS through [`https_client`]. The region
/// of an AWS queue URL wins (a queue lives in one region); otherwise the chain's region.
pub async fn client(settings: &SqsSettings) -> Result<Client, SqsRunError> {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await;
    let mut config = aws_sdk_sqs::config::Builder::from(&shared);
    let chain_region = shared.region().map(|r| r.as_ref().to_owned());
    let region = match (region_from_queue_url(&settings.queue_url), chain_region) {
        (Some(from_url), chain) => {
            if chain.as_deref().is_some_and(|c| c != from_url) {
                tracing::warn!(
                    queue_region = %from_url, configured_region = chain.as_deref().unwrap_or("-"),
                    "the queue URL names another region than the AWS configuration; using the queue's"
                );
            }
            config = config.region(Region::new(from_url.clone()));
            from_url
        }
        (None, Some(chain)) => chain,
        (None, None) => return Err(SqsRunError::NoRegion),
    };
    tracing::info!(%region, queue_url = %settings.queue_url, "SQS client ready");
    Ok(Client::from_conf(config.build()))
}

#[cfg(test)]
mod tests {
    use super::region_from_queue_url;

    #[test]
    fn the_region_comes_from_aws_queue_urls_only() {
        assert_eq!(
            region_from_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs")
                .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_queue_url("https://us-east-2.queue.amazonaws.com/123456789012/q")
                .as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region_from_queue_url("https://sqs.cn-north-1.amazonaws.com.cn/1/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region_from_queue_url("http://127.0.0.1:5055/123456789012/q"),
            None
        );
        assert_eq!(region_from_queue_url("https://sqs.amazonaws.com/1/q"), None);
    }
}
