//! The rules between sections, checked at load: a configuration `check` accepts is one `run`
//! and `ingest` accept, except for what only the network or the run's environment can tell (a
//! reachable broker, a writable dead-letter topic, a free checkpoint, the ledger, a secret or
//! `[auth0]` injected at run time).

use super::{invalid, Config, ConfigError, IngestMode, SourceSettings};

impl Config {
    /// Every static rule between sections: the error names the key at fault. Run at load, and
    /// again by `App::build` for a configuration built in code.
    pub fn check_sections(&self) -> Result<(), ConfigError> {
        let bridge = self
            .ingest
            .as_ref()
            .is_some_and(|i| i.mode == IngestMode::Kafka);
        if bridge && !matches!(self.source, Some(SourceSettings::Kafka(_))) {
            return Err(bridge_without_kafka());
        }
        if self.backstop.is_some() {
            if matches!(self.source, Some(SourceSettings::Auth0Logs(_))) {
                return Err(invalid(
                    "backstop",
                    "runs beside a source that assigns (kafka, sqs or auth0_events with `run`, `ingest` in direct mode): the auth0_logs source reads the same logs and needs none; remove [backstop]",
                ));
            }
            if bridge {
                return Err(invalid(
                    "backstop",
                    "ingest.mode = \"kafka\" only bridges into Kafka, and `ingest` refuses a backstop beside it: the backstop belongs in the configuration of the `run` instance that consumes the topic",
                ));
            }
            if self.source.is_none() && self.ingest.is_none() {
                return Err(invalid(
                    "backstop",
                    "runs beside a source, and there is none: add [source] (kafka, sqs or auth0_events) for `run`, or [ingest] mode = \"direct\" for `ingest`",
                ));
            }
        }
        Ok(())
    }

    /// What `check` warns of: what `run` or `ingest` needs that the run's environment may
    /// still give (`[auth0]` from `AUTH0_DOMAIN` and `AUTH0_CLIENT_ID`).
    pub fn section_warnings(&self) -> Vec<String> {
        let bridge_only = self
            .ingest
            .as_ref()
            .is_some_and(|i| i.mode == IngestMode::Kafka)
            && matches!(self.source, Some(SourceSettings::Kafka(_)));
        let direct = self
            .ingest
            .as_ref()
            .is_some_and(|i| i.mode == IngestMode::Direct);
        let assigns = (self.source.is_some() && !bridge_only) || direct || self.backstop.is_some();
        if self.auth0.is_none() && assigns {
            vec![format!(
                "{}: `run` and `ingest` in direct mode need it (unless {} and {} are set where they run)",
                ConfigError::NoAuth0,
                super::DOMAIN_ENV,
                super::CLIENT_ID_ENV
            )]
        } else {
            Vec::new()
        }
    }
}

/// `ingest.mode = "kafka"` without a `[kafka]` source to bridge into.
pub(crate) fn bridge_without_kafka() -> ConfigError {
    invalid(
        "ingest.mode",
        "\"kafka\" bridges into [kafka] topic: add a [kafka] section with brokers and topic (and no [source] type other than \"kafka\")",
    )
}
