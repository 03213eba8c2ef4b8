//! The tenant's log streams (`/api/v2/log-streams`, scopes `read:log_streams`,
//! `create:log_streams`, `update:log_streams`): listing, creating and changing them, and what a
//! stream must deliver for a policy (the category filters of its triggers, the fields its rules
//! read left in clear). Used by `doctor` and `setup log-stream`; the service itself only reads
//! one stream's status, with `log_stream_id` (`source/auth0_logs/client.rs`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{encode_path_segment, MgmtClient, MgmtError, Operation};
use crate::event::Trigger;
use crate::policy::{Condition, Policy};

/// The sink key holding the webhook's `Authorization` value: never printed or logged.
pub const AUTHORIZATION_KEY: &str = "httpAuthorization";

/// A log stream as the Management API returns it. Its `Debug` leaves the sink out (it may
/// hold the webhook's Authorization token).
#[derive(Clone, PartialEq, Deserialize)]
pub struct LogStream {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `http`, `eventbridge`, `datadog` ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `active`, `paused` or `suspended`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub sink: Map<String, Value>,
    /// Category filters; none means every category is delivered.
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub pii_config: Option<PiiConfig>,
    /// A prioritized stream (`isPriority: true`): Auth0 forces its filters to the security
    /// category and ignores later filter changes, so it never delivers `ss`, `s` or `sv`.
    #[serde(rename = "isPriority", default)]
    pub is_priority: bool,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("filters", &self.filters)
            .field("pii_config", &self.pii_config)
            .finish_non_exhaustive()
    }
}

/// `{"type": "category", "name": "auth.signup.success"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Filter {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// Fields Auth0 masks or hashes before sending (`log_fields`: `email`, `username` ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PiiConfig {
    #[serde(default)]
    pub log_fields: Vec<String>,
    #[serde(default)]
    pub method: Option<String>,
}

impl LogStream {
    /// A sink value as text (`None` when absent or not a string).
    pub fn sink_str(&self, key: &str) -> Option<&str> {
        self.sink.get(key).and_then(Value::as_str)
    }

    /// The category names of its filters.
    pub fn categories(&self) -> BTreeSet<&str> {
        self.filters
            .iter()
            .filter(|f| f.kind == "category")
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The categories of `needed` this stream does not deliver (a stream without filters
    /// delivers every category).
    pub fn missing_categories(&self, needed: &BTreeSet<&'static str>) -> Vec<&'static str> {
        if self.filters.is_empty() {
            return Vec::new();
        }
        let has = self.categories();
        needed
            .iter()
            .copied()
            .filter(|c| !has.contains(c))
            .collect()
    }

    /// The fields of `read` that this stream masks or hashes, with the method.
    pub fn obscured_fields(&self, read: &[&'static str]) -> Vec<(&'static str, String)> {
        let Some(pii) = &self.pii_config else {
            return Vec::new();
        };
        let method = pii.method.clone().unwrap_or_else(|| "mask".to_owned());
        read.iter()
            .copied()
            .filter(|f| pii.log_fields.iter().any(|l| l == f))
            .map(|f| (f, method.clone()))
            .collect()
    }
}

/// The log category that carries a trigger's events: `ss` is Signup - Success, `s`, `scoa` and
/// `sens` are Login - Success, `sv` is a user success event. `organization_member_added` comes
/// from Event Streams only: no log category carries it.
pub fn category_of(trigger: Trigger) -> Option<&'static str> {
    match trigger {
        Trigger::Signup => Some("auth.signup.success"),
        Trigger::FirstLogin => Some("auth.login.success"),
        Trigger::EmailVerified => Some("user.success"),
        Trigger::OrganizationMemberAdded => None,
    }
}

/// Exactly the categories the policy's triggers need.
pub fn categories_for(policy: &Policy) -> BTreeSet<&'static str> {
    policy.events().filter_map(category_of).collect()
}

/// The PII fields (in Auth0's `log_fields` terms) the policy reads from an event: the email
/// (and the user name, its fallback) for `email_domain`.
pub fn fields_read(policy: &Policy) -> Vec<&'static str> {
    let reads_email = policy.rules().iter().any(|r| {
        r.when
            .iter()
            .chain(&r.unless)
            .any(|c| matches!(c, Condition::EmailDomain(_)))
    });
    if reads_email {
        vec!["email", "username"]
    } else {
        Vec::new()
    }
}

fn protocol(operation: Operation, err: serde_json::Error) -> MgmtError {
    MgmtError::Protocol {
        operation: operation.as_str(),
        detail: err.to_string(),
    }
}

impl MgmtClient {
    /// `GET /api/v2/log-streams`: every stream of the tenant.
    pub async fn list_log_streams(&self) -> Result<Vec<LogStream>, MgmtError> {
        let op = Operation::GetLogStreams;
        let answer = self
            .request(op, Method::GET, "/api/v2/log-streams", None)
            .await?;
        serde_json::from_slice(&answer.body).map_err(|e| protocol(op, e))
    }

    /// `POST /api/v2/log-streams` with `body`; the stream as created.
    ///
    /// A creation is not idempotent: when the answer to the POST is lost (a reset connection,
    /// a timeout after the request left), the streams are listed again and a stream of the
    /// body's name is the one created; only when there is none is the POST sent again. So a
    /// retry never makes a second stream.
    pub async fn create_log_stream(&self, body: &Value) -> Result<LogStream, MgmtError> {
        let op = Operation::CreateLogStream;
        let name = body.get("name").and_then(Value::as_str);
        let options = super::RequestOptions {
            lost_answer_is_error: true,
            ..Default::default()
        };
        let mut lost = 0u32;
        loop {
            let sent = self
                .request_with(op, Method::POST, "/api/v2/log-streams", Some(body), options)
                .await;
            match sent {
                Ok(answer) => {
                    return serde_json::from_slice(&answer.body).map_err(|e| protocol(op, e))
                }
                Err(MgmtError::AnswerLost { cause, .. }) => {
                    lost += 1;
                    tracing::warn!(%cause, attempt = lost, "the answer to the log stream's creation was lost; listing the streams before sending it again");
                    // The listing is retried like any read; the whole command has its timeout.
                    tokio::time::sleep(std::time::Duration::from_millis(
                        250 * u64::from(lost.min(8)),
                    ))
                    .await;
                    let streams = self.list_log_streams().await?;
                    if let Some(created) = streams
                        .into_iter()
                        .find(|s| name.is_some_and(|name| s.name == name))
                    {
                        return Ok(created);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `PATCH /api/v2/log-streams/{id}` with `body`; the stream as it is now.
    pub async fn update_log_stream(&self, id: &str, body: &Value) -> Result<LogStream, MgmtError> {
        let op = Operation::UpdateLogStream;
        let path = format!("/api/v2/log-streams/{}", encode_path_segment(id));
        let answer = self.request(op, Method::PATCH, &path, Some(body)).await?;
        serde_json::from_slice(&answer.body).map_err(|e| protocol(op, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(filters: &[&str], pii: Option<(&[&str], &str)>) -> LogStream {
        LogStream {
            id: "lst_1".to_owned(),
            name: "s".to_owned(),
            kind: "http".to_owned(),
            status: "active".to_owned(),
            sink: Map::new(),
            filters: filters
                .iter()
                .map(|n| Filter {
                    kind: "category".to_owned(),
                    name: (*n).to_owned(),
                })
                .collect(),
            pii_config: pii.map(|(fields, method)| PiiConfig {
                log_fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                method: Some(method.to_owned()),
            }),
            is_priority: false,
        }
    }

    #[test]
    fn a_stream_without_filters_delivers_every_category() {
        let needed: BTreeSet<&str> = ["auth.signup.success", "user.success"].into();
        assert!(stream(&[], None).missing_categories(&needed).is_empty());
        assert_eq!(
            stream(&["auth.signup.success", "auth.login.fail"], None).missing_categories(&needed),
            vec!["user.success"]
        );
    }

    #[test]
    fn obscured_fields_name_the_method() {
        let s = stream(&[], Some((&["email", "phone"], "hash")));
        assert_eq!(
            s.obscured_fields(&["email", "username"]),
            vec![("email", "hash".to_owned())]
        );
        assert!(stream(&[], None).obscured_fields(&["email"]).is_empty());
    }

    #[test]
    fn debug_leaves_the_sink_out() {
        let mut s = stream(&[], None);
        s.sink
            .insert(AUTHORIZATION_KEY.to_owned(), Value::from("Bearer hush"));
        assert!(!format!("{s:?}").contains("hush"));
    }
}
