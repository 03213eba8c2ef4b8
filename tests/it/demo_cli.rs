//! `auth0-default-roles demo`: one command, no broker, no tenant, no network beyond loopback.

use std::process::Command;

#[test]
fn demo_runs_the_whole_path_and_every_user_gets_the_expected_roles() {
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["demo", "--events", "400", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the demo: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("every user has exactly the expected roles"),
        "{stdout}"
    );
    for needle in [
        "Users by assigned roles",
        "CUSTOMER, Viewer",
        "INTERNAL, Viewer",
        "CUSTOMER, PARTNER, Viewer",
        "Outcomes per trigger",
        "first_login",
        "answered 429",
        "Dead letters: 1",
        "/metrics",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // One user explained from the demo's SQLite ledger: rule and role of every grant.
    let explained = stdout
        .split("\nWhy ")
        .nth(1)
        .unwrap_or_else(|| panic!("no explain section in:\n{stdout}"));
    for needle in [
        "ledger sqlite:///",
        "granted Viewer",
        "by rule everyone, trigger ",
        "standing grants",
    ] {
        assert!(
            explained.contains(needle),
            "missing {needle:?} in:\n{explained}"
        );
    }
    // Progress was shown while it ran.
    assert!(stderr.contains("consumed"), "{stderr}");
}
