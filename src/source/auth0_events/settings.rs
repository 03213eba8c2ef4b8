//! `[auth0_events]`: the section as written and the validated [`EventsSettings`], with the
//! event types the reader asks for, derived from the policy's triggers.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::checkpoint::parse_time;
use crate::event::Trigger;
use crate::policy::Policy;
use crate::settings::ConfigError;

/// `[auth0_events]` as written. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    start: Option<String>,
    checkpoint_file: Option<PathBuf>,
    earliest_hours: Option<f64>,
    max_inflight: Option<i64>,
    idle_timeout_seconds: Option<f64>,
}

/// Where a reader without a checkpoint starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsStart {
    /// The newest event: what happens from now on (no `from`, as Auth0 starts).
    Latest,
    /// The oldest the stream keeps: `from_timestamp` `earliest_hours` before now (Auth0
    /// documents no retention for the Events API, and no "earliest").
    Earliest,
    /// `from_timestamp` this time.
    At(SystemTime),
}

impl EventsStart {
    pub fn describe(&self, earliest: Duration) -> String {
        match self {
            EventsStart::Latest => "latest (the newest event)".to_owned(),
            EventsStart::Earliest => format!(
                "earliest (from_timestamp {} h before the start)",
                earliest.as_secs_f64() / 3600.0
            ),
            EventsStart::At(at) => format!(
                "from_timestamp {}",
                super::checkpoint::from_timestamp(*at).unwrap_or_else(|| "-".to_owned())
            ),
        }
    }
}

/// Validated `[auth0_events]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsSettings {
    pub checkpoint_file: PathBuf,
    pub start: EventsStart,
    /// How far back `earliest` reaches.
    pub earliest: Duration,
    /// The `event_type`s asked for ([`event_types_for`]).
    pub event_types: Vec<String>,
    /// Events in flight before reading pauses.
    pub max_inflight: usize,
    /// A connection silent this long (not even a heartbeat) is dropped and opened again.
    pub idle_timeout: Duration,
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl EventsSettings {
    /// Validates the section; the event types follow from `policy` and whether a ledger is
    /// configured.
    pub fn from_section(
        section: EventsSection,
        policy: &Policy,
        ledger: bool,
    ) -> Result<EventsSettings, ConfigError> {
        let checkpoint_file = section
            .checkpoint_file
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| {
                invalid(
                    "auth0_events.checkpoint_file",
                    "missing: a file the reader keeps its offset in (on a persistent volume), e.g. /var/lib/auth0-default-roles/events.checkpoint",
                )
            })?;
        let start = match section.start.as_deref().map(str::trim) {
            None | Some("latest") => EventsStart::Latest,
            Some("earliest") => EventsStart::Earliest,
            Some(text) => parse_time(text).map(EventsStart::At).ok_or_else(|| {
                invalid(
                    "auth0_events.start",
                    format!("`{text}` is not \"latest\", \"earliest\" or an RFC 3339 time with its offset (e.g. 2026-11-23T10:00:00Z)"),
                )
            })?,
        };
        let hours = section.earliest_hours.unwrap_or(24.0);
        if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0) {
            return Err(invalid(
                "auth0_events.earliest_hours",
                "must be above 0 and at most 8784 (a year)",
            ));
        }
        let max_inflight = section.max_inflight.unwrap_or(1000);
        if !(1..=100_000).contains(&max_inflight) {
            return Err(invalid(
                "auth0_events.max_inflight",
                "must be between 1 and 100000",
            ));
        }
        let idle = section.idle_timeout_seconds.unwrap_or(90.0);
        if !(idle.is_finite() && (1.0..=3600.0).contains(&idle)) {
            return Err(invalid(
                "auth0_events.idle_timeout_seconds",
                "must be between 1 and 3600 seconds",
            ));
        }
        let event_types = event_types_for(policy, ledger);
        if event_types.is_empty() {
            return Err(invalid(
                "auth0_events",
                "the policy's triggers have no Event Streams event (first_login has none: logins are in the tenant's logs, not in Event Streams): use signup, email_verified or organization_member_added, or another source",
            ));
        }
        Ok(EventsSettings {
            checkpoint_file,
            start,
            earliest: Duration::from_secs_f64(hours * 3600.0),
            event_types,
            max_inflight: usize::try_from(max_inflight).unwrap_or(1000),
            idle_timeout: Duration::from_secs_f64(idle),
        })
    }
}

impl EventsSettings {
    /// `check`'s lines: where it starts, the checkpoint, the event types it asks for.
    pub fn describe(&self) -> String {
        let saved = match super::checkpoint::EventsCheckpointFile::peek(&self.checkpoint_file) {
            Ok(Some(c)) => format!("resumes after offset {}", c.offset),
            Ok(None) => format!(
                "no checkpoint yet: starts {}",
                self.start.describe(self.earliest)
            ),
            Err(err) => format!(
                "checkpoint NOT readable: {}",
                crate::exit::cause_chain(&err)
            ),
        };
        format!(
            "source: the tenant's Events API (GET /api/v2/events, needs read:events), checkpoint {} ({saved}), at most {} events in flight, reconnect after {} s of silence\nsource: event types asked for: {}\n",
            self.checkpoint_file.display(),
            self.max_inflight,
            self.idle_timeout.as_secs_f64(),
            self.event_types.join(", ")
        )
    }

    /// `doctor`'s line. No connection is opened: it would take one of the plan's concurrent
    /// connections (the only one on the Free plan) from a running reader; the scope is
    /// checked from the token with the others.
    pub fn doctor_line(&self) -> String {
        format!(
            "source: the tenant's Events API (checkpoint {}; event types {}; needs read:events, checked from the token above; no connection is opened, as it would take one of the plan's concurrent connections from a running reader)",
            self.checkpoint_file.display(),
            self.event_types.join(", ")
        )
    }
}

/// The Event Streams types a policy needs: `user.created` for `signup`, `user.updated` for
/// `email_verified`, the organization membership events for `organization_member_added` (or a
/// rule giving roles in organizations), and `user.deleted` whenever a ledger is configured
/// (it forgets the user). `first_login` has no event.
pub fn event_types_for(policy: &Policy, ledger: bool) -> Vec<String> {
    let mut types = Vec::new();
    if policy.handles(Trigger::Signup) {
        types.push("user.created");
    }
    if policy.handles(Trigger::EmailVerified) {
        types.push("user.updated");
    }
    if ledger {
        types.push("user.deleted");
    }
    if policy.handles(Trigger::OrganizationMemberAdded) || policy.uses_organizations() {
        types.extend([
            "organization.member.added",
            "organization.member.deleted",
            "organization.member.role.deleted",
        ]);
    }
    types.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, SourceSettings};

    fn config(policy_events: &str, extra: &str) -> Result<Config, crate::settings::ConfigError> {
        let text = format!(
            "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\n\n[source]\ntype = \"auth0_events\"\n\n[auth0_events]\ncheckpoint_file = \"/tmp/e.checkpoint\"\n{extra}\n\n[policy]\nevents = [{policy_events}]\n\n[[policy.rules]]\nname = \"all\"\nassign = [\"Viewer\"]\n"
        );
        Config::from_toml(&text, Path::new("t.toml"), &|_| None)
    }

    fn types(config: &Config) -> Vec<String> {
        match &config.source {
            Some(SourceSettings::Auth0Events(s)) => s.event_types.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn event_types_follow_the_triggers_and_the_ledger() {
        let plain = config("\"signup\", \"first_login\", \"email_verified\"", "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(types(&plain), ["user.created", "user.updated"]);
        let text = "[ledger]\nurl = \"sqlite:///tmp/l.db\"\n";
        let with_ledger = Config::from_toml(
            &format!(
                "{text}[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\n[source]\ntype = \"auth0_events\"\n[auth0_events]\ncheckpoint_file = \"/tmp/e\"\n[policy]\nevents = [\"signup\", \"organization_member_added\"]\n[[policy.rules]]\nname = \"all\"\nassign = [\"Viewer\"]\n"
            ),
            Path::new("t.toml"),
            &|_| None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            types(&with_ledger),
            [
                "user.created",
                "user.deleted",
                "organization.member.added",
                "organization.member.deleted",
                "organization.member.role.deleted"
            ]
        );
        assert!(plain
            .source
            .as_ref()
            .is_some_and(|s| matches!(s, SourceSettings::Auth0Events(e) if e.describe().contains("event types asked for: user.created, user.updated"))));
    }

    #[test]
    fn errors_name_the_key() {
        let err = |events: &str, extra: &str| match config(events, extra) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(err("\"first_login\"", "").contains("auth0_events"));
        assert!(err("\"signup\"", "start = \"yesterday\"").contains("auth0_events.start"));
        assert!(err("\"signup\"", "max_inflight = 0").contains("auth0_events.max_inflight"));
        assert!(err("\"signup\"", "earliest_hours = -1").contains("auth0_events.earliest_hours"));
        assert!(err("\"signup\"", "nonsense = 1").contains("nonsense"));
        let at = config("\"signup\"", "start = \"2026-12-01T00:00:00+01:00\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            at.source,
            Some(SourceSettings::Auth0Events(super::EventsSettings {
                start: super::EventsStart::At(_),
                ..
            }))
        ));
    }
}
