//! The deployment files: docker-compose.yml, the Dockerfile, config/prometheus.yml,
//! config/alerts.yml, the Grafana provisioning and dashboard, and deploy/kubernetes/. No Docker
//! engine or cluster is needed: every YAML file (multi-document aware) and the dashboard JSON
//! must parse, the files must agree with each other and with the service's config, and every
//! `auth0_default_roles_*` metric the alerts and the dashboard use must be one the service
//! exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auth0_default_roles::config::{Config, KafkaSettings, SourceSettings};
use auth0_default_roles::metrics::Metrics;
use serde::Deserialize;
use serde_yaml_ng::Value;

const PREFIX: &str = "auth0_default_roles_";
const K8S_DIR: &str = "deploy/kubernetes";
/// Where the image's default command reads the config (Dockerfile CMD).
const CONFIG_PATH: &str = "/etc/auth0-default-roles/config.toml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every document of a YAML file (`---` separated), empty documents left out.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: document {i}: {e}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    assert!(!docs.is_empty(), "{rel}: no YAML document");
    docs
}

/// The one document of a YAML file.
fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// The keys of a dotted path; a backslash keeps a dot inside a key (`"data.config\\.toml"`).
fn path_keys(path: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                chars.next();
                key.push('.');
            }
            '.' => keys.push(std::mem::take(&mut key)),
            _ => key.push(c),
        }
    }
    keys.push(key);
    keys
}

/// The value at a dotted path (`spec.template.spec`); panics naming the file and the path.
fn at<'a>(v: &'a Value, path: &str, file: &str) -> &'a Value {
    let mut cur = v;
    for key in path_keys(path) {
        cur = cur
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{file}: `{path}` is missing (at `{key}`)"));
    }
    cur
}

fn text_at<'a>(v: &'a Value, path: &str, file: &str) -> &'a str {
    at(v, path, file)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not a string"))
}

fn seq_at<'a>(v: &'a Value, path: &str, file: &str) -> &'a Vec<Value> {
    at(v, path, file)
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not a list"))
}

fn u64_at(v: &Value, path: &str, file: &str) -> u64 {
    at(v, path, file)
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: `{path}` is not a whole number"))
}

fn parse_config(text: &str, origin: &str) -> Config {
    Config::from_toml(text, Path::new(origin), &|_| None)
        .unwrap_or_else(|e| panic!("{origin}: not a valid service config: {e}"))
}

fn kafka_of<'a>(config: &'a Config, origin: &str) -> &'a KafkaSettings {
    match &config.source {
        Some(SourceSettings::Kafka(k)) => k,
        _ => panic!("{origin}: the service config has no Kafka source"),
    }
}

/// Files under a directory (relative to the crate root, sorted) with one of these extensions;
/// every file when `exts` is empty.
fn files_under(rel: &str, exts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(rel)];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{dir:?}: {e}")).path();
            if path.is_dir() {
                stack.push(path);
            } else if exts.is_empty()
                || exts
                    .iter()
                    .any(|ext| path.extension().is_some_and(|e| e == *ext))
            {
                let relative = path
                    .strip_prefix(root())
                    .unwrap_or_else(|e| panic!("{path:?}: {e}"));
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// Every YAML file the deployment consists of.
fn yaml_files() -> Vec<String> {
    let mut files = vec![
        "docker-compose.yml".to_owned(),
        "config/prometheus.yml".to_owned(),
        "config/alerts.yml".to_owned(),
    ];
    files.extend(files_under("config/grafana/provisioning", &["yml", "yaml"]));
    files.extend(files_under(K8S_DIR, &["yml", "yaml"]));
    files
}

fn dashboard() -> serde_json::Value {
    let rel = "config/grafana/dashboards/auth0-default-roles.json";
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every Prometheus expression of the dashboard's panels, with the panel title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_owned()));
            }
        }
    }
    out
}

fn alert_rules() -> Vec<Value> {
    let rel = "config/alerts.yml";
    let doc = yaml(rel);
    let mut rules = Vec::new();
    for group in seq_at(&doc, "groups", rel) {
        rules.extend(seq_at(group, "rules", rel).iter().cloned());
    }
    rules
}

/// `auth0_default_roles_*` names in a text (PromQL, or a description quoting a metric).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let starts_word = i == 0
            || !rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if starts_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// A histogram's series name (`_bucket`, `_sum`, `_count`) mapped to its family; other names
/// unchanged.
fn family_of(name: &str, exported: &BTreeSet<String>) -> String {
    if exported.contains(name) {
        return name.to_owned();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// Whole seconds of a Prometheus/compose duration such as `15m`, `30s`, `1h30m`.
fn duration_seconds(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_string
}

#[test]
fn every_yaml_file_and_the_dashboard_parse() {
    let files = yaml_files();
    for required in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/scaledobject.yaml",
        "deploy/kubernetes/secret.example.yaml",
        "deploy/kubernetes/kustomization.yaml",
    ] {
        assert!(files.iter().any(|f| f == required), "{required} is missing");
    }
    assert!(
        files
            .iter()
            .any(|f| f.contains("provisioning/datasources/")),
        "no Grafana datasource provisioning file"
    );
    assert!(
        files.iter().any(|f| f.contains("provisioning/dashboards/")),
        "no Grafana dashboard provisioning file"
    );
    for file in &files {
        for (i, doc) in yaml_docs(file).iter().enumerate() {
            assert!(doc.is_mapping(), "{file}: document {i} is not a mapping");
            if file.starts_with(K8S_DIR) {
                text_at(doc, "apiVersion", file);
                text_at(doc, "kind", file);
                if text_at(doc, "kind", file) != "Kustomization" {
                    text_at(doc, "metadata.name", file);
                }
            }
        }
    }
    // Everything in deploy/kubernetes is YAML.
    let all = files_under(K8S_DIR, &[]);
    let yamls = files_under(K8S_DIR, &["yaml", "yml"]);
    assert_eq!(all, yamls, "{K8S_DIR} holds only YAML manifests");
    assert!(dashboard().is_object());
}

#[test]
fn alerts_are_prometheus_rule_groups() {
    let rel = "config/alerts.yml";
    let doc = yaml(rel);
    let groups = seq_at(&doc, "groups", rel);
    assert!(!groups.is_empty(), "{rel}: no groups");
    let mut alerts = BTreeSet::new();
    for group in groups {
        text_at(group, "name", rel);
        let rules = seq_at(group, "rules", rel);
        assert!(!rules.is_empty(), "{rel}: a group without rules");
        for rule in rules {
            let map = rule
                .as_mapping()
                .unwrap_or_else(|| panic!("{rel}: a rule is not a mapping"));
            for key in map.keys() {
                let key = key.as_str().unwrap_or("?");
                assert!(
                    ["alert", "expr", "for", "labels", "annotations"].contains(&key),
                    "{rel}: unknown rule key `{key}`"
                );
            }
            let name = text_at(rule, "alert", rel);
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{rel}: alert name `{name}` must be a plain identifier"
            );
            assert!(alerts.insert(name.to_owned()), "{rel}: duplicate {name}");
            let expr = text_at(rule, "expr", rel);
            assert!(!expr.trim().is_empty(), "{rel}: {name} has an empty expr");
            assert!(balanced(expr), "{rel}: {name}: unbalanced brackets");
            if let Some(f) = rule.get("for") {
                let f = f.as_str().unwrap_or("");
                assert!(
                    duration_seconds(f).is_some_and(|s| s > 0),
                    "{rel}: {name}: `for: {f}` is not a duration"
                );
            }
            let severity = text_at(rule, "labels.severity", rel);
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "{rel}: {name}: severity `{severity}`"
            );
            for key in ["summary", "description"] {
                let text = text_at(rule, &format!("annotations.{key}"), rel);
                assert!(!text.trim().is_empty(), "{rel}: {name}: empty {key}");
            }
        }
    }
    // The alerts the deployment promises.
    let exprs: Vec<String> = alert_rules()
        .iter()
        .map(|r| text_at(r, "expr", rel).to_owned())
        .collect();
    let has = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    assert!(has("kafka_consumer_lag"), "no consumer-lag alert");
    assert!(has(r#"outcome="failed""#), "no failed-assignments alert");
    assert!(has(r#"status="429""#), "no 429-ratio alert");
    assert!(
        has("increase(auth0_default_roles_events_processed_total[15m])) == 0"),
        "no traffic-aware no-events alert"
    );
    assert!(has("mgmt_api_failing"), "no Management-API-failing alert");
    assert!(
        has("mgmt_api_blocked"),
        "no tenant-refuses-the-service alert"
    );
    for rule in &alert_rules() {
        let name = text_at(rule, "alert", rel);
        let runbook = text_at(rule, "annotations.runbook", rel);
        assert!(
            !runbook.trim().is_empty(),
            "{rel}: {name}: no runbook annotation"
        );
    }
}

#[test]
fn dashboard_has_panels_with_targets_on_the_provisioned_datasource() {
    let dash = dashboard();
    let rel = "config/grafana/dashboards/auth0-default-roles.json";
    assert!(
        dash["uid"].is_string() && dash["title"].is_string(),
        "{rel}"
    );
    let ds_file = files_under("config/grafana/provisioning/datasources", &["yml", "yaml"]);
    let ds_rel = ds_file
        .first()
        .unwrap_or_else(|| panic!("no datasource file"));
    let ds_doc = yaml(ds_rel);
    let datasources = seq_at(&ds_doc, "datasources", ds_rel);
    let prometheus = datasources
        .iter()
        .find(|d| d.get("type").and_then(Value::as_str) == Some("prometheus"))
        .unwrap_or_else(|| panic!("{ds_rel}: no prometheus datasource"));
    let ds_uid = text_at(prometheus, "uid", ds_rel);
    assert_eq!(text_at(prometheus, "url", ds_rel), "http://prometheus:9090");

    let panels = dash["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{rel}: no panels"));
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{rel}: `{title}` has no id"));
        assert!(ids.insert(id), "{rel}: duplicate panel id {id}");
        assert!(panel["gridPos"].is_object(), "{rel}: `{title}`: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        let targets = panel["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{rel}: panel `{title}` has no targets"));
        assert_eq!(panel["datasource"]["uid"], ds_uid, "{rel}: `{title}`");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{rel}: `{title}`: a target without expr"));
            assert!(
                expr.contains(PREFIX) && balanced(expr),
                "{rel}: `{title}`: `{expr}`"
            );
            assert_eq!(target["datasource"]["uid"], ds_uid, "{rel}: `{title}`");
            assert!(target["refId"].is_string(), "{rel}: `{title}`: refId");
        }
    }
    assert!(graphs >= 6, "{rel}: only {graphs} panels");
    // The panels the deployment promises.
    let exprs = dashboard_exprs();
    let has = |needle: &str| exprs.iter().any(|(_, e)| e.contains(needle));
    assert!(has(
        "sum by (outcome) (rate(auth0_default_roles_events_processed_total"
    ));
    assert!(has("auth0_default_roles_kafka_consumer_lag"));
    assert!(has(
        r#"auth0_default_roles_mgmt_api_requests_total{status="429"}"#
    ));
    assert!(has("histogram_quantile(0.95, sum by (le"));
    assert!(has("_bucket["));
    assert!(has("auth0_default_roles_dead_letters_total"));
    assert!(has("auth0_default_roles_kafka_paused_partitions"));
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let exported: BTreeSet<String> = metrics.names().into_iter().collect();
    // names() sees labelled families before they have children.
    for name in [
        "auth0_default_roles_events_processed_total",
        "auth0_default_roles_kafka_consumer_lag",
        "auth0_default_roles_dead_letters_total",
        "auth0_default_roles_event_processing_duration_seconds",
    ] {
        assert!(exported.contains(name), "names() lacks {name}");
    }
    // ... and every metric src/metrics.rs defines.
    let source = read("src/metrics.rs");
    let mut defined = 0;
    for (i, _) in source.match_indices("opts(") {
        let rest = source[i + "opts(".len()..].trim_start();
        if let Some(literal) = rest.strip_prefix('"') {
            let name = literal.split('"').next().unwrap_or_default();
            defined += 1;
            assert!(
                exported.contains(&format!("{PREFIX}{name}")),
                "src/metrics.rs defines {name} but names() does not list it"
            );
        }
    }
    assert!(defined >= 20, "found only {defined} metric definitions");

    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in metric_names_in(&read("config/alerts.yml")) {
        used.entry(name)
            .or_default()
            .insert("config/alerts.yml".into());
    }
    for (title, expr) in dashboard_exprs() {
        for name in metric_names_in(&expr) {
            used.entry(name)
                .or_default()
                .insert(format!("dashboard panel `{title}`"));
        }
    }
    assert!(used.len() >= 10, "too few metrics found: {used:?}");
    let mut unknown = Vec::new();
    for (name, places) in &used {
        let family = family_of(name, &exported);
        if !exported.contains(&family) {
            let places: Vec<&str> = places.iter().map(String::as_str).collect();
            unknown.push(format!("{name} (in {})", places.join(", ")));
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the service does not export:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn dockerfile_builds_locked_and_runs_non_root_with_a_healthcheck() {
    let file = read("Dockerfile");
    let lines: Vec<&str> = file.lines().map(str::trim).collect();
    let from: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(from.len() >= 2, "Dockerfile: not multi-stage");
    assert!(
        from[0].starts_with("FROM rust:1-bookworm"),
        "builder: {}",
        from[0]
    );
    assert!(file.contains("cargo build --release --locked"));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("Dockerfile: no USER"));
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("Dockerfile: USER {user} is not numeric"));
    assert_ne!(uid, 0, "Dockerfile: runs as root");
    assert!(lines.iter().any(|l| l.starts_with("HEALTHCHECK ")));
    assert!(file.contains("http://127.0.0.1:9464/healthz"));
    assert!(lines.contains(&"EXPOSE 9464"));
    assert!(lines.contains(&r#"ENTRYPOINT ["/usr/local/bin/auth0-default-roles"]"#));
    assert!(lines.contains(&format!(r#"CMD ["run", "--config", "{CONFIG_PATH}"]"#).as_str()));
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore: {entry}"
        );
    }
}

/// The service links the system's OpenSSL (rdkafka's `ssl` feature, not `ssl-vendored`): the
/// image's build stage must have its development files and pkg-config, and the runtime stage its
/// shared library.
#[test]
fn the_image_has_the_system_libraries_the_build_links() {
    let manifest: toml::Value =
        toml::from_str(&read("Cargo.toml")).unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    let features: Vec<&str> = manifest
        .get("dependencies")
        .and_then(|d| d.get("rdkafka"))
        .and_then(|r| r.get("features"))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("Cargo.toml: no rdkafka features"))
        .iter()
        .filter_map(toml::Value::as_str)
        .collect();
    let file = read("Dockerfile");
    let stages: Vec<&str> = file.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 2, "Dockerfile: not multi-stage");
    let (build, runtime) = (stages[0], stages[stages.len() - 1]);
    // The packages a stage's `apt-get install` lines name.
    let installed = |stage: &str| -> Vec<String> {
        let joined = stage.replace("\\\n", " ");
        joined
            .lines()
            .filter_map(|l| l.split("apt-get install").nth(1))
            .flat_map(|rest| {
                rest.split("&&")
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
            })
            .filter(|word| !word.starts_with('-'))
            .map(str::to_owned)
            .collect()
    };
    let (build_packages, runtime_packages) = (installed(build), installed(runtime));
    if features.contains(&"ssl-vendored") {
        return;
    }
    assert!(features.contains(&"ssl"), "rdkafka features: {features:?}");
    for package in ["pkg-config", "libssl-dev"] {
        assert!(
            build_packages.iter().any(|p| p == package),
            "Dockerfile: the build stage does not install {package} (installs {build_packages:?})"
        );
    }
    assert!(
        runtime_packages.iter().any(|p| p == "libssl3"),
        "Dockerfile: the runtime stage does not install libssl3 (installs {runtime_packages:?})"
    );
}

/// The root Cargo.toml's `[workspace] members`.
fn workspace_members() -> Vec<String> {
    let manifest: toml::Value =
        toml::from_str(&read("Cargo.toml")).unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("Cargo.toml: no [workspace] members"))
        .iter()
        .map(|m| {
            m.as_str()
                .unwrap_or_else(|| panic!("Cargo.toml: member {m} is not a string"))
                .to_owned()
        })
        .collect()
}

/// `a/./b/` → `a/b`; `.` and `./` → ``.
fn normalized(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Where each `COPY` of the build stage (the first `FROM` up to the next) puts each source,
/// relative to the build context and the `WORKDIR`: (source, destination).
fn build_stage_copies(dockerfile: &str) -> Vec<(String, String)> {
    let mut copies = Vec::new();
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages += 1;
        }
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if stages != 1 {
            continue;
        }
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        for source in sources {
            let source = normalized(source);
            let landing = if into_dir {
                let name = source.rsplit('/').next().unwrap_or_default();
                normalized(&format!("{dest}/{name}"))
            } else {
                normalized(dest)
            };
            copies.push((source, landing));
        }
    }
    copies
}

#[test]
fn the_dockerfile_copies_every_workspace_member_where_cargo_expects_it() {
    let members = workspace_members();
    assert!(
        members.iter().any(|m| normalized(m).is_empty()),
        "Cargo.toml: the root package is not a member: {members:?}"
    );
    assert!(members.len() >= 2, "Cargo.toml: members {members:?}");
    let copies = build_stage_copies(&read("Dockerfile"));
    // Where the build stage holds `path` (relative to WORKDIR), if a COPY brings it.
    let copied_to = |path: &str| -> Option<String> {
        copies.iter().find_map(|(source, landing)| {
            let rest = if source.is_empty() {
                Some(path)
            } else if path == source {
                Some("")
            } else {
                path.strip_prefix(&format!("{source}/"))
            }?;
            Some(normalized(&format!("{landing}/{rest}")))
        })
    };
    let ignore = read(".dockerignore");
    let ignored: Vec<String> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('*'))
        .map(normalized)
        .collect();
    // `.cargo/config.toml`: the build scripts' environment (librdkafka's CFLAGS).
    let mut needed = vec!["Cargo.lock".to_owned(), ".cargo/config.toml".to_owned()];
    for member in &members {
        let dir = normalized(member);
        let at = |rel: &str| normalized(&format!("{dir}/{rel}"));
        assert!(
            root().join(at("Cargo.toml")).is_file(),
            "member {member}: no Cargo.toml"
        );
        needed.push(at("Cargo.toml"));
        needed.push(at("src"));
    }
    for path in &needed {
        assert_eq!(
            copied_to(path).as_deref(),
            Some(path.as_str()),
            "Dockerfile: the build stage does not COPY {path} to the same place (COPYs: {copies:?})"
        );
        let excluded = ignored
            .iter()
            .find(|e| *path == **e || path.starts_with(&format!("{e}/")));
        assert_eq!(excluded, None, ".dockerignore excludes {path}");
    }
}

#[test]
fn compose_wires_kafka_the_simulator_the_service_prometheus_and_grafana() {
    let rel = "docker-compose.yml";
    let doc = yaml(rel);
    let services = at(&doc, "services", rel);
    for name in [
        "kafka",
        "kafka-init",
        "sim",
        "postgres",
        "auth0-default-roles",
        "prometheus",
        "grafana",
    ] {
        assert!(services.get(name).is_some(), "{rel}: no service {name}");
    }
    // Every bind-mounted host path exists.
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in services.as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or("?");
        for volume in service
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let spec = volume.as_str().unwrap_or_else(|| panic!("{rel}: {name}"));
            let mut parts = spec.split(':');
            let host = parts.next().unwrap_or_default();
            let container = parts.next().unwrap_or_default();
            if let Some(path) = host.strip_prefix("./") {
                assert!(root().join(path).exists(), "{rel}: {name} mounts {host}");
                mounts.insert(format!("{name}:{container}"), path.to_owned());
            }
        }
    }

    // Kafka: KRaft, and the topics the service reads and dead-letters to.
    let kafka = at(services, "kafka", rel);
    assert!(text_at(kafka, "image", rel).starts_with("apache/kafka:"));
    assert_eq!(
        text_at(kafka, "environment.KAFKA_PROCESS_ROLES", rel),
        "broker,controller"
    );
    let init = at(services, "kafka-init", rel);
    let script: String = seq_at(init, "command", rel)
        .iter()
        .filter_map(Value::as_str)
        .collect();

    // The service: the config it mounts, the simulator it talks to, the grace it is given.
    let service = at(services, "auth0-default-roles", rel);
    assert_eq!(
        mounts.get(&format!("auth0-default-roles:{CONFIG_PATH}")),
        Some(&"config/compose.toml".to_owned()),
        "{rel}: the service must mount config/compose.toml at {CONFIG_PATH}"
    );
    let config = parse_config(&read("config/compose.toml"), "config/compose.toml");
    let kafka_cfg = kafka_of(&config, "config/compose.toml");
    assert_eq!(kafka_cfg.brokers, vec!["kafka:9092".to_owned()]);
    for topic in kafka_cfg
        .topics
        .iter()
        .chain(kafka_cfg.dead_letter_topic.iter())
    {
        assert!(
            script.contains(&format!("--create --if-not-exists --topic {topic} ")),
            "{rel}: kafka-init does not create {topic}"
        );
    }
    assert!(script.contains(&format!("--topic {} --partitions 3 ", kafka_cfg.topics[0])));
    let auth0 = config
        .auth0
        .as_ref()
        .unwrap_or_else(|| panic!("config/compose.toml: no [auth0]"));
    assert_eq!(auth0.base_url, "http://sim:8080");
    assert_eq!(auth0.domain, "sim.auth0.local");
    assert_eq!(auth0.client_id, "sim-client");
    let grace = text_at(service, "stop_grace_period", rel);
    assert!(
        duration_seconds(grace).map(Duration::from_secs) > Some(kafka_cfg.shutdown_grace),
        "{rel}: stop_grace_period {grace} must exceed shutdown_grace_seconds"
    );
    assert_eq!(
        text_at(service, "environment.AUTH0_CLIENT_SECRET", rel),
        "${AUTH0_CLIENT_SECRET:-sim-secret}"
    );

    // The ledger: the service's LEDGER_URL names the postgres service's user, password and
    // database, and the service waits for it to be ready.
    let postgres = at(services, "postgres", rel);
    assert!(text_at(postgres, "image", rel).starts_with("postgres:"));
    let ledger_url = text_at(service, "environment.LEDGER_URL", rel);
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        text_at(postgres, "environment.POSTGRES_USER", rel),
        text_at(postgres, "environment.POSTGRES_PASSWORD", rel),
        text_at(postgres, "environment.POSTGRES_DB", rel)
    );
    assert_eq!(
        ledger_url, expected,
        "{rel}: LEDGER_URL and the postgres service disagree"
    );
    assert_eq!(
        text_at(service, "depends_on.postgres.condition", rel),
        "service_healthy"
    );
    assert!(
        doc.get("volumes").and_then(|v| v.get("ledger")).is_some(),
        "{rel}: the ledger's data needs a named volume"
    );

    // The simulator: the port base_url names, on every interface.
    let sim: Vec<&str> = seq_at(at(services, "sim", rel), "command", rel)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(&sim[..5], ["sim", "--host", "0.0.0.0", "--port", "8080"]);

    // The policy is the demo's.
    let policy = |path: &str| -> toml::Value {
        let file: toml::Value =
            toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        file.get("policy")
            .cloned()
            .unwrap_or_else(|| panic!("{path}: no [policy]"))
    };
    assert_eq!(policy("config/compose.toml"), policy("config/demo.toml"));

    // Prometheus scrapes the service on its metrics port and loads the alert rules.
    let prom_rel = "config/prometheus.yml";
    let prom = yaml(prom_rel);
    let rule_files: Vec<&str> = seq_at(&prom, "rule_files", prom_rel)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for path in &rule_files {
        assert_eq!(
            mounts
                .get(&format!("prometheus:{path}"))
                .map(String::as_str),
            Some("config/alerts.yml"),
            "{rel}: prometheus does not mount config/alerts.yml at {path}"
        );
    }
    assert!(!rule_files.is_empty());
    let port = config.metrics_listen.port();
    let job = seq_at(&prom, "scrape_configs", prom_rel)
        .iter()
        .find(|j| j.get("job_name").and_then(Value::as_str) == Some("auth0-default-roles"))
        .unwrap_or_else(|| panic!("{prom_rel}: no auth0-default-roles job"));
    let sd = &seq_at(job, "dns_sd_configs", prom_rel)[0];
    assert_eq!(u64_at(sd, "port", prom_rel), u64::from(port));
    let sd_names: Vec<&str> = seq_at(sd, "names", prom_rel)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(sd_names, ["auth0-default-roles"]);

    // Grafana: the provisioning directory and the dashboards where the provider looks.
    assert_eq!(
        mounts
            .get("grafana:/etc/grafana/provisioning")
            .map(String::as_str),
        Some("config/grafana/provisioning")
    );
    for provider_file in files_under("config/grafana/provisioning/dashboards", &["yml", "yaml"]) {
        let doc = yaml(&provider_file);
        for provider in seq_at(&doc, "providers", &provider_file) {
            let path = text_at(provider, "options.path", &provider_file);
            assert_eq!(
                mounts.get(&format!("grafana:{path}")).map(String::as_str),
                Some("config/grafana/dashboards"),
                "{rel}: grafana does not mount the dashboards at {path}"
            );
        }
    }
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_config() {
    let dir = K8S_DIR;
    let mut by_kind: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for file in files_under(dir, &["yaml", "yml"]) {
        for doc in yaml_docs(&file) {
            let kind = text_at(&doc, "kind", &file).to_owned();
            assert!(
                by_kind.insert(kind.clone(), (file.clone(), doc)).is_none(),
                "{dir}: two {kind}s"
            );
        }
    }
    let get = |kind: &str| -> &(String, Value) {
        by_kind
            .get(kind)
            .unwrap_or_else(|| panic!("{dir}: no {kind}"))
    };

    // kustomization.yaml lists every manifest but the example Secret.
    let (kz_file, kz) = get("Kustomization");
    let resources: BTreeSet<String> = seq_at(kz, "resources", kz_file)
        .iter()
        .filter_map(Value::as_str)
        .map(|r| format!("{dir}/{r}"))
        .collect();
    let (secret_file, secret) = get("Secret");
    let expected: BTreeSet<String> = by_kind
        .values()
        .map(|(f, _)| f.clone())
        .filter(|f| f != kz_file && f != secret_file)
        .collect();
    assert_eq!(resources, expected, "{kz_file}: resources");

    // The ConfigMap holds a valid config.
    let (cm_file, cm) = get("ConfigMap");
    let config = parse_config(text_at(cm, "data.config\\.toml", cm_file), cm_file);
    let kafka = kafka_of(&config, cm_file);
    let port = u64::from(config.metrics_listen.port());

    // The Deployment.
    let (dep_file, dep) = get("Deployment");
    let f = dep_file.as_str();
    let name = text_at(dep, "metadata.name", f);
    assert!(
        at(dep, "spec", f).get("replicas").is_none(),
        "{f}: replicas belongs to KEDA"
    );
    let pod = at(dep, "spec.template", f);
    let labels = at(pod, "metadata.labels", f);
    assert_eq!(at(dep, "spec.selector.matchLabels", f), labels);
    let annotations = at(pod, "metadata.annotations", f);
    assert_eq!(text_at(annotations, "prometheus\\.io/scrape", f), "true");
    assert_eq!(
        text_at(annotations, "prometheus\\.io/port", f),
        port.to_string()
    );
    assert_eq!(text_at(annotations, "prometheus\\.io/path", f), "/metrics");
    let spec = at(pod, "spec", f);
    assert!(at(spec, "securityContext.runAsNonRoot", f) == &Value::Bool(true));
    let containers = seq_at(spec, "containers", f);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let ports = seq_at(c, "ports", f);
    let metrics_port = ports
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("metrics"))
        .unwrap_or_else(|| panic!("{f}: no port named metrics"));
    assert_eq!(u64_at(metrics_port, "containerPort", f), port);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(text_at(c, &format!("{probe}.httpGet.path"), f), path);
        assert_eq!(text_at(c, &format!("{probe}.httpGet.port"), f), "metrics");
    }
    let sc = at(c, "securityContext", f);
    assert_eq!(at(sc, "readOnlyRootFilesystem", f), &Value::Bool(true));
    assert_eq!(at(sc, "allowPrivilegeEscalation", f), &Value::Bool(false));
    assert_eq!(at(sc, "runAsNonRoot", f), &Value::Bool(true));
    text_at(c, "resources.requests.cpu", f);
    text_at(c, "resources.requests.memory", f);
    text_at(c, "resources.limits.memory", f);
    // The config is mounted where the args read it.
    let args: Vec<&str> = seq_at(c, "args", f)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_arg = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{f}: no --config"));
    assert_eq!(args.first(), Some(&"run"));
    let mount = seq_at(c, "volumeMounts", f)
        .iter()
        .find(|m| config_arg.starts_with(text_at(m, "mountPath", f)))
        .unwrap_or_else(|| panic!("{f}: nothing mounted at {config_arg}"));
    let volume_name = text_at(mount, "name", f);
    let volume = seq_at(spec, "volumes", f)
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(volume_name))
        .unwrap_or_else(|| panic!("{f}: no volume {volume_name}"));
    assert_eq!(
        text_at(volume, "configMap.name", f),
        text_at(cm, "metadata.name", cm_file)
    );
    // Shutdown: the grace period covers the preStop sleep plus the service's own drain.
    let pre_stop: Vec<&str> = seq_at(c, "lifecycle.preStop.exec.command", f)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(pre_stop.first(), Some(&"sleep"));
    let sleep: u64 = pre_stop
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{f}: preStop sleep seconds"));
    let grace = u64_at(spec, "terminationGracePeriodSeconds", f);
    let needed = Duration::from_secs(sleep) + kafka.shutdown_grace;
    assert!(
        Duration::from_secs(grace) > needed + Duration::from_secs(5),
        "{f}: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} s + \
         shutdown_grace {:?} with room for the final commit",
        kafka.shutdown_grace
    );
    // The secret comes from the Secret, by reference.
    let env = seq_at(c, "env", f);
    let secret_env = env
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("AUTH0_CLIENT_SECRET"))
        .unwrap_or_else(|| panic!("{f}: no AUTH0_CLIENT_SECRET"));
    assert!(secret_env.get("value").is_none(), "{f}: a literal secret");
    let key_ref = at(secret_env, "valueFrom.secretKeyRef", f);
    assert_eq!(
        text_at(key_ref, "name", f),
        text_at(secret, "metadata.name", secret_file)
    );
    let key = text_at(key_ref, "key", f);
    text_at(secret, &format!("stringData.{key}"), secret_file);
    // So does the ledger's URL (it holds the database password); optional: without it the
    // service runs without a ledger.
    let ledger_env = env
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("LEDGER_URL"))
        .unwrap_or_else(|| panic!("{f}: no LEDGER_URL"));
    assert!(
        ledger_env.get("value").is_none(),
        "{f}: a literal ledger URL"
    );
    let ledger_ref = at(ledger_env, "valueFrom.secretKeyRef", f);
    assert_eq!(
        text_at(ledger_ref, "name", f),
        text_at(secret, "metadata.name", secret_file)
    );
    assert_eq!(at(ledger_ref, "optional", f).as_bool(), Some(true));
    let ledger_key = text_at(ledger_ref, "key", f);
    assert!(
        text_at(secret, &format!("stringData.{ledger_key}"), secret_file)
            .starts_with("postgres://")
    );

    // The Service exposes the metrics port of these pods.
    let (svc_file, svc) = get("Service");
    assert_eq!(at(svc, "spec.selector", svc_file), labels);
    let svc_ports = seq_at(svc, "spec.ports", svc_file);
    assert!(svc_ports
        .iter()
        .any(
            |p| p.get("targetPort").and_then(Value::as_str) == Some("metrics")
                && p.get("port").and_then(Value::as_u64) == Some(port)
        ));

    // KEDA scales the Deployment on the group's lag, up to the partition count.
    let (so_file, so) = get("ScaledObject");
    let s = so_file.as_str();
    assert_eq!(text_at(so, "apiVersion", s), "keda.sh/v1alpha1");
    assert_eq!(text_at(so, "spec.scaleTargetRef.name", s), name);
    assert_eq!(
        u64_at(so, "spec.maxReplicaCount", s),
        3,
        "{s}: = partitions"
    );
    assert!(u64_at(so, "spec.minReplicaCount", s) >= 1);
    let triggers = seq_at(so, "spec.triggers", s);
    assert_eq!(triggers.len(), 1);
    let t = &triggers[0];
    assert_eq!(text_at(t, "type", s), "kafka");
    let meta = at(t, "metadata", s)
        .as_mapping()
        .unwrap_or_else(|| panic!("{s}: trigger metadata"));
    for (k, v) in meta {
        assert!(
            v.is_string(),
            "{s}: trigger metadata `{}` must be a string (KEDA's CRD)",
            k.as_str().unwrap_or("?")
        );
    }
    assert_eq!(text_at(t, "metadata.consumerGroup", s), kafka.group_id);
    assert_eq!(text_at(t, "metadata.topic", s), kafka.topics[0]);
    assert_eq!(
        text_at(t, "metadata.bootstrapServers", s),
        kafka.brokers.join(",")
    );
    assert_eq!(text_at(t, "metadata.offsetResetPolicy", s), "earliest");
    let lag: u64 = text_at(t, "metadata.lagThreshold", s)
        .parse()
        .unwrap_or_else(|e| panic!("{s}: lagThreshold: {e}"));
    assert!(lag > 0);
}

#[test]
fn metric_name_extraction_finds_whole_names_and_histogram_families() {
    let exported: BTreeSet<String> = ["auth0_default_roles_event_age_seconds".to_owned()].into();
    let names = metric_names_in(
        "histogram_quantile(0.9, sum by (le) (rate(auth0_default_roles_event_age_seconds_bucket[5m]))) \
         / my_auth0_default_roles_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["auth0_default_roles_event_age_seconds_bucket"]
    );
    assert_eq!(
        family_of("auth0_default_roles_event_age_seconds_bucket", &exported),
        "auth0_default_roles_event_age_seconds"
    );
    assert_eq!(duration_seconds("1h30m"), Some(5400));
    assert_eq!(duration_seconds("30"), None);
    assert!(balanced(r#"sum(rate(x{a="(" }[5m]))"#));
    assert!(!balanced("sum(rate(x[5m])"));
}

#[test]
fn counters_the_alerts_take_increase_of_exist_at_zero_from_the_start() {
    // A series that first appears at 1 shows no increase(): the first dead letter or panic
    // would never alert.
    let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let processor = auth0_default_roles::pipeline::Processor::new(
        auth0_default_roles::policy::Policy::from_config(&Default::default())
            .unwrap_or_else(|e| panic!("{e}")),
        auth0_default_roles::dedup::Dedup::new(Default::default()),
    );
    let metrics = std::sync::Arc::new(metrics);
    let _pipeline = auth0_default_roles::pipeline::Pipeline::offline(
        processor,
        std::sync::Arc::clone(&metrics),
        auth0_default_roles::pipeline::SourceKind::Kafka,
    );
    let text = metrics.render();
    for series in [
        r#"auth0_default_roles_dead_letters_total{reason="failed"} 0"#,
        r#"auth0_default_roles_dead_letters_total{reason="invalid"} 0"#,
        r#"auth0_default_roles_task_panics_total{source="kafka"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let alerts = read("config/alerts.yml");
    assert!(alerts.contains("increase(auth0_default_roles_dead_letters_total"));
}
