//! A realistic, reproducible Auth0 log stream for the demo, the tests and the benches, with the
//! roles each user must end up with under the demo policy (`config/demo.toml`).
//!
//! The expected roles are known by construction (what kind of user was generated), not by
//! running the policy, so a test comparing them with the tenant's state checks the policy and
//! the whole delivery path together.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// The connection the demo policy maps to `INTERNAL`.
pub const CORP_CONNECTION: &str = "corp-azure-ad";
/// Every role the demo policy assigns.
pub const DEMO_ROLES: [&str; 4] = ["Viewer", "CUSTOMER", "INTERNAL", "PARTNER"];
/// The domain whose verified emails get `PARTNER`.
pub const PARTNER_DOMAIN: &str = "partner.example";

/// One message: its key (the user id, so a user's events share a partition) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<String>,
    pub value: Vec<u8>,
}

/// A generated stream.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub records: Vec<Record>,
    /// Roles each eligible user must hold in the end (users that must get none are absent).
    pub expected: BTreeMap<String, BTreeSet<String>>,
    /// Records that are not JSON (they must end as `invalid`, in the dead letters).
    pub malformed: usize,
    /// Records repeated verbatim (redeliveries; absorbed by dedup on `log_id`).
    pub duplicates: usize,
}

impl Stream {
    /// Users that must end with at least one role.
    pub fn eligible_users(&self) -> usize {
        self.expected.len()
    }
}

/// What kind of user a group of records describes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Database signup, then the first login: Viewer + CUSTOMER.
    Database,
    /// Database signup on the partner domain, first login, email verification:
    /// Viewer + CUSTOMER + PARTNER.
    Partner,
    /// Google user: first login only (no `ss` for social users): Viewer + CUSTOMER.
    Social,
    /// Enterprise (Azure AD) first login: Viewer + INTERNAL.
    Enterprise,
    /// A returning user (loginsCount > 1, also as an embedded `scoa` login), silent auth, token
    /// exchange: nothing.
    Returning,
    /// Failed logins and other look-alike types: nothing.
    Noise,
}

struct Gen {
    rng: StdRng,
    next_id: u64,
    clock_ms: u64,
    base_secs: u64,
    step_ms: (u64, u64),
}

impl Gen {
    fn log_id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "9002026112300000000000000000000000000000000000{:010}",
            self.next_id
        )
    }

    fn date(&mut self) -> String {
        self.clock_ms += self.rng.random_range(self.step_ms.0..self.step_ms.1);
        let secs = self.base_secs + self.clock_ms / 1000;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let base = humantime::format_rfc3339_seconds(t).to_string();
        format!(
            "{}.{:03}Z",
            base.trim_end_matches('Z'),
            self.clock_ms % 1000
        )
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    }
}

/// Application the events come from.
const APP: (&str, &str) = ("aI61p8I8aFjmYRliLWgvM9ev97kCCNDB", "Storefront");

fn log(
    g: &mut Gen,
    kind: &str,
    user_id: &str,
    email: &str,
    connection: (&str, &str, &str),
    logins: Option<u64>,
) -> serde_json::Value {
    let (conn, strategy, strategy_type) = connection;
    let log_id = g.log_id();
    let date = g.date();
    let mut details = json!({});
    if let Some(n) = logins {
        details = json!({
            "prompts": [
                {"name": "prompt-authenticate", "connection": conn, "strategy": strategy, "stats": {"loginsCount": n}},
                {"name": "login", "flow": "universal-login", "user_id": user_id, "user_name": email}
            ],
            "stats": {"loginsCount": n},
            "session_id": g.hex(24)
        });
    } else if kind == "sv" {
        details = json!({"query": {"user_id": user_id, "email": email}, "email": email});
    } else if kind == "ss" {
        details = json!({"body": {"email": email, "connection": conn, "password": "*****", "client_id": APP.0}});
    }
    json!({
        "date": date,
        "type": kind,
        "description": "",
        "connection": conn,
        "connection_id": format!("con_{strategy}"),
        "client_id": APP.0,
        "client_name": APP.1,
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "details": details,
        "hostname": "acme.eu.auth0.com",
        "user_id": user_id,
        "user_name": email,
        "strategy": strategy,
        "strategy_type": strategy_type,
        "log_id": log_id,
    })
}

/// Wraps a log the way most deliveries carry it: `{log_id, data}` (Custom Webhook, the
/// Kafka bridge), or bare (an `InputPath` on `$.detail`) for one record in five.
fn wrap(g: &mut Gen, log: serde_json::Value) -> Vec<u8> {
    let value = if g.rng.random_range(0..5) == 0 {
        log
    } else {
        json!({"log_id": log["log_id"].clone(), "data": log})
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

const DATABASE: (&str, &str, &str) = ("Username-Password-Authentication", "auth0", "database");
const GOOGLE: (&str, &str, &str) = ("google-oauth2", "google-oauth2", "social");
const AZURE: (&str, &str, &str) = (CORP_CONNECTION, "waad", "enterprise");

/// About `events` records (a user's records are never split), reproducible from `seed`.
/// Roughly: 30 % database users (2 records), 8 % partners (3), 15 % social, 7 % enterprise,
/// 25 % returning users, 15 % noise; 1 % of records repeated; `malformed` broken records.
pub fn mixed(seed: u64, events: usize, malformed: usize) -> Stream {
    generate(seed, events, malformed, 60, Timing::default())
}

/// When a stream's events happen: from `base_secs` (unix seconds), each a random
/// `step_ms.0..step_ms.1` milliseconds after the one before.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub base_secs: u64,
    pub step_ms: (u64, u64),
}

impl Default for Timing {
    /// From 2026-11-23T00:00:00Z, 5 to 400 ms apart (a day's stream, long past).
    fn default() -> Self {
        Timing {
            base_secs: 1_795_392_000,
            step_ms: (5, 400),
        }
    }
}

impl Timing {
    /// A burst happening now: events 1 to 10 ms apart, from a few seconds ago.
    pub fn burst_now() -> Timing {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1_795_392_000);
        Timing {
            base_secs: now.saturating_sub(5),
            step_ms: (1, 10),
        }
    }
}

/// Like [`mixed`], with the events' dates from `timing` (the demo's burst happens now).
pub fn mixed_at(seed: u64, events: usize, malformed: usize, timing: Timing) -> Stream {
    generate(seed, events, malformed, 60, timing)
}

/// Like [`mixed`], but only `eligible_percent` % of users are new (signups and first logins);
/// the others are returning users and noise, as in a mature tenant's stream.
pub fn mostly_noise(seed: u64, events: usize, eligible_percent: u32) -> Stream {
    generate(
        seed,
        events,
        0,
        eligible_percent.min(100),
        Timing::default(),
    )
}

fn generate(
    seed: u64,
    events: usize,
    malformed: usize,
    eligible_percent: u32,
    timing: Timing,
) -> Stream {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        next_id: seed.wrapping_mul(1_000_000_007) % 1_000_000,
        clock_ms: 0,
        base_secs: timing.base_secs,
        step_ms: (timing.step_ms.0, timing.step_ms.1.max(timing.step_ms.0 + 1)),
    };
    let mut stream = Stream::default();
    let mut n_user = 0u64;
    let role =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    while stream.records.len() + malformed < events {
        n_user += 1;
        let kind = if g.rng.random_range(0..100) < eligible_percent {
            match g.rng.random_range(0..60) {
                0..30 => Kind::Database,
                30..38 => Kind::Partner,
                38..53 => Kind::Social,
                _ => Kind::Enterprise,
            }
        } else if g.rng.random_range(0..40) < 25 {
            Kind::Returning
        } else {
            Kind::Noise
        };
        let id = format!(
            "{:024x}",
            seed.wrapping_mul(0x9e37_79b9).wrapping_add(n_user)
        );
        let mut logs = Vec::new();
        let (user_id, expected) = match kind {
            Kind::Database => {
                let user = format!("auth0|{id}");
                let email = format!("user{n_user}@mail.example");
                logs.push(log(&mut g, "ss", &user, &email, DATABASE, None));
                logs.push(log(&mut g, "s", &user, &email, DATABASE, Some(1)));
                (user, role(&["Viewer", "CUSTOMER"]))
            }
            Kind::Partner => {
                let user = format!("auth0|{id}");
                let email = format!("p{n_user}@{PARTNER_DOMAIN}");
                logs.push(log(&mut g, "ss", &user, &email, DATABASE, None));
                logs.push(log(&mut g, "s", &user, &email, DATABASE, Some(1)));
                logs.push(log(&mut g, "sv", &user, &email, DATABASE, None));
                (user, role(&["Viewer", "CUSTOMER", "PARTNER"]))
            }
            Kind::Social => {
                let user = format!("google-oauth2|{}", 100_000_000_000_000_000u64 + n_user);
                let email = format!("g{n_user}@gmail.example");
                logs.push(log(&mut g, "s", &user, &email, GOOGLE, Some(1)));
                (user, role(&["Viewer", "CUSTOMER"]))
            }
            Kind::Enterprise => {
                let user = format!("waad|{id}");
                let email = format!("e{n_user}@corp.example");
                logs.push(log(&mut g, "s", &user, &email, AZURE, Some(1)));
                (user, role(&["Viewer", "INTERNAL"]))
            }
            Kind::Returning => {
                let user = format!("auth0|{id}");
                let email = format!("r{n_user}@mail.example");
                let logins = g.rng.random_range(2..50);
                logs.push(log(&mut g, "s", &user, &email, DATABASE, Some(logins)));
                // `scoa` is a login too (it carries the count, here above 1); `ssa` and
                // `seacft` are not logins.
                let extra = ["ssa", "seacft", "scoa"][g.rng.random_range(0..3)];
                let count = (extra == "scoa").then_some(logins);
                logs.push(log(&mut g, extra, &user, &email, DATABASE, count));
                (user, BTreeSet::new())
            }
            Kind::Noise => {
                let user = format!("auth0|{id}");
                let email = format!("n{n_user}@mail.example");
                let kind =
                    ["f", "fp", "fu", "sapi", "ssa", "slo", "fcoa"][g.rng.random_range(0..7)];
                let mut l = log(&mut g, kind, &user, &email, DATABASE, None);
                if kind.starts_with('f') {
                    // Failures often carry no user id.
                    l["user_id"] = json!("");
                }
                logs.push(l);
                (user, BTreeSet::new())
            }
        };
        for l in logs {
            let key = l["user_id"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_owned);
            let value = wrap(&mut g, l);
            let record = Record { key, value };
            if g.rng.random_range(0..100) == 0 {
                stream.records.push(record.clone());
                stream.duplicates += 1;
            }
            stream.records.push(record);
        }
        if !expected.is_empty() {
            stream.expected.insert(user_id, expected);
        }
    }
    // Broken records land at reproducible places among the others.
    for i in 0..malformed {
        let at = g.rng.random_range(0..=stream.records.len());
        let value =
            format!("{{\"log_id\": \"broken-{i}\", \"data\": {{\"type\": \"ss\", ").into_bytes();
        stream.records.insert(at, Record { key: None, value });
    }
    stream.malformed = malformed;
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_roughly_sized() {
        let a = mixed(7, 1000, 2);
        let b = mixed(7, 1000, 2);
        assert_eq!(a.records, b.records);
        assert!(
            a.records.len() >= 1000 && a.records.len() < 1020,
            "{}",
            a.records.len()
        );
        assert!(a.eligible_users() > 200, "{}", a.eligible_users());
        let c = mixed(8, 1000, 2);
        assert_ne!(a.records, c.records);
    }

    #[test]
    fn every_record_but_the_malformed_decodes() {
        let s = mixed(3, 500, 3);
        let mut bad = 0;
        for r in &s.records {
            let items = crate::event::decode(&r.value);
            assert_eq!(items.len(), 1);
            if items[0].is_err() {
                bad += 1;
            } else if let Some(key) = &r.key {
                assert_eq!(
                    items[0].as_ref().ok().and_then(|e| e.user()),
                    Some(key.as_str())
                );
            }
        }
        assert_eq!(bad, 3);
    }
}
