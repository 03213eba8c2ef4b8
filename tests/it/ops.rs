//! Operations on a real Prometheus (Debian's `prometheus` and `promtool`, installed by the test
//! command): the alert rules and their unit tests, the shipped config, and a real scrape of a
//! running instance in which every alert and every dashboard panel expression must evaluate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use test_harness::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A binary named by an environment variable (set by `scripts/test.sh`), else from `PATH`.
fn tool(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name))
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("PROMTOOL_BIN", "promtool"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): run `bash scripts/install-prometheus.sh` or `bash scripts/test.sh`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A Prometheus config scraping `target` every second and evaluating the shipped rules.
fn prometheus_config(dir: &Path, target: &str) -> PathBuf {
    let text = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: auth0-default-roles\n    static_configs:\n      - targets: [\"{target}\"]\n",
        repo("config/alerts.yml").display()
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn the_alert_rules_load_and_their_unit_tests_pass() {
    let (ok, text) = promtool(&[
        "check",
        "rules",
        &repo("config/alerts.yml").to_string_lossy(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&[
        "test",
        "rules",
        &repo("config/alerts_test.yml").to_string_lossy(),
    ]);
    assert!(ok, "{text}");
    let dir = temp_dir("promtool");
    let config = prometheus_config(&dir, "127.0.0.1:9464");
    let (ok, text) = promtool(&["check", "config", &config.to_string_lossy()]);
    assert!(ok, "{text}");
}

/// `kubernetes-validate --strict` (the Kubernetes API schemas bundled: offline, no cluster) on
/// `files`; its path from `KUBERNETES_VALIDATE_BIN` (set by `scripts/test.sh`), else `PATH`.
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool("KUBERNETES_VALIDATE_BIN", "kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate not found ({e}): run `bash scripts/install-kubernetes-validate.sh` or `bash scripts/test.sh`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every manifest shipped under `deploy/`.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo("deploy"), &mut out);
    out.sort();
    out
}

#[test]
fn the_kubernetes_manifests_are_valid_against_the_kubernetes_schemas() {
    let files = manifests();
    let (ok, text) = kubernetes_validate(&files);
    assert!(ok, "{text}");
    for resource in [
        "configmap/auth0-default-roles",
        "deployment/auth0-default-roles",
        "service/auth0-default-roles",
        "secret/auth0-default-roles",
        "configmap/auth0-default-roles-backstop",
        "persistentvolumeclaim/auth0-default-roles-backstop",
        "deployment/auth0-default-roles-backstop",
    ] {
        assert!(
            text.contains(&format!("passed for resource {resource} ")),
            "{resource} was not validated:\n{text}"
        );
    }
    // Only the kinds the Kubernetes schemas do not define may go unchecked: KEDA's
    // ScaledObject (a custom resource) and kustomize's own file.
    for line in text.lines().filter(|l| l.contains("find schema")) {
        assert!(
            line.contains("kind ScaledObject") || line.contains("kind Kustomization"),
            "a manifest went unchecked: {line}"
        );
    }
}

#[test]
fn a_manifest_the_kubernetes_schemas_refuse_fails_the_validation() {
    // The shipped Deployment with `containers` misspelt: a field the schema does not know, and
    // the one it requires missing.
    let text = std::fs::read_to_string(repo("deploy/kubernetes/deployment.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("      containers:"));
    let broken = text.replacen("      containers:", "      container:", 1);
    let dir = temp_dir("manifests");
    let path = dir.join("deployment.yaml");
    std::fs::write(&path, broken).unwrap_or_else(|e| panic!("{e}"));
    let (ok, text) = kubernetes_validate(&[path]);
    assert!(!ok, "a broken Deployment passed:\n{text}");
    assert!(text.contains("container"), "{text}");
}

#[test]
fn the_kubernetes_manifests_build_with_kustomize_when_kubectl_is_there() {
    let Ok(out) = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo("deploy/kubernetes"))
        .output()
    else {
        eprintln!("SKIPPED: kubectl is not installed, `kubectl kustomize deploy/kubernetes` was not checked");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifests = String::from_utf8_lossy(&out.stdout);
    for kind in ["kind: Deployment", "kind: ConfigMap", "kind: Service"] {
        assert!(manifests.contains(kind), "{kind} missing");
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /api/v1/...` of Prometheus, as JSON.
fn api(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(port, path)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn query(port: u16, expr: &str) -> Value {
    let encoded =
        percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC).to_string();
    let path = format!("/api/v1/query?query={encoded}");
    let (status, body) = http_get(port, &path).unwrap_or_else(|| panic!("no answer to {expr}"));
    assert_eq!(status, 200, "{expr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"))
}

/// Every `expr` of the dashboard, with Grafana's variables replaced.
fn dashboard_exprs() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.replace("$__rate_interval", "1m")),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo("config/grafana/dashboards/auth0-default-roles.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

#[test]
fn a_real_prometheus_scrapes_the_service_and_every_alert_and_panel_expression_evaluates() {
    // The instance: `ingest` in direct mode against the simulator (light enough to share the
    // machine with the whole suite), fed one delivery so the event series have samples.
    let dir = temp_dir("prometheus");
    let rt = runtime();
    let (_sim, running) = start_tenant(
        &rt,
        mgmt_sim::SimConfig {
            accept_any_user: true,
            ..mgmt_sim::SimConfig::default()
        },
        Vec::new(),
    );
    let (ingest_port, service_port) = (free_port(), free_port());
    let policy =
        std::fs::read_to_string(repo("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{ingest_port}\"\n\n[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 100\nburst = 100\n\n[metrics]\nlisten = \"127.0.0.1:{service_port}\"\n\n{policy}\n",
            running.base_url
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = "Bearer ops-token";
    let service = Service::start_command(
        "ingest",
        &config,
        service_port,
        dir.join("ingest.log"),
        &[("AUTH0_WEBHOOK_TOKEN", token)],
    );
    service.wait_ready();
    let stream = auth0_default_roles::generate::mixed(5, 50, 0);
    let mut body = Vec::new();
    for record in &stream.records {
        body.extend_from_slice(&record.value);
        body.push(b'\n');
    }
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", token),
    ];
    let delivered = http_post(ingest_port, "/auth0/logs", &headers, &body);
    assert_eq!(
        delivered.map(|(s, _)| s),
        Some(200),
        "{}",
        service.log_text()
    );
    let port = free_port();
    let config = prometheus_config(&dir, &format!("127.0.0.1:{service_port}"));
    let prometheus = Command::new(tool("PROMETHEUS_BIN", "prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("prometheus.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus not found ({e}): run `bash scripts/install-prometheus.sh`")
        });
    let _prometheus = Killed(prometheus);

    // The target is up and the service's series are there.
    assert!(
        wait_for(Duration::from_secs(120), || {
            api(port, "/api/v1/targets").is_some_and(|t| {
                t["data"]["activeTargets"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|t| t["health"] == "up"))
            }) && query(port, "auth0_default_roles_events_processed_total")["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        }),
        "Prometheus never scraped the service\n{}\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default(),
        service.log_text()
    );
    // Every rule was evaluated, without error.
    assert!(
        wait_for(Duration::from_secs(30), || {
            api(port, "/api/v1/rules").is_some_and(|rules| {
                let all: Vec<&Value> = rules["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                    .collect();
                !all.is_empty()
                    && all.iter().all(|r| {
                        r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z"
                    })
            })
        }),
        "rules not all healthy: {:?}",
        api(port, "/api/v1/rules")
    );
    // Every alert expression and every dashboard panel expression evaluates.
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("config/alerts.yml")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut exprs: Vec<String> = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect();
    let panels = dashboard_exprs();
    assert!(panels.len() >= 10, "the dashboard's expressions were found");
    exprs.extend(panels);
    for expr in &exprs {
        let answer = query(port, expr);
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }
    // A typo is caught by the same check (the test would fail on a misspelled function).
    let typo = http_get(port, "/api/v1/query?query=sum(rat(x%5B1m%5D))");
    assert!(typo.is_some_and(|(status, _)| status == 400));
    rt.block_on(running.shutdown());
}
