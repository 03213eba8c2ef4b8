//! What the service's integration tests (`tests/it`) and end-to-end benches share, a crate of
//! its own (a dev-dependency: nothing that ships depends on it): free loopback ports and temp
//! directories, a real Kafka-protocol broker (tansu) per test with a producer and
//! committed-offset checks, the service binary as a child process (its endpoints, its
//! readiness), the simulated tenant with the check that it holds exactly the expected roles,
//! moto for SQS and a real PostgreSQL server ([`pg`]).

#![forbid(unsafe_code)]
// The wall clock (clippy.toml bans `std::time::Instant` and `std::thread::sleep` where tokio's
// time is meant): the harness waits on and times separate processes (the service binary,
// tansu, PostgreSQL, moto) from the caller's thread, which tokio's clock neither sees nor pauses.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod in_process;
pub mod pg;

pub use in_process::InProcessApp;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mgmt_sim::{RunningSimulator, Seed, SeedUser, SimConfig, Simulator};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A free loopback port (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The workspace's root folder (the service's `Cargo.toml`, `config/`, `deploy/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The service's binary. Cargo builds a package's binaries before its integration tests and
/// benches and tells them where (`CARGO_BIN_EXE_<name>`, at their compile time: not to a
/// dependency such as this crate), so it is found beside the running test or bench:
/// `target/<profile>/deps/<test>-<hash>` runs, `target/<profile>/auth0-default-roles` is the
/// binary. `CARGO_BIN_EXE_auth0-default-roles` in the environment, if set, wins.
pub fn service_bin() -> PathBuf {
    const NAME: &str = "auth0-default-roles";
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{NAME}")) {
        return PathBuf::from(path);
    }
    let test = std::env::current_exe().unwrap_or_else(|e| panic!("the running test: {e}"));
    let profile_dir = test
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", test.display()));
    let binary = profile_dir.join(format!("{NAME}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} was not built (run through cargo test or cargo bench)",
        binary.display()
    );
    binary
}

/// The two-worker runtime the tests run the simulator on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A simulated tenant with the demo policy's roles and `users`, on a free loopback port.
pub fn start_tenant(
    rt: &tokio::runtime::Runtime,
    config: SimConfig,
    users: Vec<SeedUser>,
) -> (Simulator, RunningSimulator) {
    let seed = Seed {
        users,
        ..Seed::with_roles(auth0_default_roles::generate::DEMO_ROLES)
    };
    let sim = Simulator::new(config, seed);
    let running = rt
        .block_on(sim.start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))))
        .unwrap_or_else(|e| panic!("{e}"));
    (sim, running)
}

/// A simulated tenant that knows every user id it is asked about (demo roles).
pub fn open_tenant(rt: &tokio::runtime::Runtime) -> (Simulator, RunningSimulator) {
    start_tenant(
        rt,
        SimConfig {
            accept_any_user: true,
            ..SimConfig::default()
        },
        Vec::new(),
    )
}

/// Asserts that the simulated tenant's users hold exactly the `expected` roles and nobody else
/// holds any; otherwise panics with the first differences and each service's metrics and log.
pub fn assert_tenant_holds_exactly(
    sim: &Simulator,
    expected: &BTreeMap<String, BTreeSet<String>>,
    services: &[&Service],
) {
    let held = sim.role_sets();
    if held != *expected {
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(u, r)| held.get(*u) != Some(r))
            .take(5)
            .collect();
        let unexpected: Vec<_> = held
            .keys()
            .filter(|u| !expected.contains_key(*u))
            .take(5)
            .collect();
        let services: Vec<String> = services
            .iter()
            .map(|s| format!("{}\n{}", s.snapshot(), s.log_text()))
            .collect();
        panic!(
            "tenant differs from the expected roles: {} users expected, {} hold roles; first wrong: {wrong:?}; unexpected: {unexpected:?}\nservices:\n{}",
            expected.len(),
            held.len(),
            services.join("\n----\n")
        );
    }
}

/// A fresh directory under the system temp dir.
/// The forum's policy from `config/example.toml` (the commented rules between the
/// `# --- forum policy begin` and `end` markers), uncommented.
pub fn forum_policy() -> String {
    let example = std::fs::read_to_string("config/example.toml").unwrap_or_else(|e| panic!("{e}"));
    let begin = example
        .find("# --- forum policy begin\n")
        .unwrap_or_else(|| panic!("no forum policy in the example"));
    let end = example
        .find("# --- forum policy end")
        .unwrap_or_else(|| panic!("no end marker"));
    example[begin..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("adr-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Where the tansu binary is: `TANSU_BIN`, else `~/.cargo/bin/tansu`, else `PATH`.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(home) = std::env::var("HOME") {
        let p = Path::new(&home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// A tansu broker with in-memory storage on a loopback port; killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, free_port())
    }

    /// Starts (or restarts) a broker on `port`.
    pub fn start_on(dir: &Path, port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = dir.join(format!("tansu-{port}.log"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .env("RUST_LOG", "warn")
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({}): {e}; run scripts/test.sh, which installs it",
                    tansu_bin().display()
                )
            });
        let broker = Broker {
            child: Some(child),
            port,
            log,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            wait_listening(addr, Duration::from_secs(20)),
            "tansu did not listen on {addr}: {}",
            std::fs::read_to_string(&broker.log).unwrap_or_default()
        );
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .output()
            .unwrap_or_else(|e| panic!("tansu topic create: {e}"));
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Records where each acknowledged message landed.
#[derive(Default)]
pub struct Acks {
    /// Partition → one past the highest acknowledged offset.
    pub ends: std::sync::Mutex<BTreeMap<i32, i64>>,
    pub failed: std::sync::atomic::AtomicUsize,
}

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        use rdkafka::Message;
        match result {
            Ok(m) => {
                let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            Err(_) => {
                self.failed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// Produces `records` (key, value) to `topic`, partitioned by key, and waits for every ack.
/// Returns, per partition, one past the highest offset written (from the delivery reports: the
/// broker's own high watermark is not used, so the check does not depend on ListOffsets).
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<String>, Vec<u8>)],
) -> BTreeMap<i32, i64> {
    // One record per batch: tansu 0.6.0 cannot serve a fetch starting inside a batch.
    produce_batched(bootstrap, topic, records, 1)
}

/// [`produce`] with up to `batch` records per record batch (only for consumers that never
/// resume from inside a batch on tansu: no pause, no restart).
pub fn produce_batched(
    bootstrap: &str,
    topic: &str,
    records: &[(Option<String>, Vec<u8>)],
    batch: usize,
) -> BTreeMap<i32, i64> {
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", batch.to_string())
        .set("message.timeout.ms", "300000")
        .create_with_context(Acks::default())
        .unwrap_or_else(|e| panic!("producer: {e}"));
    for (key, value) in records {
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(&value[..]);
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((err, back)) => {
                    // Queue full: serve delivery reports and try again.
                    assert!(
                        matches!(
                            err,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {err}"
                    );
                    producer.poll(Duration::from_millis(50));
                    pending = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("flush: {e}"));
    let acks = producer.context();
    assert_eq!(
        acks.failed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "some messages were not acknowledged"
    );
    let ends = acks.ends.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ends
}

/// The group's committed offsets for `topic` (-1 where nothing is committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("committed offsets: {e}"));
    (0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

/// A message read back from a topic.
#[derive(Debug)]
pub struct Consumed {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads every message of `topic` from the beginning (until `expect` were read or `timeout`).
pub fn read_all(bootstrap: &str, topic: &str, expect: usize, timeout: Duration) -> Vec<Consumed> {
    read_matching(bootstrap, topic, expect, timeout, |_| true)
}

/// Like [`read_all`], keeping only the messages `keep` accepts.
fn read_matching(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
    keep: impl Fn(&Consumed) -> bool,
) -> Vec<Consumed> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < expect && start.elapsed() < timeout {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            let consumed = Consumed {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            };
            if keep(&consumed) {
                out.push(consumed);
            }
        }
    }
    out
}

/// The service binary running `run --config`, its stderr in a file; killed on drop.
pub struct Service {
    child: Option<Child>,
    pub metrics_port: u16,
    pub log: PathBuf,
    /// Started under `SERVICE_WRAPPER` (a profiler) in a process group of its own: signals go
    /// to the group (the wrapper and the service), and `pid` is the service's, not the
    /// wrapper's.
    wrapped: Option<PathBuf>,
}

impl Service {
    pub fn start(config: &Path, metrics_port: u16, log: PathBuf) -> Service {
        Service::start_command("run", config, metrics_port, log, &[])
    }

    /// `ingest --config` with `AUTH0_WEBHOOK_TOKEN = token`, once it listens on `port`.
    pub fn start_ingest(
        config: &Path,
        port: u16,
        metrics_port: u16,
        log: PathBuf,
        token: &str,
    ) -> Service {
        let service = Service::start_command(
            "ingest",
            config,
            metrics_port,
            log,
            &[("AUTH0_WEBHOOK_TOKEN", token)],
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_listening(addr, Duration::from_secs(30)),
            "ingest did not listen\n{}",
            service.log_text()
        );
        service
    }

    /// Starts `auth0-default-roles <command> --config <config>` with extra environment (which
    /// may override the defaults, `RUST_LOG` included).
    pub fn start_command(
        command: &str,
        config: &Path,
        metrics_port: u16,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Service {
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        // SERVICE_WRAPPER (benches' profiling aid): a command the service runs under, e.g.
        // `perf record -g -o /tmp/service.perf --` or `heaptrack -o /tmp/service`.
        let binary = service_bin();
        let wrapper = std::env::var("SERVICE_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let wrapped = (!wrapper.trim().is_empty())
            .then(|| binary.canonicalize().unwrap_or_else(|_| binary.clone()));
        let mut command_line = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&binary);
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
            None => Command::new(binary),
        };
        let child = command_line
            .args([command, "--config"])
            .arg(config)
            .env("AUTH0_CLIENT_SECRET", "sim-secret")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the service: {e}"));
        Service {
            child: Some(child),
            metrics_port,
            log,
            wrapped,
        }
    }

    /// The service's process id (under a wrapper: the process of its group running the
    /// service's binary, else the wrapper's).
    pub fn pid(&self) -> u32 {
        let child = self.child.as_ref().map(Child::id).unwrap_or(0);
        let Some(binary) = &self.wrapped else {
            return child;
        };
        let in_group = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(") ")?.1.to_owned();
                    after.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(child)
        };
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                in_group(*pid)
                    && std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|exe| exe == *binary)
            })
            .unwrap_or(child)
    }

    /// Sends a signal (`TERM`, `KILL`, `INT`) with kill(1); under a wrapper, to its group.
    pub fn signal(&self, name: &str) {
        let target = match (&self.wrapped, &self.child) {
            (Some(_), Some(child)) => format!("-{}", child.id()),
            _ => self.pid().to_string(),
        };
        let status = Command::new("kill")
            .args([format!("-{name}"), "--".to_owned(), target])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// GET a path of the metrics server: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// The value of one metric line (exact name and labels as rendered), summed over matches
    /// when `labels` is a prefix filter.
    pub fn metric(&self, name: &str, label_filter: &str) -> f64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        metric_sum(&body, name, label_filter)
    }

    /// Waits (up to 60 s) for `/readyz` to answer 200; panics with the last answer and the log.
    pub fn wait_ready(&self) {
        assert!(
            wait_for(Duration::from_secs(60), || self
                .get("/readyz")
                .is_some_and(|(s, _)| s == 200)),
            "service never became ready: {:?}\n{}",
            self.get("/readyz"),
            self.log_text()
        );
    }

    /// Asserts that `/readyz` answers 503 and names `reason` within 20 s (transient failures
    /// turn it to 503 only once sustained for 5 s; service faults at once).
    pub fn assert_not_ready_because(&self, reason: &str) {
        assert_not_ready_because(self.metrics_port, reason);
    }

    /// The Kafka, in-flight and event metrics, for failure messages.
    pub fn snapshot(&self) -> String {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                [
                    "kafka_",
                    "sqs_",
                    "inflight",
                    "events_received",
                    "events_processed",
                    "mgmt_api_failing",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.wrapped.is_some() {
                // The wrapper's group: the service would outlive a killed wrapper.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts that `/readyz` on `metrics_port` answers 503 and names `reason` within 20 s.
pub fn assert_not_ready_because(metrics_port: u16, reason: &str) {
    let says = |ready: &Option<(u16, String)>| {
        ready
            .as_ref()
            .is_some_and(|(s, body)| *s == 503 && body.contains(reason))
    };
    let mut ready = http_get(metrics_port, "/readyz");
    let started = Instant::now();
    while !says(&ready) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        ready = http_get(metrics_port, "/readyz");
    }
    assert!(says(&ready), "{ready:?}");
}

/// Sums the samples of `name` whose label set contains `label_filter` (e.g. `outcome="assigned"`).
pub fn metric_sum(body: &str, name: &str, label_filter: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.contains(label_filter)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A minimal HTTP/1.0 POST on loopback: (status, body).
pub fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut head = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    // The server may answer (401, 413) before reading the whole body.
    let _ = stream.write_all(body);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A minimal HTTP/1.0 GET on loopback (no client dependency needed for three endpoints).
/// One log-stream delivery to `ingest` (JSON Lines on `/auth0/logs`, as Auth0 sends it) with
/// `token` as its `Authorization`: the HTTP status (0 when no answer came).
pub fn post_log_delivery(
    port: u16,
    token: &str,
    records: &[auth0_default_roles::generate::Record],
) -> u16 {
    let mut body = Vec::new();
    for r in records {
        body.extend_from_slice(&r.value);
        body.push(b'\n');
    }
    http_post(
        port,
        "/auth0/logs",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", token),
        ],
        &body,
    )
    .map_or(0, |(status, _)| status)
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Writes a `run` config for the simulator at `sim_url` and the broker, with the demo policy.
#[allow(clippy::too_many_arguments)]
pub fn write_config(
    dir: &Path,
    name: &str,
    sim_url: &str,
    bootstrap: &str,
    topic: &str,
    group: &str,
    dead_letter_topic: Option<&str>,
    metrics_port: u16,
    extra_kafka: &str,
) -> PathBuf {
    let policy = std::fs::read_to_string(workspace_root().join("config/demo.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let dlq = dead_letter_topic
        .map(|t| format!("dead_letter_topic = \"{t}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{sim_url}"
requests_per_second = 2000
burst = 500
batch_window_ms = 20

[source]
type = "kafka"

[kafka]
brokers = "{bootstrap}"
topic = "{topic}"
group_id = "{group}"
{dlq}commit_interval_ms = 300
shutdown_grace_seconds = 10
{extra_kafka}

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"statistics.interval.ms" = "500"

[metrics]
listen = "127.0.0.1:{metrics_port}"

{policy}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// The header of the record the service writes into its dead-letter topic at start.
pub const DEAD_LETTER_PROBE_HEADER: &str = "dlq.probe";

/// Like [`read_all`], for a dead-letter topic: the start-up probe records (header `dlq.probe`)
/// are skipped, as any reader of dead letters must skip them.
pub fn read_dead_letters(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    read_matching(bootstrap, topic, expect, timeout, |c| {
        !c.headers.contains_key(DEAD_LETTER_PROBE_HEADER)
    })
}

/// The number logged after ` key=` on the last log line containing `marker`.
pub fn logged_number(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Where moto_server is: `MOTO_SERVER`, else the virtualenv scripts/install-moto.sh creates.
pub fn moto_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|_| PathBuf::from(".cache"));
    let venv = cache.join("auth0-default-roles/moto-5.2.5/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

/// A moto server on a loopback port; killed on drop.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Moto {
    pub fn start(dir: &Path) -> Moto {
        let port = free_port();
        let log = dir.join("moto.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto_server ({}): {e}; run scripts/test.sh, which creates its virtualenv (or set MOTO_SERVER)",
                    moto_server_bin().display()
                )
            });
        let moto = Moto {
            child: Some(child),
            port,
            log,
        };
        assert!(
            wait_for(Duration::from_secs(60), || http_get(port, "/moto-api/")
                .is_some_and(|(s, _)| s == 200)),
            "moto did not answer on port {port}: {}",
            std::fs::read_to_string(&moto.log).unwrap_or_default()
        );
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SQS client for this server (test credentials, us-east-1).
    pub fn sqs_client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url(self.endpoint())
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "testing", "testing", None, None, "tests",
                ))
                .http_client(auth0_default_roles::source::sqs::https_client())
                .build(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
