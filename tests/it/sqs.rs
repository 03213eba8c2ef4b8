//! The `run` command with the SQS source, against a real AWS emulator (moto in server mode:
//! EventBridge bus, rule, SQS target, dead-letter queue with redrive) and the Management API
//! simulator: delivery through EventBridge, redrive of invalid messages, an outage longer than
//! the visibility timeout, graceful shutdown.
//!
//! Each test starts its own moto server on a free loopback port (moto has one global state;
//! names are unique per test anyway). `MOTO_SERVER` names the binary; scripts/test.sh creates
//! the virtualenv and sets it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auth0_default_roles::generate;
use aws_sdk_sqs::types::QueueAttributeName;
use mgmt_sim::{RunningSimulator, SeedUser, SimConfig, SimStats, Simulator};
use serde_json::{json, Value};
use test_harness::*;

/// How many receives before SQS moves a message to the dead-letter queue.
const MAX_RECEIVE_COUNT: u32 = 2;

/// A queue with its dead-letter queue, fed by an EventBridge rule on a bus of its own.
struct Queues {
    name: String,
    url: String,
    dlq_url: String,
    bus: String,
}

/// One test's world: moto, a simulated tenant, clients, a directory.
struct World {
    rt: tokio::runtime::Runtime,
    moto: Moto,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    dir: PathBuf,
}

/// A simulated tenant (started on a loopback port).
struct Tenant {
    sim: Simulator,
    running: Option<RunningSimulator>,
}

impl Tenant {
    fn url(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.base_url.clone())
            .unwrap_or_default()
    }

    /// Users holding roles, as sets.
    fn roles(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.sim.role_sets()
    }

    fn stats(&self) -> SimStats {
        self.sim.stats()
    }
}

impl World {
    fn new(name: &str) -> World {
        let dir = temp_dir(&format!("sqs-{name}"));
        let moto = Moto::start(&dir);
        let rt = runtime();
        let sqs = moto.sqs_client();
        World {
            rt,
            moto,
            sqs,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// A simulated tenant with the demo policy's roles. Without `users` it accepts any user
    /// id; with them, any other user is a 404 (a permanent failure).
    fn tenant(&self, config: SimConfig, users: Vec<SeedUser>) -> Tenant {
        let accept_any_user = users.is_empty();
        let (sim, running) = start_tenant(
            &self.rt,
            SimConfig {
                accept_any_user,
                ..config
            },
            users,
        );
        Tenant {
            sim,
            running: Some(running),
        }
    }

    /// One EventBridge API call (JSON protocol). moto routes on the credential scope of the
    /// Authorization header and does not check signatures.
    fn events(&self, action: &str, body: Value) -> Value {
        let response = self.rt.block_on(async {
            let r = self
                .http
                .post(self.moto.endpoint())
                .header("X-Amz-Target", format!("AWSEvents.{action}"))
                .header("Content-Type", "application/x-amz-json-1.1")
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=0",
                )
                .body(body.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{action}: {e}"));
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            (status, text)
        });
        assert!(response.0.is_success(), "{action}: {response:?}");
        serde_json::from_str(&response.1).unwrap_or(Value::Null)
    }

    fn create_queue(&self, name: &str, attributes: &[(QueueAttributeName, String)]) -> String {
        self.rt.block_on(async {
            let mut request = self.sqs.create_queue().queue_name(name);
            for (k, v) in attributes {
                request = request.attributes(k.clone(), v);
            }
            request
                .send()
                .await
                .unwrap_or_else(|e| panic!("create_queue {name}: {e:?}"))
                .queue_url
                .unwrap_or_else(|| panic!("no queue url"))
        })
    }

    fn attribute(&self, url: &str, name: QueueAttributeName) -> String {
        self.rt.block_on(async {
            self.sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(name.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("get_queue_attributes: {e:?}"))
                .attributes
                .and_then(|mut a| a.remove(&name))
                .unwrap_or_default()
        })
    }

    /// Visible plus in-flight messages of a queue.
    fn depth(&self, url: &str) -> u64 {
        let n = |a| self.attribute(url, a).parse::<u64>().unwrap_or(u64::MAX);
        n(QueueAttributeName::ApproximateNumberOfMessages)
            .saturating_add(n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Waits until the queue is empty and its dead-letter queue holds `n` messages.
    fn wait_dead_letters(&self, queues: &Queues, n: u64, service: &Service) {
        assert!(
            wait_for(Duration::from_secs(60), || self.depth(&queues.dlq_url) == n
                && self.depth(&queues.url) == 0),
            "queue {}, dead-letter queue {}\n{}",
            self.depth(&queues.url),
            self.depth(&queues.dlq_url),
            service.log_text()
        );
    }

    /// The set-up of the README: a dead-letter queue, the queue with a redrive policy, a bus,
    /// a rule on `detail-type: "Auth0 log"`, the queue as its target.
    fn queues(&self, name: &str) -> Queues {
        let dlq_url = self.create_queue(&format!("{name}-dlq"), &[]);
        let dlq_arn = self.attribute(&dlq_url, QueueAttributeName::QueueArn);
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT.to_string()});
        let url = self.create_queue(
            name,
            &[(QueueAttributeName::RedrivePolicy, redrive.to_string())],
        );
        let arn = self.attribute(&url, QueueAttributeName::QueueArn);
        let bus = format!("{name}-bus");
        self.events("CreateEventBus", json!({"Name": bus}));
        let rule = format!("{name}-auth0-logs");
        self.events(
            "PutRule",
            json!({
                "Name": rule,
                "EventBusName": bus,
                "EventPattern": json!({"detail-type": ["Auth0 log"]}).to_string(),
                "State": "ENABLED",
            }),
        );
        self.events(
            "PutTargets",
            json!({"Rule": rule, "EventBusName": bus, "Targets": [{"Id": "auth0-logs-queue", "Arn": arn}]}),
        );
        Queues {
            name: name.to_owned(),
            url,
            dlq_url,
            bus,
        }
    }

    /// Publishes `records` the way Auth0's log stream does: EventBridge events with source
    /// `aws.partner/auth0.com/<tenant>/auth0.logs`, detail-type "Auth0 log" and the
    /// `{log_id, data}` record as detail, at most 10 per PutEvents. Records that are not JSON
    /// cannot travel through EventBridge: they are sent to the queue directly. Returns the
    /// number of messages sent.
    fn publish(&self, queues: &Queues, records: &[generate::Record]) -> usize {
        let source = format!("aws.partner/auth0.com/tenant-{}/auth0.logs", queues.name);
        let mut entries = Vec::new();
        let mut sent = 0;
        for record in records {
            match serde_json::from_slice::<Value>(&record.value) {
                Ok(value) => {
                    let detail = if value.get("data").is_some() {
                        value
                    } else {
                        json!({"log_id": value["log_id"].clone(), "data": value})
                    };
                    entries.push(json!({
                        "Source": source,
                        "DetailType": "Auth0 log",
                        "Detail": detail.to_string(),
                        "EventBusName": queues.bus,
                    }));
                }
                Err(_) => {
                    self.send_raw(queues, &String::from_utf8_lossy(&record.value));
                    sent += 1;
                }
            }
        }
        for chunk in entries.chunks(10) {
            let out = self.events("PutEvents", json!({"Entries": chunk}));
            assert_eq!(out["FailedEntryCount"], json!(0), "{out}");
            sent += chunk.len();
        }
        sent
    }

    fn send_raw(&self, queues: &Queues, body: &str) {
        self.rt.block_on(async {
            self.sqs
                .send_message()
                .queue_url(&queues.url)
                .message_body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("send_message: {e:?}"));
        });
    }

    /// The bodies of the messages in `url` (received with a short visibility timeout).
    fn bodies(&self, url: &str) -> Vec<String> {
        self.rt.block_on(async {
            self.sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(1)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive_message: {e:?}"))
                .messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.body)
                .collect()
        })
    }

    /// Starts the service on `queues` with `extra` lines in `[sqs]`.
    fn service(&self, name: &str, tenant: &Tenant, queues: &Queues, extra: &str) -> Service {
        self.service_with(name, tenant, queues, extra, &[])
    }

    /// [`World::service`] with more environment.
    fn service_with(
        &self,
        name: &str,
        tenant: &Tenant,
        queues: &Queues,
        extra: &str,
        more_env: &[(&str, &str)],
    ) -> Service {
        let port = free_port();
        let policy =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
                .unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            r#"[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{sim}"
requests_per_second = 2000
burst = 500
batch_window_ms = 20

[source]
type = "sqs"

[sqs]
queue_url = "{queue}"
wait_time_seconds = 1
shutdown_grace_seconds = 10
{extra}

[metrics]
listen = "127.0.0.1:{port}"

{policy}
"#,
            sim = tenant.url(),
            queue = queues.url,
        );
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        let endpoint = self.moto.endpoint();
        let mut env = vec![
            ("RUST_LOG", "info,auth0_default_roles::source::sqs=debug"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_SQS", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ];
        env.extend_from_slice(more_env);
        Service::start_command(
            "run",
            &config,
            port,
            self.dir.join(format!("{name}.log")),
            &env,
        )
    }
}

#[test]
fn every_eligible_user_gets_exactly_their_roles_and_the_queue_ends_empty() {
    let started = Instant::now();
    let world = World::new("happy");
    let tenant = world.tenant(SimConfig::default(), Vec::new());
    let queues = world.queues("happy");
    let stream = generate::mixed(21, 600, 2);
    let (before, after) = stream.records.split_at(300);
    // Half waits in the queue before the service starts, half arrives while it runs.
    let mut sent = world.publish(&queues, before);
    let mut service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 5");
    service.wait_ready();
    sent += world.publish(&queues, after);
    assert_eq!(sent, stream.records.len());
    assert!(
        wait_for(Duration::from_secs(120), || tenant.roles()
            == stream.expected
            && world.depth(&queues.url) == 0
            && (2..=5).contains(&world.depth(&queues.dlq_url))),
        "not done: {} of {} users, queue {}, dead-letter queue {}\n{}\n{}",
        tenant.roles().len(),
        stream.expected.len(),
        world.depth(&queues.url),
        world.depth(&queues.dlq_url),
        service.snapshot(),
        service.log_text()
    );
    assert_tenant_holds_exactly(&tenant.sim, &stream.expected, &[&service]);

    // Every valid message deleted; each broken one received MAX_RECEIVE_COUNT times, left
    // alone, then moved by the redrive policy. moto's ReceiveMessage is not atomic across
    // concurrent requests: now and then it hands one message to both receive loops, or returns
    // one it had just deleted. Such copies end as already_done and are deleted again; a few
    // are tolerated (and printed).
    let valid = (stream.records.len() - stream.malformed) as f64;
    let broken = f64::from(MAX_RECEIVE_COUNT) * stream.malformed as f64;
    let received = service.metric("auth0_default_roles_sqs_messages_received_total", "");
    let deleted = service.metric("auth0_default_roles_sqs_messages_deleted_total", "");
    let left = service.metric(
        "auth0_default_roles_sqs_messages_left_total",
        "reason=\"invalid\"",
    );
    let extra = received - valid - broken;
    assert!(
        (0.0..=(valid * 0.02).max(3.0)).contains(&extra),
        "{received} messages received for {valid} valid and {} broken\n{}",
        stream.malformed,
        service.snapshot()
    );
    assert!(
        deleted >= valid && deleted <= valid + extra,
        "{deleted} deleted for {valid} valid messages\n{}",
        service.snapshot()
    );
    assert!(left >= broken && left <= broken + extra, "{left} left");
    // The two broken messages are in the dead-letter queue; a copy moto handed out twice can
    // be moved there too (a message it returned after its deletion), never more than the
    // copies counted above.
    let dead_letters = world.depth(&queues.dlq_url) as f64;
    assert!(
        dead_letters >= stream.malformed as f64 && dead_letters <= stream.malformed as f64 + extra,
        "{dead_letters} dead letters for {} broken and {extra} copies",
        stream.malformed
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_received_total",
            "source=\"sqs\""
        ),
        received,
        "one event per message"
    );
    let assigned = service.metric("auth0_default_roles_role_assignments_total", "");
    let expected_pairs: usize = stream.expected.values().map(BTreeSet::len).sum();
    assert_eq!(assigned as usize, expected_pairs, "each role given once");
    assert_eq!(tenant.stats().duplicate_assignments, 0);
    assert_eq!(
        service.metric("auth0_default_roles_sqs_inflight_messages", ""),
        0.0
    );
    let log = service.log_text();
    assert!(log.contains("queue answered"), "{log}");
    assert!(log.contains("roles assigned"), "{log}");
    assert!(log.contains("*@partner.example"), "{log}");
    assert!(
        !log.contains("@partner.example\""),
        "an email leaked into the log"
    );

    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        service.log_text()
    );
    eprintln!(
        "happy path: {} messages, {} users, {:.1} s, {extra} extra receives from moto",
        sent,
        stream.expected.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn an_invalid_message_lands_in_the_dead_letter_queue_after_max_receive_count() {
    let world = World::new("invalid");
    let tenant = world.tenant(SimConfig::default(), Vec::new());
    let queues = world.queues("invalid");
    let good = generate::mixed(22, 6, 0);
    world.publish(&queues, &good.records);
    // Not JSON, sent straight to the queue; and an "Auth0 log" event that holds no log.
    let broken = "{\"log_id\": \"broken\", \"data\": {\"type\": \"ss\", ";
    world.send_raw(&queues, broken);
    world.events(
        "PutEvents",
        json!({"Entries": [{
            "Source": "aws.partner/auth0.com/tenant-invalid/auth0.logs",
            "DetailType": "Auth0 log",
            "Detail": json!({"unexpected": true}).to_string(),
            "EventBusName": queues.bus,
        }]}),
    );
    let service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 1");
    world.wait_dead_letters(&queues, 2, &service);
    assert_eq!(tenant.roles(), good.expected);
    // The dead letters are the original bodies, untouched.
    let mut bodies = Vec::new();
    assert!(wait_for(Duration::from_secs(20), || {
        bodies.extend(world.bodies(&queues.dlq_url));
        bodies.len() >= 2
    }));
    assert!(bodies.iter().any(|b| b == broken), "{bodies:?}");
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"detail-type\": \"Auth0 log\"") && b.contains("unexpected")),
        "{bodies:?}"
    );
    // Logged on each receive with the receive count, then left alone.
    let log = service.log_text();
    let left: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message not deleted"))
        .collect();
    assert_eq!(left.len(), 2 * MAX_RECEIVE_COUNT as usize, "{log}");
    assert!(left
        .iter()
        .any(|l| l.contains("approximate_receive_count=1")));
    assert!(left
        .iter()
        .any(|l| l.contains("approximate_receive_count=2")));
    assert!(left.iter().all(|l| l.contains("reason=\"invalid\"")));
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"invalid\""
        ),
        4.0
    );
}

#[test]
fn a_permanently_failing_message_is_left_for_the_dead_letter_queue_too() {
    let world = World::new("failed");
    let good = generate::mixed(25, 6, 0);
    // A strict tenant: only the generated users exist, so the ghost is a permanent 404.
    let tenant = world.tenant(
        SimConfig::default(),
        good.expected.keys().map(SeedUser::new).collect(),
    );
    let queues = world.queues("failed");
    let ghost = generate::Record {
        key: Some("auth0|ghost".to_owned()),
        value: br#"{"log_id":"90020261123ghost","data":{"type":"ss","date":"2026-11-23T10:00:00.000Z","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database","user_id":"auth0|ghost","user_name":"ghost@mail.example","log_id":"90020261123ghost"}}"#.to_vec(),
    };
    let mut records = vec![ghost];
    records.extend(good.records.iter().cloned());
    world.publish(&queues, &records);
    let service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 1");
    world.wait_dead_letters(&queues, 1, &service);
    assert_eq!(tenant.roles(), good.expected);
    let mut bodies = Vec::new();
    assert!(wait_for(Duration::from_secs(20), || {
        bodies.extend(world.bodies(&queues.dlq_url));
        !bodies.is_empty()
    }));
    assert!(bodies[0].contains("auth0|ghost"), "{bodies:?}");
    // Both deliveries failed at the API: a failed event is never remembered as done, so the
    // second delivery was processed again (and failed again, its cause remaining).
    let log = service.log_text();
    let left: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message not deleted"))
        .collect();
    assert_eq!(left.len(), MAX_RECEIVE_COUNT as usize, "{log}");
    assert!(
        left.iter().all(|l| l.contains("reason=\"failed\"")),
        "{log}"
    );
    assert!(
        !log.contains("ghost@mail.example"),
        "an email leaked into the log"
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_sqs_messages_left_total",
            "reason=\"failed\""
        ),
        f64::from(MAX_RECEIVE_COUNT)
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        f64::from(MAX_RECEIVE_COUNT)
    );
}

/// Moves every message of the dead-letter queue back to the source queue, as an operator does
/// after fixing the cause (each moved message gets a new message id). Returns how many.
fn redrive(world: &World, queues: &Queues) -> usize {
    let mut moved = 0;
    while world.depth(&queues.dlq_url) > 0 {
        let messages = world.rt.block_on(async {
            world
                .sqs
                .receive_message()
                .queue_url(&queues.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive_message: {e:?}"))
                .messages
                .unwrap_or_default()
        });
        for message in messages {
            world.send_raw(queues, message.body().unwrap_or_default());
            world.rt.block_on(async {
                world
                    .sqs
                    .delete_message()
                    .queue_url(&queues.dlq_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete_message: {e:?}"))
            });
            moved += 1;
        }
    }
    moved
}

#[test]
fn dead_letters_redriven_after_the_fix_give_every_user_their_roles_in_the_same_process() {
    let world = World::new("redrive");
    let stream = generate::mixed(31, 80, 0);
    // Every other user due a role does not exist in the tenant yet: their events fail with
    // 404 and are dead-lettered. (One stream, so log ids and user ids never collide.)
    let due: Vec<&String> = stream
        .expected
        .iter()
        .filter(|(_, roles)| !roles.is_empty())
        .map(|(user, _)| user)
        .collect();
    let late: BTreeSet<String> = due
        .iter()
        .skip(1)
        .step_by(2)
        .map(|u| (*u).clone())
        .collect();
    let known: BTreeMap<String, BTreeSet<String>> = stream
        .expected
        .iter()
        .filter(|(user, _)| !late.contains(*user))
        .map(|(u, r)| (u.clone(), r.clone()))
        .collect();
    let tenant = world.tenant(
        SimConfig::default(),
        known.keys().map(SeedUser::new).collect(),
    );
    let queues = world.queues("redrive");
    world.publish(&queues, &stream.records);
    let service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 1");
    service.wait_ready();
    let role_lookups_at_start = tenant.stats().calls_of("get_roles");
    // Each late user has at least one event that fails and ends in the DLQ; once the source
    // queue is empty (visible and in flight), every message is deleted or there.
    let failing = late.len();
    assert!(
        failing >= 5,
        "the stream must make some users fail: {failing}"
    );
    assert!(
        wait_for(Duration::from_secs(90), || {
            world.depth(&queues.dlq_url) as usize >= failing && world.depth(&queues.url) == 0
        }),
        "queue {}, dead-letter queue {} of {failing}\n{}",
        world.depth(&queues.url),
        world.depth(&queues.dlq_url),
        service.log_text()
    );
    let mut held = tenant.roles();
    held.retain(|_, roles| !roles.is_empty());
    let mut known_due = known.clone();
    known_due.retain(|_, roles| !roles.is_empty());
    assert_eq!(held, known_due, "only the known users hold roles yet");
    // A 404 for a user is that user's failure: it reads no role.
    assert_eq!(
        tenant.stats().calls_of("get_roles"),
        role_lookups_at_start,
        "an unknown user made the service look roles up again"
    );

    // The operator's fix: the users now exist. Then the documented redrive.
    for user in &late {
        tenant.sim.add_user(SeedUser::new(user));
    }
    let moved = redrive(&world, &queues);
    assert!(moved >= failing, "{moved} of {failing}");
    let mut expected = stream.expected.clone();
    expected.retain(|_, roles| !roles.is_empty());
    assert!(
        wait_for(Duration::from_secs(60), || {
            let mut held = tenant.roles();
            held.retain(|_, roles| !roles.is_empty());
            held == expected && world.depth(&queues.url) == 0
        }),
        "after the redrive: {} users hold roles of {} expected, queue {}, DLQ {}\n{}",
        tenant.roles().len(),
        expected.len(),
        world.depth(&queues.url),
        world.depth(&queues.dlq_url),
        service.log_text()
    );
    assert_eq!(world.depth(&queues.dlq_url), 0, "{}", service.log_text());
}

/// What a run of the outage scenario cost the tenant.
#[derive(Debug)]
struct OutageRun {
    stats: SimStats,
    messages_received: f64,
    extensions: f64,
    /// Messages in flight while the tenant was down (0 without an outage).
    inflight_during_outage: f64,
    seconds: f64,
}

/// Publishes 100 events, then the other 400; with `outage`, the tenant first slows down (1.5 s
/// per call) until `max_inflight` messages are held, then goes down for `outage` and comes
/// back. Returns once every user has their roles and both queues are empty.
fn outage_run(world: &World, name: &str, outage: Option<Duration>) -> OutageRun {
    let started = Instant::now();
    let tenant = world.tenant(SimConfig::default(), Vec::new());
    let queues = world.queues(name);
    let stream = generate::mixed(23, 500, 0);
    let (first, rest) = stream.records.split_at(100);
    let service = world.service(
        name,
        &tenant,
        &queues,
        "visibility_timeout_seconds = 2\nmax_inflight = 40",
    );
    service.wait_ready();
    world.publish(&queues, first);
    assert!(wait_for(Duration::from_secs(60), || world
        .depth(&queues.url)
        == 0));
    let mut inflight_during_outage = 0.0;
    if let Some(outage) = outage {
        tenant.sim.set_latency_ms(1500);
        world.publish(&queues, rest);
        assert!(
            wait_for(Duration::from_secs(30), || service
                .metric("auth0_default_roles_sqs_inflight_messages", "")
                >= 30.0),
            "in-flight messages did not pile up behind the slow tenant\n{}",
            service.snapshot()
        );
        tenant.sim.set_down(true);
        assert!(
            wait_for(Duration::from_secs(20), || {
                service.metric("auth0_default_roles_mgmt_api_failing", "") == 1.0
                    && service.metric("auth0_default_roles_sqs_inflight_messages", "") > 0.0
            }),
            "the outage was not noticed with messages in flight\n{}\n{}",
            service.snapshot(),
            service.log_text()
        );
        service.assert_not_ready_because("Management API");
        // Intake paused: nothing more is received while the tenant is down, and what is in
        // flight stays invisible (extended) instead of coming back.
        std::thread::sleep(Duration::from_secs(1));
        let during = service.metric("auth0_default_roles_sqs_messages_received_total", "");
        inflight_during_outage = service.metric("auth0_default_roles_sqs_inflight_messages", "");
        std::thread::sleep(outage);
        let later = service.metric("auth0_default_roles_sqs_messages_received_total", "");
        assert_eq!(
            during,
            later,
            "received during the outage\n{}",
            service.log_text()
        );
        assert!(
            service.metric("auth0_default_roles_sqs_visibility_extensions_total", "") > 0.0,
            "no visibility extension during a {outage:?} outage\n{}",
            service.log_text()
        );
        tenant.sim.set_latency_ms(0);
        tenant.sim.set_down(false);
    } else {
        world.publish(&queues, rest);
    }
    assert!(
        wait_for(Duration::from_secs(120), || tenant.roles()
            == stream.expected
            && world.depth(&queues.url) == 0),
        "{name}: {} of {} users, queue {}\n{}\n{}",
        tenant.roles().len(),
        stream.expected.len(),
        world.depth(&queues.url),
        service.snapshot(),
        service.log_text()
    );
    assert_tenant_holds_exactly(&tenant.sim, &stream.expected, &[&service]);
    assert_eq!(
        world.depth(&queues.dlq_url),
        0,
        "{name}: messages were redriven to the dead-letter queue\n{}",
        service.log_text()
    );
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    OutageRun {
        stats: tenant.stats(),
        messages_received: service.metric("auth0_default_roles_sqs_messages_received_total", ""),
        extensions: service.metric("auth0_default_roles_sqs_visibility_extensions_total", ""),
        inflight_during_outage,
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[test]
fn a_tenant_outage_longer_than_the_visibility_timeout_causes_no_redelivery_storm_and_loses_nothing()
{
    let world = World::new("outage");
    let baseline = outage_run(&world, "baseline", None);
    // Four times the 2 s visibility timeout.
    let outage = outage_run(&world, "outage", Some(Duration::from_secs(8)));
    for (label, run) in [("baseline", &baseline), ("8 s outage", &outage)] {
        eprintln!(
            "{label}: {:.1} s, {} messages received, {} in flight during the outage, {} visibility extensions, {} roles assigned, {} duplicate assignments, {} user + {} bulk assignment calls, {} answered 503",
            run.seconds,
            run.messages_received,
            run.inflight_during_outage,
            run.extensions,
            run.stats.role_assignments,
            run.stats.duplicate_assignments,
            run.stats.calls_of("assign_user_roles"),
            run.stats.calls_of("assign_role_users"),
            run.stats.down_served
        );
    }
    let messages = generate::mixed(23, 500, 0).records.len() as f64;
    // Without extensions every message in flight during the outage would come back once the
    // tenant answers again. moto's own races (see the first test) add a few copies in any run:
    // tolerated up to a third of what was in flight.
    assert!(
        outage.inflight_during_outage >= 10.0,
        "too few messages in flight for the test to mean anything: {}",
        outage.inflight_during_outage
    );
    let extra = |run: &OutageRun| run.messages_received - messages;
    assert!(extra(&baseline) <= 10.0, "{}", baseline.messages_received);
    assert!(
        extra(&outage) <= (outage.inflight_during_outage / 3.0).max(3.0),
        "{} messages received for {messages} with {} in flight during the outage: visibility not extended",
        outage.messages_received,
        outage.inflight_during_outage
    );
    assert!(outage.extensions > 0.0);
    assert_eq!(
        outage.stats.role_assignments,
        baseline.stats.role_assignments
    );
    assert_eq!(
        outage.stats.duplicate_assignments, baseline.stats.duplicate_assignments,
        "duplicate assignments after the outage"
    );
    // Calls that assigned something: retries answered 503 during the outage aside, no more
    // than without it.
    let writes = |s: &SimStats| s.calls_of("assign_user_roles") + s.calls_of("assign_role_users");
    assert!(
        writes(&outage.stats).saturating_sub(outage.stats.down_served)
            <= writes(&baseline.stats) + 5,
        "assignment calls: outage {} (of which down {}) vs baseline {}",
        writes(&outage.stats),
        outage.stats.down_served,
        writes(&baseline.stats)
    );
}

#[test]
fn sigterm_finishes_in_flight_messages_deletes_them_and_exits_zero() {
    let world = World::new("sigterm");
    let tenant = world.tenant(
        SimConfig {
            latency_ms: 20,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let queues = world.queues("sigterm");
    let stream = generate::mixed(24, 800, 0);
    world.publish(&queues, &stream.records);
    let mut service = world.service(
        "svc",
        &tenant,
        &queues,
        "visibility_timeout_seconds = 5\nmax_inflight = 40",
    );
    assert!(
        wait_for(Duration::from_secs(60), || tenant.roles().len() >= 30),
        "{}",
        service.log_text()
    );
    assert!(
        tenant.roles().len() < stream.expected.len(),
        "everything was done before the signal; the test proves nothing"
    );
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(20));
    let log = service.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("draining"), "{log}");
    assert!(!log.contains("shutdown grace over"), "{log}");
    // Every message it took was finished and deleted.
    let messages = logged_number(&log, "SQS consumer stopped", "messages");
    let deleted = logged_number(&log, "SQS consumer stopped", "deleted");
    assert!(messages.is_some_and(|m| m > 0), "{log}");
    assert_eq!(messages, deleted, "{log}");
    assert_eq!(
        logged_number(&log, "stopped", "abandoned"),
        Some(0),
        "{log}"
    );
    // The rest is there for the next consumer.
    tenant.sim.set_latency_ms(0);
    let next = world.service("next", &tenant, &queues, "visibility_timeout_seconds = 5");
    assert!(
        wait_for(Duration::from_secs(90), || tenant.roles()
            == stream.expected
            && world.depth(&queues.url) == 0),
        "{}",
        next.log_text()
    );
    assert_eq!(world.depth(&queues.dlq_url), 0);
}

#[test]
fn check_describes_the_sqs_source() {
    let dir = temp_dir("sqs-check");
    let path = dir.join("sqs.toml");
    std::fs::write(
        &path,
        "[source]\ntype = \"sqs\"\n[sqs]\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs\"\nconcurrency = 3\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("source: sqs queue https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs (3 receive loops of up to 10 messages, long polling 20 s, visibility timeout 60 s"),
        "{stdout}"
    );
}

#[test]
fn event_streams_cloud_events_through_eventbridge_give_every_user_their_roles_without_profile_reads(
) {
    use crate::event_streams::{cloud_stream, MALFORMED};
    let world = World::new("streams");
    let tenant = world.tenant(SimConfig::default(), Vec::new());
    let queues = world.queues("streams");
    // Event Streams to EventBridge: the detail is the CloudEvent, the detail-type its type. A
    // second rule routes them to the same queue as the log stream.
    let rule = "streams-user-events";
    world.events(
        "PutRule",
        json!({
            "Name": rule,
            "EventBusName": queues.bus,
            "EventPattern": json!({"detail-type": ["user.created", "user.updated", "user.deleted"]}).to_string(),
            "State": "ENABLED",
        }),
    );
    let arn = world.attribute(&queues.url, QueueAttributeName::QueueArn);
    world.events(
        "PutTargets",
        json!({"Rule": rule, "EventBusName": queues.bus, "Targets": [{"Id": "user-events", "Arn": arn}]}),
    );
    let (events, expected) = cloud_stream(40);
    let mut entries: Vec<Value> = events
        .iter()
        .map(|event| {
            let kind = event["type"].as_str().unwrap_or_default();
            json!({
                "Source": "aws.partner/auth0.com/acme/auth0.events",
                "DetailType": kind.strip_prefix("com.auth0.").unwrap_or(kind),
                "Detail": event.to_string(),
                "EventBusName": queues.bus,
            })
        })
        .collect();
    entries.push(json!({
        "Source": "aws.partner/auth0.com/acme/auth0.events",
        "DetailType": "user.created",
        "Detail": MALFORMED,
        "EventBusName": queues.bus,
    }));
    for chunk in entries.chunks(10) {
        let out = world.events("PutEvents", json!({"Entries": chunk}));
        assert_eq!(out["FailedEntryCount"], json!(0), "{out}");
    }
    let mut service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 3");
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(120), || tenant.roles() == expected
            && world.depth(&queues.url) == 0
            && world.depth(&queues.dlq_url) == 1),
        "not done: {} of {} users, queue {}, dead-letter queue {}\n{}\n{}",
        tenant.roles().len(),
        expected.len(),
        world.depth(&queues.url),
        world.depth(&queues.dlq_url),
        service.snapshot(),
        service.log_text()
    );
    assert_tenant_holds_exactly(&tenant.sim, &expected, &[&service]);
    assert_eq!(
        tenant.stats().calls_of("get_user"),
        0,
        "the events carry the profile"
    );
    let bodies = world.bodies(&queues.dlq_url);
    assert!(
        bodies.iter().any(|b| b.contains("evt_broken")),
        "the malformed CloudEvent is the dead letter: {bodies:?}"
    );
    service.signal("TERM");
    assert!(service
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}

#[test]
fn a_message_whose_task_panics_every_time_is_left_for_the_dead_letter_queue_and_its_neighbours_are_processed(
) {
    let world = World::new("panic");
    let stream = generate::mixed(71, 120, 0);
    let (poisoned, poisoned_user) = crate::supervision::poisoned_record(&stream);
    let tenant = world.tenant(
        SimConfig {
            accept_any_user: true,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let queues = world.queues("panic");
    world.publish(&queues, &stream.records);
    let service = world.service_with(
        "svc",
        &tenant,
        &queues,
        "visibility_timeout_seconds = 1",
        &[("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", poisoned.as_str())],
    );
    world.wait_dead_letters(&queues, 1, &service);
    let mut bodies = Vec::new();
    assert!(wait_for(Duration::from_secs(20), || {
        bodies.extend(world.bodies(&queues.dlq_url));
        !bodies.is_empty()
    }));
    assert!(bodies[0].contains(&poisoned), "{bodies:?}");
    assert!(
        wait_for(Duration::from_secs(60), || {
            crate::supervision::others_hold_their_roles(&tenant.roles(), &stream, &poisoned_user)
        }),
        "{}",
        service.log_text()
    );
    // Each receive ran the message three times before leaving it as failed.
    let panics = service.metric("auth0_default_roles_task_panics_total", "source=\"sqs\"");
    assert_eq!(
        panics,
        f64::from(3 * MAX_RECEIVE_COUNT),
        "{}",
        service.log_text()
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_sqs_messages_left_total",
            "reason=\"failed\""
        ),
        f64::from(MAX_RECEIVE_COUNT)
    );
}

/// An Event Streams test event (the Dashboard's test button) routed through EventBridge to the
/// queue: the message is deleted (answered as delivered), counted as `input="test"`, and costs no
/// Management API call; nothing reaches the dead-letter queue.
#[test]
fn an_event_streams_test_event_through_eventbridge_is_deleted_with_no_management_api_call() {
    let world = World::new("stream-test");
    let tenant = world.tenant(SimConfig::default(), Vec::new());
    let queues = world.queues("stream-test");
    let rule = "streams-test-events";
    world.events(
        "PutRule",
        json!({
            "Name": rule,
            "EventBusName": queues.bus,
            "EventPattern": json!({"detail-type": ["user.created", "user.updated"]}).to_string(),
            "State": "ENABLED",
        }),
    );
    let arn = world.attribute(&queues.url, QueueAttributeName::QueueArn);
    world.events(
        "PutTargets",
        json!({"Rule": rule, "EventBusName": queues.bus, "Targets": [{"Id": "test-events", "Arn": arn}]}),
    );
    let entries: Vec<Value> = ["user.created", "user.updated"]
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let event = mgmt_sim::event_streams::test_event(
                "acme.eu.auth0.com",
                "est_test0000000000000001",
                kind,
                &format!("evt_test{i}"),
            );
            json!({
                "Source": "aws.partner/auth0.com/acme/auth0.events",
                "DetailType": kind,
                "Detail": event.to_string(),
                "EventBusName": queues.bus,
            })
        })
        .collect();
    let out = world.events("PutEvents", json!({"Entries": entries}));
    assert_eq!(out["FailedEntryCount"], json!(0), "{out}");
    let mut service = world.service("svc", &tenant, &queues, "visibility_timeout_seconds = 3");
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || service.metric(
            "auth0_default_roles_events_received_total",
            "input=\"test\""
        ) == 2.0
            && world.depth(&queues.url) == 0),
        "test events not acknowledged: queue {}\n{}\n{}",
        world.depth(&queues.url),
        service.snapshot(),
        service.log_text()
    );
    assert_eq!(world.depth(&queues.dlq_url), 0);
    let stats = tenant.stats();
    let user_calls: u64 = [
        "get_user",
        "get_user_roles",
        "assign_user_roles",
        "assign_role_users",
    ]
    .iter()
    .map(|op| stats.calls_of(op))
    .sum();
    assert_eq!(
        user_calls, 0,
        "no Management API call for a test event: {stats:?}"
    );
    assert!(tenant.roles().is_empty());
    service.signal("TERM");
    assert!(service
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}
