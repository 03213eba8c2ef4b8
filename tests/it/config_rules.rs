//! The rules between sections: `check` refuses every configuration `run` or `ingest` would
//! refuse without touching the network, naming the same key; a missing secret is a warning for
//! `check` and an error naming its variable and file for the commands that send it; no
//! command prints a secret.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_harness::temp_dir;

/// The tenant part every file shares: a tenant that never answers (nothing listens on port 9).
const AUTH0: &str = "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nbase_url = \"http://127.0.0.1:9\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Runs the binary with `args` and `env` (no secret but those given), killed after 60 s:
/// (exit status, stdout, stderr).
fn run(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = config.parent().unwrap_or(Path::new("."));
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("AUTH0_CLIENT_SECRET")
        .env_remove("AUTH0_WEBHOOK_TOKEN")
        .env_remove("KAFKA_SASL_PASSWORD")
        .env_remove("LEDGER_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap_or_else(|e| panic!("{e}")))
        .stderr(std::fs::File::create(&err).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    (code, read(&out), read(&err))
}

/// `text` written as `name` in a fresh folder (`{dir}` replaced by the folder).
fn config(name: &str, text: &str) -> PathBuf {
    let dir = temp_dir(&format!("rules-{name}"));
    let path = dir.join("config.toml");
    let text = text.replace("{dir}", &dir.display().to_string());
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `check` and `command` both refuse `path` with exit 2, naming `key` and saying `words`.
fn both_refuse(path: &Path, command: &str, key: &str, words: &str) {
    let secrets = [
        ("AUTH0_CLIENT_SECRET", "s"),
        ("AUTH0_WEBHOOK_TOKEN", "Bearer t"),
    ];
    for args in [&["check"][..], &[command][..]] {
        let (code, stdout, stderr) = run(args, path, &secrets);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(words),
            "{args:?} should name {key}: {stderr}"
        );
    }
}

#[test]
fn a_backstop_beside_the_auth0_logs_source_is_refused_by_check_as_by_run() {
    let path = config(
        "backstop-logs",
        &format!("{AUTH0}\n[source]\ntype = \"auth0_logs\"\n[auth0_logs]\ncheckpoint_file = \"{{dir}}/logs.checkpoint\"\n\n[backstop]\ncheckpoint_file = \"{{dir}}/backstop.checkpoint\"\n"),
    );
    both_refuse(&path, "run", "backstop", "auth0_logs source");
}

#[test]
fn a_backstop_beside_the_kafka_bridge_is_refused_by_check_as_by_ingest() {
    let path = config(
        "backstop-bridge",
        &format!("{AUTH0}\n[kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\n\n[ingest]\nmode = \"kafka\"\nlisten = \"127.0.0.1:0\"\n\n[backstop]\ncheckpoint_file = \"{{dir}}/backstop.checkpoint\"\n"),
    );
    both_refuse(&path, "ingest", "backstop", "bridges into Kafka");
}

#[test]
fn a_backstop_without_a_source_is_refused_by_check_as_by_run() {
    let path = config(
        "backstop-alone",
        &format!("{AUTH0}\n[backstop]\ncheckpoint_file = \"{{dir}}/backstop.checkpoint\"\n"),
    );
    both_refuse(&path, "run", "backstop", "there is none");
}

#[test]
fn the_kafka_bridge_without_a_kafka_source_is_refused_by_check_as_by_ingest() {
    let path = config(
        "bridge-sqs",
        &format!("{AUTH0}\n[source]\ntype = \"sqs\"\n[sqs]\nqueue_url = \"http://127.0.0.1:9/000000000000/q\"\n\n[ingest]\nmode = \"kafka\"\nlisten = \"127.0.0.1:0\"\n"),
    );
    both_refuse(&path, "ingest", "ingest.mode", "[kafka]");
    let path = config(
        "bridge-alone",
        &format!("{AUTH0}\n[ingest]\nmode = \"kafka\"\nlisten = \"127.0.0.1:0\"\n"),
    );
    both_refuse(&path, "ingest", "ingest.mode", "[kafka]");
}

#[test]
fn a_missing_secret_is_a_warning_for_check_and_an_error_naming_its_variable_and_file_for_the_commands(
) {
    let path = config(
        "no-secrets",
        &format!("{AUTH0}\n[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:0\"\n"),
    );
    let (code, stdout, stderr) = run(&["check"], &path, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for said in [
        "warning: the Management API client secret is missing: set AUTH0_CLIENT_SECRET or auth0.client_secret_file",
        "warning: ingest.token_file: no webhook token: set AUTH0_WEBHOOK_TOKEN or ingest.token_file",
    ] {
        assert!(stdout.contains(said), "{said}\n{stdout}");
    }
    let (code, stdout, stderr) = run(&["ingest"], &path, &[("AUTH0_WEBHOOK_TOKEN", "Bearer t")]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("AUTH0_CLIENT_SECRET") && stderr.contains("auth0.client_secret_file"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["ingest"], &path, &[("AUTH0_CLIENT_SECRET", "s")]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("AUTH0_WEBHOOK_TOKEN") && stderr.contains("ingest.token_file"),
        "{stderr}"
    );
    for command in [&["doctor"][..], &["reconcile"][..]] {
        let (code, stdout, stderr) = run(command, &path, &[]);
        assert_ne!(code, Some(0), "{command:?}: {stdout}{stderr}");
        let said = format!("{stdout}{stderr}");
        assert!(
            said.contains("AUTH0_CLIENT_SECRET") && said.contains("auth0.client_secret_file"),
            "{command:?}: {said}"
        );
    }
}

#[test]
fn a_kafka_sasl_password_comes_from_the_environment_or_its_file_and_never_from_the_config_file() {
    let in_file = config(
        "sasl-in-file",
        &format!("{AUTH0}\n[kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2-in-the-file\"\n"),
    );
    let (code, stdout, stderr) = run(&["check"], &in_file, &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("KAFKA_SASL_PASSWORD"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");
    let missing = config(
        "sasl-missing",
        &format!("{AUTH0}\n[kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\nsasl_password_file = \"{{dir}}/absent\"\n"),
    );
    let (code, stdout, stderr) = run(&["check"], &missing, &[("AUTH0_CLIENT_SECRET", "s")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: cannot read kafka.sasl_password_file"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(&["run"], &missing, &[("AUTH0_CLIENT_SECRET", "s")]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot read kafka.sasl_password_file"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["doctor"], &missing, &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAIL kafka: cannot read kafka.sasl_password_file"),
        "{stdout}"
    );
}

#[test]
fn check_prints_no_secret_however_it_was_given() {
    let path = config(
        "secrets-shown",
        "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nclient_secret_file = \"{dir}/client-secret\"\n\n[kafka]\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"\nsasl_password_file = \"{dir}/sasl\"\n\n[ingest]\nmode = \"kafka\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::write(dir.join("client-secret"), "client-secret-from-file\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("sasl"), "sasl-password-from-file\n").unwrap_or_else(|e| panic!("{e}"));
    let (code, stdout, stderr) = run(
        &["check"],
        &path,
        &[
            ("AUTH0_WEBHOOK_TOKEN", "Bearer webhook-token-from-env"),
            (
                "LEDGER_URL",
                "postgres://svc:ledger-password-from-env@127.0.0.1:9/ledger",
            ),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("client secret available"), "{stdout}");
    assert!(stdout.contains("webhook token available"), "{stdout}");
    for secret in [
        "client-secret-from-file",
        "sasl-password-from-file",
        "webhook-token-from-env",
        "ledger-password-from-env",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}: {stdout}{stderr}"
        );
    }
}
