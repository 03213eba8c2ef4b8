//! `auth0-default-roles demo`: the whole service on one machine with nothing installed.
//!
//! An in-process Kafka cluster (librdkafka's mock cluster, 3 partitions), the Management API
//! simulator on a loopback port, a generated stream with known expected roles, and the real
//! `run` path (`kafka::run`, the pipeline, the client) with the demo policy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::ExitStatus;
use crate::app::{self, App};
use crate::config::Config;
use crate::generate;
use crate::metrics::Metrics;
use crate::pipeline::Outcome;
use crate::shutdown::Shutdown;
use mgmt_sim::{Seed, SimConfig, Simulator};

/// The demo policy, embedded so the demo runs from any directory.
pub const DEMO_POLICY: &str = include_str!("../../config/demo.toml");

const TOPIC: &str = "auth0-logs";
const DEAD_LETTERS: &str = "auth0-logs-dlq";
const PARTITIONS: i32 = 3;

/// What the user asked for (the `demo` command's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Messages to generate (users' signups, first logins, verifications, noise).
    #[arg(long, default_value_t = 3000)]
    pub events: usize,
    /// The simulated tenant's rate limit in requests per second (the client uses 90 % of it;
    /// 0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Keep serving /metrics and the simulator after the table, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Where /metrics, /healthz and /readyz are served (another free port if taken).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("mock Kafka cluster: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("demo config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Start(#[from] app::StartError),
    #[error("the demo did not finish within {0:?}: {1}")]
    Stalled(Duration, String),
}

impl ExitStatus for DemoError {
    fn exit_code(&self) -> u8 {
        1
    }
}

/// Runs `demo`: the table on stdout; exit 1 when a user got other roles than expected.
pub async fn run(options: DemoOptions) -> Result<u8, DemoError> {
    let keep = options.keep_running.then(Shutdown::on_signals);
    let stdout = std::io::stdout();
    let report = play(options, keep, &mut stdout.lock()).await?;
    Ok(if report.mismatched_users == 0 { 0 } else { 1 })
}

/// The demo's result, for the caller (and the test) to check.
#[derive(Debug)]
pub struct DemoReport {
    pub events: usize,
    pub processed: u64,
    /// Users whose roles differ from the expected ones (0 when the demo proved its point).
    pub mismatched_users: usize,
    pub users_with_roles: usize,
    pub api_calls: u64,
    pub rate_limited: u64,
    pub metrics_addr: SocketAddr,
}

/// Plays the demo; progress goes to stderr, the final table to `out`. With `keep_running`,
/// waits for `stop` after the table so the user can look at `/metrics` and the simulator.
pub async fn play(
    options: DemoOptions,
    keep_running: Option<Shutdown>,
    out: &mut dyn Write,
) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    // 1. The stand-in tenant.
    let rate = options.rate_limit.max(0.0);
    let burst = if rate > 0.0 {
        (rate as u32).max(1)
    } else {
        1000
    };
    let sim = Simulator::new(
        SimConfig {
            accept_any_user: true,
            rate_per_second: rate,
            burst,
            ..SimConfig::default()
        },
        Seed::with_roles(generate::DEMO_ROLES),
    );
    let tenant = sim.start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;

    // 2. The Kafka cluster and the stream.
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, PARTITIONS, 1)?;
    cluster.create_topic(DEAD_LETTERS, 1, 1)?;
    let bootstrap = cluster.bootstrap_servers();
    // A burst of the tenant's events happening now (signups seconds old: the ledger writes
    // their roles without reading the users' roles first).
    let stream = generate::mixed_at(
        options.seed,
        options.events,
        1,
        generate::Timing::burst_now(),
    );
    produce(&bootstrap, &stream.records).await?;

    // The grants ledger: SQLite in a temporary folder, removed when the demo ends.
    let ledger_dir = tempfile::Builder::new()
        .prefix("auth0-default-roles-demo-")
        .tempdir()?;
    let ledger_path = ledger_dir.path().join("ledger.db");

    // 3. The real service configuration, validated like a user's file.
    // The client stays a little under the tenant's limit, as the README advises: the two token
    // buckets do not tick together.
    let client_rate = if rate > 0.0 { rate * 0.9 } else { 10_000.0 };
    let client_burst = (burst * 9 / 10).max(1);
    let text = format!(
        r#"[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{base}"
requests_per_second = {client_rate}
burst = {client_burst}

[source]
type = "kafka"

[kafka]
brokers = "{bootstrap}"
topic = "{TOPIC}"
group_id = "auth0-default-roles-demo"
dead_letter_topic = "{DEAD_LETTERS}"
commit_interval_ms = 500
shutdown_grace_seconds = 5

[kafka.properties]
# The mock cluster's first join takes 3 s; a session must outlast it.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"statistics.interval.ms" = "1000"

[metrics]
listen = "{listen}"

[ledger]
url = "sqlite://{ledger}"

{DEMO_POLICY}
"#,
        base = tenant.base_url,
        listen = free_or_any(options.listen),
        ledger = ledger_path.display(),
    );
    let env = |name: &str| (name == crate::config::SECRET_ENV).then(|| "sim-secret".to_owned());
    let config = Config::from_toml(&text, Path::new("config/demo.toml"), &env)?;
    let stop = Shutdown::new();
    let app = App::build(&config, app::Command::Run, stop.clone()).await?;
    let metrics = Arc::clone(app.metrics());
    let health = Arc::clone(app.health());
    let metrics_addr = app.metrics_addr();

    // 4. Consume until every message reached an outcome.
    let consumer = tokio::spawn(app.run());
    let total = stream.records.len() as u64;
    let limit = Duration::from_secs(60)
        + Duration::from_secs_f64(total as f64 / client_rate.min(1000.0) * 4.0);
    let mut last_line = Instant::now() - Duration::from_secs(1);
    let processed =
        loop {
            let processed = sum_processed(&metrics);
            if processed >= total {
                break processed;
            }
            if started.elapsed() > limit {
                stop.trigger();
                return Err(DemoError::Stalled(
                    limit,
                    format!("{processed} of {total} events processed"),
                ));
            }
            if last_line.elapsed() >= Duration::from_millis(500) {
                last_line = Instant::now();
                let joined = health.source_connected();
                eprint!(
                "\r{:>5.1} s  {}  {processed}/{total} events, {} users with roles, {} API calls   ",
                started.elapsed().as_secs_f64(),
                if joined { "consuming" } else { "joining the consumer group" },
                sim.users_with_roles().len(),
                sim.stats().total_requests,
            );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
    let elapsed = started.elapsed();
    eprintln!(
        "\r{:>5.1} s  consumed  {processed}/{total} events, {} users with roles, {} API calls   ",
        elapsed.as_secs_f64(),
        sim.users_with_roles().len(),
        sim.stats().total_requests,
    );

    // 5. The table.
    let users = sim.role_sets();
    let mismatched_users = stream
        .expected
        .iter()
        .filter(|(user, roles)| users.get(*user) != Some(*roles))
        .count()
        + users
            .keys()
            .filter(|user| !stream.expected.contains_key(*user))
            .count();
    let stats = sim.stats();
    let mut by_roles: BTreeMap<String, usize> = BTreeMap::new();
    for roles in users.values() {
        let names: Vec<&str> = roles.iter().map(String::as_str).collect();
        *by_roles.entry(names.join(", ")).or_default() += 1;
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nauth0-default-roles demo: {total} messages through Kafka (librdkafka mock cluster, {PARTITIONS} partitions) in {:.1} s",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "policy: config/demo.toml · tenant: Management API simulator at {} ({})",
        tenant.base_url,
        if rate > 0.0 {
            format!("{rate} requests/s")
        } else {
            "no rate limit".to_owned()
        }
    );
    let _ = writeln!(t, "\nUsers by assigned roles");
    for (roles, n) in &by_roles {
        let _ = writeln!(t, "  {roles:<32} {n:>6}");
    }
    let _ = writeln!(
        t,
        "  {:<32} {:>6}   ({} expected by construction; {})",
        "total",
        users.len(),
        stream.expected.len(),
        if mismatched_users == 0 {
            "every user has exactly the expected roles".to_owned()
        } else {
            format!("{mismatched_users} users DIFFER")
        }
    );
    let _ = writeln!(t, "\nOutcomes per trigger");
    let shown = [
        Outcome::Assigned,
        Outcome::AlreadyDone,
        Outcome::NoRule,
        Outcome::NotEligible,
        Outcome::Invalid,
        Outcome::Failed,
    ];
    let _ = write!(t, "  {:<16}", "trigger");
    for o in shown {
        let _ = write!(t, "{:>14}", o.as_str());
    }
    let _ = writeln!(t);
    for trigger in ["signup", "first_login", "email_verified", "none"] {
        let _ = write!(t, "  {trigger:<16}");
        for o in shown {
            let n = metrics
                .events_processed
                .with_label_values(&["kafka", trigger, o.as_str()])
                .get();
            let _ = write!(t, "{n:>14}");
        }
        let _ = writeln!(t);
    }
    let writes = stats
        .calls
        .iter()
        .filter(|(op, _)| op.starts_with("assign"))
        .map(|(_, n)| n)
        .sum::<u64>();
    let _ = writeln!(
        t,
        "\nManagement API: {} requests ({} assignment calls, {:.3} per user given roles), {} answered 429",
        stats.total_requests,
        writes,
        if users.is_empty() { 0.0 } else { stats.total_requests as f64 / users.len() as f64 },
        stats.rate_limited
    );
    let _ = writeln!(
        t,
        "Dead letters: {} (the malformed message, kept in {DEAD_LETTERS} with its origin)",
        metrics.dead_letters.with_label_values(&["invalid"]).get()
            + metrics.dead_letters.with_label_values(&["failed"]).get()
    );
    let _ = writeln!(
        t,
        "Metrics: http://{metrics_addr}/metrics   health: /healthz, /readyz"
    );
    out.write_all(t.as_bytes())?;
    // One user explained from the ledger, as `explain` does.
    if let Some(user) = explained_user(&users) {
        out.write_all(explain(&config, &user).await.as_bytes())?;
    }
    out.flush()?;

    if let Some(signals) = keep_running {
        let _ = writeln!(
            out,
            "\nStill running (--keep-running): the simulator at {} (try {}/sim/state) and the metrics. Ctrl-C stops.",
            tenant.base_url, tenant.base_url
        );
        out.flush()?;
        signals.wait().await;
    }
    stop.trigger();
    match consumer.await {
        Ok(result) => {
            result?;
        }
        Err(err) => {
            return Err(DemoError::Stalled(
                Duration::ZERO,
                format!("consumer task: {err}"),
            ));
        }
    }
    drop(cluster);
    tenant.shutdown().await;
    Ok(DemoReport {
        events: stream.records.len(),
        processed,
        mismatched_users,
        users_with_roles: users.len(),
        api_calls: stats.total_requests,
        rate_limited: stats.rate_limited,
        metrics_addr,
    })
}

/// The user the demo explains: one holding the most roles (the first by id among them).
fn explained_user(users: &BTreeMap<String, std::collections::BTreeSet<String>>) -> Option<String> {
    let most = users.values().map(|roles| roles.len()).max()?;
    users
        .iter()
        .find(|(_, roles)| roles.len() == most)
        .map(|(user, _)| user.clone())
}

/// `explain --config … USER_ID`'s text for `user`, or why it cannot be shown.
async fn explain(config: &Config, user: &str) -> String {
    let Some(settings) = &config.ledger else {
        return String::new();
    };
    let history = match app::open_ledger(settings, &config.instance).await {
        Ok(ledger) => ledger.history(user).await.map(|h| (ledger.describe(), h)),
        Err(err) => return format!("\nexplain: the ledger cannot be opened: {err}\n"),
    };
    let (describe, history) = match history {
        Ok(found) => found,
        Err(err) => return format!("\nexplain: the ledger cannot be read: {err}\n"),
    };
    // The simulated tenant accepts any user id and keeps no profiles: what the policy would
    // give now cannot be read from it (`explain` against a real tenant reads the profile).
    let given_now = Err("the demo's simulated tenant keeps no user profiles".to_owned());
    let explanation = super::explain::report::Explanation::new(
        user,
        describe,
        &config.policy,
        &config.policy_fingerprint,
        history,
        given_now,
    );
    format!(
        "\nWhy {user} holds its roles (explain --config FILE {user}):\n{}",
        explanation.to_text()
    )
}

/// `addr` when it can be bound now, else any free loopback port (another demo holds it).
fn free_or_any(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

fn sum_processed(metrics: &Metrics) -> u64 {
    let mut n = 0;
    for trigger in ["signup", "first_login", "email_verified", "none"] {
        for o in Outcome::ALL {
            n += metrics
                .events_processed
                .with_label_values(&["kafka", trigger, o.as_str()])
                .get();
        }
    }
    n
}

async fn produce(bootstrap: &str, records: &[generate::Record]) -> Result<(), DemoError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let sends = records.iter().map(|r| {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC).payload(&r.value[..]);
        if let Some(k) = &r.key {
            record = record.key(k.as_str());
        }
        producer.send(record, Duration::from_secs(10))
    });
    for result in futures_util::future::join_all(sends).await {
        result.map_err(|(e, _)| e)?;
    }
    Ok(())
}
