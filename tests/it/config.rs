//! Loading the TOML configuration: defaults, environment overrides, secrets, and errors that
//! name the key.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use auth0_default_roles::config::{Config, ConfigError};

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml(text, Path::new("t.toml"), &move |k| env.get(k).cloned())
}

#[test]
fn example_config_is_valid() {
    let config = Config::load(Path::new("config/example.toml")).unwrap_or_else(|e| panic!("{e}"));
    let auth0 = config.require_auth0().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth0.domain, "example.eu.auth0.com");
    assert_eq!(auth0.base_url, "https://example.eu.auth0.com");
    assert_eq!(auth0.audience(), "https://example.eu.auth0.com/api/v2/");
    assert_eq!(config.policy.rules().len(), 3);
}

#[test]
fn defaults() {
    let config = load(
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let auth0 = config.auth0.unwrap_or_else(|| panic!("auth0 present"));
    assert_eq!(auth0.requests_per_second, 2.0);
    assert_eq!(auth0.burst, 2);
    assert_eq!(config.dedup.ttl, Duration::from_secs(86_400));
    assert_eq!(config.dedup.max_entries, 1_000_000);
    assert_eq!(config.policy.events().count(), 3);
    assert!(load("", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .auth0
        .is_none());
}

#[test]
fn base_url_replaces_the_host_but_not_the_audience() {
    let config = load(
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nbase_url = \"http://127.0.0.1:8080/\"\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let auth0 = config.auth0.unwrap_or_else(|| panic!("auth0 present"));
    assert_eq!(auth0.base_url, "http://127.0.0.1:8080");
    assert_eq!(auth0.audience(), "https://t.auth0.com/api/v2/");
}

#[test]
fn environment_overrides() {
    let config = load(
        "[auth0]\ndomain = \"file.auth0.com\"\nclient_id = \"file\"\n",
        &[
            ("AUTH0_DOMAIN", "env.auth0.com"),
            ("AUTH0_CLIENT_ID", "env-client"),
            ("AUTH0_BASE_URL", "http://127.0.0.1:9"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let auth0 = config.auth0.unwrap_or_else(|| panic!("auth0 present"));
    assert_eq!(auth0.domain, "env.auth0.com");
    assert_eq!(auth0.client_id, "env-client");
    assert_eq!(auth0.base_url, "http://127.0.0.1:9");
    let secret = load(
        "[auth0]\ndomain = \"file.auth0.com\"\nclient_id = \"file\"\n",
        &[("AUTH0_CLIENT_SECRET", "s3cret")],
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .require_auth0()
    .and_then(|auth0| auth0.client_secret())
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secret.expose(), "s3cret");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
}

#[test]
fn secret_from_file_or_missing() {
    let dir = std::env::temp_dir().join(format!("adr-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("secret");
    std::fs::write(&path, "from-file\n").unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
        path.display()
    );
    let config = load(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
    let auth0 = config.auth0.unwrap_or_else(|| panic!("auth0 present"));
    assert_eq!(
        auth0
            .client_secret()
            .map(|s| s.expose().to_owned())
            .ok()
            .as_deref(),
        Some("from-file")
    );
    let missing = load(
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = missing
        .auth0
        .unwrap_or_else(|| panic!("auth0 present"))
        .client_secret();
    assert!(matches!(err, Err(ConfigError::NoSecret)));
    let _ = std::fs::remove_dir_all(dir);
}

fn error(text: &str) -> String {
    match load(text, &[]) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_key() {
    let secret =
        error("[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nclient_secret = \"oops\"\n");
    assert!(
        secret.starts_with("auth0.client_secret: secrets never go in the config file"),
        "{secret}"
    );
    assert!(
        !secret.contains("oops"),
        "the secret must not be echoed: {secret}"
    );
    let unknown =
        error("[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nrequest_per_second = 3\n");
    assert!(unknown.contains("request_per_second"), "{unknown}");
    assert!(unknown.contains("line 4"), "{unknown}");
    let section = error("[kafak]\nbrokers = \"x\"\n");
    assert!(section.contains("kafak"), "{section}");
    let domain = error("[auth0]\ndomain = \"https://t.auth0.com\"\nclient_id = \"c\"\n");
    assert!(domain.starts_with("auth0.domain:"), "{domain}");
    let no_domain = error("[auth0]\nclient_id = \"c\"\n");
    assert!(
        no_domain.starts_with("auth0.domain: missing"),
        "{no_domain}"
    );
    let rate =
        error("[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nrequests_per_second = 0\n");
    assert!(rate.starts_with("auth0.requests_per_second:"), "{rate}");
    let base = error(
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nbase_url = \"127.0.0.1:80\"\n",
    );
    assert!(base.starts_with("auth0.base_url:"), "{base}");
    let ttl = error("[dedup]\nttl_seconds = 0\n");
    assert!(ttl.starts_with("dedup.ttl_seconds:"), "{ttl}");
    let syntax = error("[auth0\n");
    assert!(syntax.contains("t.toml"), "{syntax}");
}

#[test]
fn kafka_source_defaults_and_properties() {
    use auth0_default_roles::config::SourceSettings;
    let config = load(
        r#"
[source]
type = "kafka"
[kafka]
brokers = "k1:9092, k2:9092"
topic = "auth0-logs"
group_id = "roles"
dead_letter_topic = "auth0-logs-dlq"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"session.timeout.ms" = 10000
"enable.ssl.certificate.verification" = true
[metrics]
listen = "127.0.0.1:9999"
"#,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceSettings::Kafka(k)) = config.source else {
        panic!("kafka source expected")
    };
    assert_eq!(k.brokers, vec!["k1:9092", "k2:9092"]);
    assert_eq!(k.topics, vec!["auth0-logs"]);
    assert_eq!(k.group_id, "roles");
    assert_eq!(k.dead_letter_topic.as_deref(), Some("auth0-logs-dlq"));
    assert_eq!(k.max_inflight, 1000);
    assert_eq!(k.commit_interval, Duration::from_secs(5));
    assert_eq!(k.shutdown_grace, Duration::from_secs(20));
    // Half the session timeout.
    assert_eq!(k.rebalance_drain, Duration::from_secs(5));
    assert_eq!(k.properties["session.timeout.ms"], "10000");
    assert_eq!(k.properties["enable.ssl.certificate.verification"], "true");
    assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9999");

    // The consumer gets the service's settings on top of the user's properties.
    let consumer = auth0_default_roles::source::kafka::consumer_config(&k);
    assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
    assert_eq!(
        consumer.get("partition.assignment.strategy"),
        Some("cooperative-sticky")
    );
    assert_eq!(consumer.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
    assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
    let producer = auth0_default_roles::source::kafka::producer_config(&k);
    assert_eq!(producer.get("enable.idempotence"), Some("true"));
    assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(
        producer.get("session.timeout.ms"),
        None,
        "consumer-only property"
    );
}

#[test]
fn kafka_errors_name_the_key() {
    let base = "[source]\ntype = \"kafka\"\n[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\n";
    let cases = [
        ("[source]\ntype = \"kafka\"\n", "kafka: source.type is \"kafka\" but there is no [kafka] section"),
        ("[source]\ntype = \"rabbit\"\n", "source.type"),
        ("[kafka]\ntopic = \"t\"\ngroup_id = \"g\"\n", "kafka.brokers"),
        ("[kafka]\nbrokers = \"kafka://k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\n", "kafka.brokers"),
        ("[kafka]\nbrokers = \"k:9092\"\ngroup_id = \"g\"\n", "kafka.topic"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ntopics = [\"u\"]\ngroup_id = \"g\"\n", "kafka.topics"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\ndead_letter_topic = \"t\"\n", "kafka.dead_letter_topic"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\nmax_inflight = 0\n", "kafka.max_inflight"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\n[kafka.properties]\n\"enable.auto.offset.store\" = true\n", "enable.auto.offset.store"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\n[kafka.properties]\n\"group.id\" = \"x\"\n", "use kafka.group_id"),
        ("[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\nrebalance_drain_seconds = 60\n[kafka.properties]\n\"session.timeout.ms\" = 45000\n", "kafka.rebalance_drain_seconds"),
        ("[metrics]\nlisten = \"9464\"\n", "metrics.listen"),
    ];
    for (text, expected) in cases {
        match load(text, &[]) {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => assert!(
                err.to_string().contains(expected),
                "{text}\n=> {err}\n(expected {expected})"
            ),
        }
    }
    assert!(load(base, &[]).is_ok());
    assert!(load(&format!("{base}unknown_key = 1\n"), &[]).is_err());
}

#[test]
fn sqs_source_defaults() {
    use auth0_default_roles::config::SourceSettings;
    let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs";
    let config = load(
        &format!("[source]\ntype = \"sqs\"\n[sqs]\nqueue_url = \"{url}\"\n"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceSettings::Sqs(q)) = config.source else {
        panic!("sqs source expected")
    };
    assert_eq!(q.queue_url, url);
    assert_eq!(q.max_messages, 10);
    assert_eq!(q.wait_time_seconds, 20);
    assert_eq!(q.visibility_timeout_seconds, 60);
    assert_eq!(q.concurrency, 2);
    assert_eq!(q.max_inflight, 100);
    assert_eq!(q.shutdown_grace, Duration::from_secs(20));

    // An [sqs] section alone is enough; every key can be set.
    let config = load(
        "[sqs]\nqueue_url = \"http://127.0.0.1:5055/123456789012/q\"\nmax_messages = 1\nwait_time_seconds = 0\nvisibility_timeout_seconds = 43200\nconcurrency = 50\nmax_inflight = 1\nshutdown_grace_seconds = 0.5\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceSettings::Sqs(q)) = config.source else {
        panic!("sqs source expected")
    };
    assert_eq!(
        (
            q.max_messages,
            q.wait_time_seconds,
            q.visibility_timeout_seconds
        ),
        (1, 0, 43_200)
    );
    assert_eq!((q.concurrency, q.max_inflight), (50, 1));
    assert_eq!(q.shutdown_grace, Duration::from_millis(500));

    // [source] type picks one when both sections are present.
    let both = "[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ngroup_id = \"g\"\n[sqs]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n";
    let config =
        load(&format!("[source]\ntype = \"sqs\"\n{both}"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(config.source, Some(SourceSettings::Sqs(_))));
    let config =
        load(&format!("[source]\ntype = \"kafka\"\n{both}"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(config.source, Some(SourceSettings::Kafka(_))));
    assert!(error(both).starts_with("source.type: missing"));
}

#[test]
fn sqs_errors_name_the_key() {
    let url = "queue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/q\"\n";
    let cases = [
        (
            "[source]\ntype = \"sqs\"\n".to_owned(),
            "sqs: source.type is \"sqs\" but there is no [sqs] section",
        ),
        (
            "[source]\ntype = \"rabbit\"\n".to_owned(),
            "use \"kafka\" or \"sqs\"",
        ),
        (
            "[sqs]\nmax_messages = 5\n".to_owned(),
            "sqs.queue_url: missing",
        ),
        (
            "[sqs]\nqueue_url = \"sqs.us-east-1.amazonaws.com/1/q\"\n".to_owned(),
            "sqs.queue_url",
        ),
        (
            "[sqs]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com\"\n".to_owned(),
            "sqs.queue_url",
        ),
        (
            "[sqs]\nqueue_url = \"https:///1/q\"\n".to_owned(),
            "sqs.queue_url",
        ),
        (
            format!("[sqs]\n{url}max_messages = 0\n"),
            "sqs.max_messages: must be between 1 and 10",
        ),
        (
            format!("[sqs]\n{url}max_messages = 11\n"),
            "sqs.max_messages",
        ),
        (
            format!("[sqs]\n{url}wait_time_seconds = 21\n"),
            "sqs.wait_time_seconds: must be between 0 and 20",
        ),
        (
            format!("[sqs]\n{url}wait_time_seconds = -1\n"),
            "sqs.wait_time_seconds",
        ),
        (
            format!("[sqs]\n{url}visibility_timeout_seconds = 0\n"),
            "sqs.visibility_timeout_seconds",
        ),
        (
            format!("[sqs]\n{url}visibility_timeout_seconds = 43201\n"),
            "sqs.visibility_timeout_seconds",
        ),
        (
            format!("[sqs]\n{url}concurrency = 0\n"),
            "sqs.concurrency: must be between 1 and 50",
        ),
        (format!("[sqs]\n{url}concurrency = 51\n"), "sqs.concurrency"),
        (
            format!("[sqs]\n{url}max_inflight = 5\n"),
            "sqs.max_inflight: must be at least sqs.max_messages (10)",
        ),
        (
            format!("[sqs]\n{url}shutdown_grace_seconds = -1\n"),
            "sqs.shutdown_grace_seconds",
        ),
        (
            format!("[sqs]\n{url}visibility_timeout = 30\n"),
            "unknown field `visibility_timeout`",
        ),
        (
            format!("[sqs]\n{url}max_messages = \"10\"\n"),
            "max_messages",
        ),
    ];
    for (text, expected) in cases {
        match load(&text, &[]) {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => assert!(
                err.to_string().contains(expected),
                "{text}\n=> {err}\n(expected {expected})"
            ),
        }
    }
}

#[test]
fn the_commented_sqs_example_is_valid() {
    use auth0_default_roles::config::SourceSettings;
    let example = std::fs::read_to_string("config/example.toml").unwrap_or_else(|e| panic!("{e}"));
    let start = example
        .find("# [sqs]\n")
        .unwrap_or_else(|| panic!("no commented [sqs] section in the example"));
    let section: Vec<&str> = example[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| *l == "[sqs]" || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .collect();
    assert!(section.len() >= 8, "{section:?}");
    let text = format!("[source]\ntype = \"sqs\"\n{}\n", section.join("\n"));
    let config = load(&text, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let Some(SourceSettings::Sqs(q)) = config.source else {
        panic!("sqs source expected")
    };
    assert_eq!(
        q.queue_url,
        "https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs"
    );
    assert_eq!(q.visibility_timeout_seconds, 60);
}

#[test]
fn the_forum_policy_in_the_example_loads_and_does_what_the_forum_asked() {
    use auth0_default_roles::event::{decode, Trigger};
    use auth0_default_roles::policy::{Evaluation, Profile};
    let text = test_harness::forum_policy();
    let policy = load(&text, &[])
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .policy;
    assert_eq!(policy.rules().len(), 5);
    assert!(policy.uses_client_metadata() && policy.uses_has_roles());
    let login = |json: &str| {
        decode(json.as_bytes())
            .remove(0)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let roles_of = |event: &auth0_default_roles::event::LogEvent, profile: &Profile| match policy
        .evaluate(Trigger::FirstLogin, event, Some(profile))
    {
        Evaluation::Assign(d) => {
            let mut all = d.roles;
            all.extend(d.client_roles.into_iter().map(|c| c.name));
            all
        }
        other => panic!("expected roles, got {other:?}"),
    };
    let no_roles = Profile {
        roles: Some(Vec::new()),
        client_metadata: Some(
            [("default_role".to_owned(), "Store-User".to_owned())]
                .into_iter()
                .collect(),
        ),
        ..Profile::default()
    };
    let staff = login(
        r#"{"type":"s","user_id":"waad|1","connection":"corp-azure-ad","client_id":"store","details":{"stats":{"loginsCount":1}}}"#,
    );
    assert_eq!(
        roles_of(&staff, &no_roles),
        ["Viewer", "INTERNAL", "Store-User"]
    );
    let customer = login(
        r#"{"type":"s","user_id":"auth0|2","connection":"Username-Password-Authentication","client_id":"store","user_name":"c@shop.example","details":{"stats":{"loginsCount":1}}}"#,
    );
    assert_eq!(
        roles_of(&customer, &no_roles),
        ["Viewer", "CUSTOMER", "Store-User"]
    );
    let already = Profile {
        roles: Some(vec!["rol_existing".to_owned()]),
        ..no_roles.clone()
    };
    assert_eq!(roles_of(&customer, &already), ["CUSTOMER", "Store-User"]);
}
