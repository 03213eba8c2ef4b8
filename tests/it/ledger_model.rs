//! A model-based test of the ledger's decisions: random sequences of the tenant's life (events
//! delivered, redelivered and read late, hand grants and removals by an admin, a grant by an
//! admin racing the service's read-then-write, users deleted and re-created with the same id,
//! policy changes, restarts, `reconcile --revoke --apply`) run against the real pipeline, the
//! real ledger (SQLite; PostgreSQL too) and the simulated tenant, with a plain model of who gave
//! which role beside them. After every step the invariants are checked:
//!
//! 1. **The ledger never lists a grant the service's write did not add**: every standing grant
//!    names a role that its event's processing added to the user (seen in the tenant), except a
//!    role an admin gave in the window between the service's read of the user's roles and its
//!    write (the race the read cannot close: the write then "adds" a role already there).
//! 2. **`--revoke` never takes back a role the service did not grant**: what an apply removes is
//!    a role the service's write added to the current account (or the racing grant of 1). An
//!    admin who removed such a role and gave it back by hand is not told apart from the
//!    service's grant (no event says so for tenant roles): `--revoke` may take that one back.
//! 3. **An eligible user ends with the policy's roles** after each of its events, unless an
//!    admin removed them after the service granted them.
//! 4. **Nothing an admin removed after the service's grant comes back** (there is no
//!    `--restore` among the steps).
//! 5. **A crash between an accepted role write and its record** (the tenant applied the write,
//!    the process died before its answer came back) loses nothing: the grant was journaled
//!    (pending) before the write, the event is redelivered (it was never acknowledged), and
//!    the redelivery's read finds the roles held and settles the journal: after it the ledger
//!    lists, as standing grants of the crashed event, exactly the roles that write added (no
//!    pending grant of the user is left), so `--revoke` may take them back (2) and an admin's
//!    later removal of one is protected like any other (4); the user holds the policy's roles
//!    (3).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auth0_default_roles::app;
use auth0_default_roles::config::Config;
use auth0_default_roles::event::decode;
use auth0_default_roles::ledger::{Ledger, LedgerSettings};
use auth0_default_roles::metrics::Metrics;
use auth0_default_roles::pipeline::{Mode, Pipeline, SourceKind};
use auth0_default_roles::reconcile::{self, Output, Request};
use auth0_default_roles::shutdown::Shutdown;
use mgmt_sim::{RunningSimulator, SeedUser, SimConfig, Simulator};
use proptest::prelude::*;
use serde_json::json;

use test_harness::{start_tenant, temp_dir};

/// The users: a database user (signs up, then logs in) and two whose ids are stable across
/// re-creation (social, enterprise: their first login is their signup).
const USERS: [(&str, bool); 3] = [
    ("auth0|model-db", true),
    ("google-oauth2|1000000001", false),
    ("samlp|corp|model-e", false),
];
/// Roles: two the policy may give, one only admins give.
const ROLES: [&str; 3] = ["Viewer", "PARTNER", "CUSTOMER"];
/// Model time starts a day ago (no signup is fresh: every write reads the user's roles first)
/// and each step moves it on by this much (well past the re-creation margin).
const STEP_MS: i64 = 180_000;

#[derive(Debug, Clone)]
enum Step {
    /// The user's account logs its next trigger (signup, first login), delivered at once.
    Event(usize),
    /// The same, with an admin's hand grant of a role racing the read-then-write.
    RacingEvent(usize, usize),
    /// An earlier log line again (redelivery, or a log read late).
    Redeliver(usize),
    AdminGrant(usize, usize),
    AdminRemove(usize, usize),
    /// Deleted; its log (`sdu`) delivered now, or left for a later `Redeliver`.
    Delete(usize, bool),
    /// Created again with the same id (a new account).
    Recreate(usize),
    /// The partners rule added or dropped (a restart with the other policy).
    TogglePolicy,
    /// The user's next trigger, and the service crashes once the tenant applied its role
    /// write (before the answer, so before the record); restarted, the event is redelivered.
    CrashAfterWrite(usize),
    /// The service restarts (its memory goes; the ledger stays).
    Restart,
    RevokeApply,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize).prop_map(Step::Event),
        1 => (0..3usize, 0..3usize).prop_map(|(u, r)| Step::RacingEvent(u, r)),
        2 => (0..64usize).prop_map(Step::Redeliver),
        2 => (0..3usize, 0..3usize).prop_map(|(u, r)| Step::AdminGrant(u, r)),
        2 => (0..3usize, 0..3usize).prop_map(|(u, r)| Step::AdminRemove(u, r)),
        1 => (0..3usize, any::<bool>()).prop_map(|(u, now)| Step::Delete(u, now)),
        2 => (0..3usize).prop_map(Step::Recreate),
        1 => Just(Step::TogglePolicy),
        1 => Just(Step::Restart),
        1 => (0..3usize).prop_map(Step::CrashAfterWrite),
        1 => Just(Step::RevokeApply),
    ]
}

/// One account of a user, as the model knows it.
#[derive(Debug, Clone, Default)]
struct Account {
    /// Unix milliseconds: a signup is dated then (its log may be read much later).
    created_at: i64,
    signed_up: bool,
    logged_in: bool,
}

/// The plain model: who gave which role, per user's current account.
#[derive(Debug, Default)]
struct Model {
    clock: i64,
    accounts: Vec<Option<Account>>,
    log: Vec<(String, serde_json::Value)>,
    partners: bool,
    /// Roles the service's writes added to the current account (or raced in, see 1): what
    /// `--revoke` may take back.
    service_added: Vec<BTreeSet<String>>,
    /// Roles an admin removed after the service granted them in this account.
    admin_removed: Vec<BTreeSet<String>>,
    /// (user, event id) → roles that event's processing added.
    added_by_event: BTreeMap<(String, String), BTreeSet<String>>,
    /// (user, event id) → a role an admin gave between the read and the write of it.
    raced_by_event: BTreeMap<(String, String), BTreeSet<String>>,
    next_log: u64,
}

impl Model {
    fn policy_roles(&self) -> BTreeSet<String> {
        let mut roles = BTreeSet::from(["Viewer".to_owned()]);
        if self.partners {
            roles.insert("PARTNER".to_owned());
        }
        roles
    }

    fn date(&self) -> String {
        date(self.clock)
    }

    fn log_id(&mut self) -> String {
        self.next_log += 1;
        format!("900202612{:047}", self.next_log)
    }
}

fn date(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

fn account(model: &Model) -> Account {
    Account {
        created_at: model.clock,
        ..Account::default()
    }
}

const POLICY_BASE: &str = "[policy]\nevents = [\"signup\", \"first_login\"]\n\n[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n";
const PARTNERS_RULE: &str = "\n[[policy.rules]]\nname = \"partners\"\nwhen = { email_domain = [\"partner.example\"] }\nassign = [\"PARTNER\"]\n";

/// The real side: the simulated tenant, the ledger, and the pipeline of the running "service".
struct Real {
    rt: tokio::runtime::Runtime,
    sim: Simulator,
    running: Option<RunningSimulator>,
    dir: PathBuf,
    ledger_url: String,
    pipeline: Option<Pipeline>,
    ledger: Ledger,
}

impl Real {
    fn start(ledger_url: String, dir: PathBuf) -> Real {
        let rt = test_harness::runtime();
        let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
        let ledger = rt
            .block_on(Ledger::open(
                &LedgerSettings {
                    url: ledger_url.clone(),
                },
                "model-reader",
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        Real {
            rt,
            sim,
            running: Some(running),
            dir,
            ledger_url,
            pipeline: None,
            ledger,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("model.toml")
    }

    fn config(&self, partners: bool) -> Config {
        let base_url = self
            .running
            .as_ref()
            .map(|r| r.base_url.clone())
            .unwrap_or_default();
        let text = format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 0\n\n[ledger]\nurl = \"{}\"\n\n{POLICY_BASE}{}",
            self.ledger_url,
            if partners { PARTNERS_RULE } else { "" }
        );
        std::fs::write(self.config_path(), &text).unwrap_or_else(|e| panic!("{e}"));
        let env = |name: &str| (name == "AUTH0_CLIENT_SECRET").then(|| "sim-secret".to_owned());
        Config::from_toml(&text, &self.config_path(), &env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (Re)starts the service with the policy of `partners`.
    fn restart(&mut self, partners: bool) {
        let config = self.config(partners);
        self.pipeline = None;
        let pipeline = self.rt.block_on(async {
            let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
            app::connect(&config, metrics, Mode::Live, SourceKind::Replay).await
        });
        self.pipeline = Some(pipeline.unwrap_or_else(|e| panic!("{e}")));
    }

    fn deliver(&self, line: &serde_json::Value) {
        let bytes = serde_json::to_vec(line).unwrap_or_default();
        let Some(pipeline) = &self.pipeline else {
            panic!("no service running")
        };
        self.rt.block_on(async {
            for item in decode(&bytes) {
                pipeline.process(item).await;
            }
        });
    }

    /// Delivers `line` and crashes the service as soon as the tenant has applied a role write
    /// to `user` (its answer held back, so before any record): the process's work is dropped
    /// where it stands and the service restarts. Whether it crashed (`false`: the event ended
    /// without a write, nothing to crash on).
    fn deliver_crashing_after_write(&mut self, line: &serde_json::Value, user: &str) -> bool {
        let bytes = serde_json::to_vec(line).unwrap_or_default();
        let before = self.held(user);
        self.sim.set_assignment_answer_delay_ms(1_000);
        let Some(pipeline) = &self.pipeline else {
            panic!("no service running")
        };
        let sim = &self.sim;
        let crashed = self.rt.block_on(async {
            let work = async {
                for item in decode(&bytes) {
                    pipeline.process(item).await;
                }
            };
            let applied = async {
                while sim
                    .user_role_names(user)
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    == before
                {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            };
            tokio::select! {
                _ = work => false,
                _ = applied => true,
            }
        });
        self.sim.set_assignment_answer_delay_ms(0);
        crashed
    }

    fn held(&self, user: &str) -> BTreeSet<String> {
        self.sim.user_role_names(user).into_iter().collect()
    }

    fn standing(&self) -> Vec<auth0_default_roles::ledger::Grant> {
        let users: Vec<&str> = USERS.iter().map(|(u, _)| *u).collect();
        let granted = self
            .rt
            .block_on(self.ledger.granted(&users))
            .unwrap_or_else(|e| panic!("{e}"));
        granted.into_values().flatten().collect()
    }

    fn pending_grants(&self, user: &str) -> Vec<auth0_default_roles::ledger::Grant> {
        self.rt
            .block_on(self.ledger.history(user))
            .unwrap_or_else(|e| panic!("{e}"))
            .pending_grants
    }

    fn revoke_apply(&self, partners: bool) -> String {
        let config = self.config(partners);
        let request = Request {
            apply: true,
            output: Output::Summary,
            users: None,
            rate_share: 1.0,
            state: Some(self.dir.join("reconcile-state")),
            polling: reconcile::Polling {
                first: std::time::Duration::from_millis(20),
                cap: std::time::Duration::from_millis(100),
            },
            revoke: true,
            restore: false,
            max_revocations: 1000,
        };
        let _ = std::fs::remove_dir_all(self.dir.join("reconcile-state"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = self.rt.block_on(reconcile::run(
            &config,
            &request,
            Shutdown::new(),
            &mut out,
            &mut err,
        ));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
        assert!(matches!(code, Ok(0)), "reconcile: {code:?}\n{said}");
        said
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        self.pipeline = None;
        if let Some(running) = self.running.take() {
            self.rt.block_on(running.shutdown());
        }
    }
}

fn seed(user: &str, created_at: String) -> SeedUser {
    SeedUser {
        email: Some(format!("{}@partner.example", user.replace(['|', '-'], "."))),
        email_verified: Some(true),
        created_at: Some(created_at),
        ..SeedUser::new(user)
    }
}

/// Runs `steps` against the model and the real side (a fresh tenant and ledger), checking the
/// invariants after each.
fn run(steps: &[Step], ledger_url: String, dir: &Path) {
    let mut real = Real::start(ledger_url, dir.to_path_buf());
    let mut model = Model {
        clock: auth0_default_roles::ledger::now_millis() - 86_400_000,
        partners: true,
        service_added: vec![BTreeSet::new(); USERS.len()],
        admin_removed: vec![BTreeSet::new(); USERS.len()],
        ..Model::default()
    };
    for (user, _) in USERS {
        real.sim.add_user(seed(user, model.date()));
        model.accounts.push(Some(account(&model)));
    }
    real.restart(model.partners);
    for (n, step) in steps.iter().enumerate() {
        model.clock += STEP_MS;
        let context = format!("step {n} {step:?} of {steps:?}");
        apply(&mut model, &mut real, step, &context);
        check(&model, &real, &context);
    }
}

/// The next trigger of user `u`'s account, as a log line (or none: it has logged both).
fn next_event(model: &mut Model, u: usize) -> Option<serde_json::Value> {
    let (user, database) = USERS[u];
    let now = model.date();
    let log_id = model.log_id();
    let account = model.accounts[u].as_mut()?;
    let data = if database && !account.signed_up {
        account.signed_up = true;
        json!({"type": "ss", "date": date(account.created_at), "user_id": user, "connection": "Username-Password-Authentication", "strategy": "auth0", "details": {"body": {"email": format!("{}@partner.example", user.replace(['|', '-'], "."))}}})
    } else if !account.logged_in {
        account.logged_in = true;
        let connection = if database {
            "Username-Password-Authentication"
        } else {
            user.split('|').next().unwrap_or("social")
        };
        json!({"type": "s", "date": now, "user_id": user, "connection": connection, "client_id": "app", "details": {"stats": {"loginsCount": 1}}})
    } else {
        return None;
    };
    Some(json!({"log_id": log_id, "data": data}))
}

fn log_id_of(line: &serde_json::Value) -> String {
    line["log_id"].as_str().unwrap_or_default().to_owned()
}

/// Delivers `line` for user `u`; `raced` is the role an admin granted in the race window (when
/// the read fired). Returns what the processing added.
fn deliver_and_account(
    model: &mut Model,
    real: &Real,
    u: usize,
    line: &serde_json::Value,
    raced: Option<&str>,
) {
    let user = USERS[u].0;
    let before = real.held(user);
    let reads = real.sim.stats().calls_of("get_user_roles");
    real.deliver(line);
    let fired = raced.filter(|_| real.sim.stats().calls_of("get_user_roles") > reads);
    // Disarm a racing grant that found no read to follow.
    real.sim.grant_by_hand_after_next_role_read(user, &[]);
    let after = real.held(user);
    let mut added: BTreeSet<String> = after.difference(&before).cloned().collect();
    let key = (user.to_owned(), log_id_of(line));
    if let Some(role) = fired {
        // The admin's grant landed between the read and the write: the admin's, unless the
        // service's write named it too (the policy gives it and the read saw it missing), in
        // which case the ledger claims it: the race the read cannot close (invariant 1 allows
        // it; so does invariant 2, since `--revoke` then takes it back).
        added.remove(role);
        model.admin_removed[u].remove(role);
        model
            .raced_by_event
            .entry(key.clone())
            .or_default()
            .insert(role.to_owned());
        let claimed = real
            .standing()
            .iter()
            .any(|g| g.user_id == user && g.role_name == role && g.event_id == key.1);
        if claimed && model.accounts[u].is_some() {
            model.service_added[u].insert(role.to_owned());
        }
    }
    if model.accounts[u].is_some() {
        model.service_added[u].extend(added.iter().cloned());
    }
    model.added_by_event.entry(key).or_default().extend(added);
}

fn apply(model: &mut Model, real: &mut Real, step: &Step, context: &str) {
    match step {
        Step::Event(u) | Step::RacingEvent(u, _) => {
            let Some(line) = next_event(model, *u) else {
                return;
            };
            model.log.push((USERS[*u].0.to_owned(), line.clone()));
            let raced = match step {
                Step::RacingEvent(_, r) => {
                    real.sim
                        .grant_by_hand_after_next_role_read(USERS[*u].0, &[ROLES[*r]]);
                    Some(ROLES[*r])
                }
                _ => None,
            };
            deliver_and_account(model, real, *u, &line, raced);
            // 3: an eligible user ends with the policy's roles unless an admin removed them.
            let expected: BTreeSet<String> = model
                .policy_roles()
                .difference(&model.admin_removed[*u])
                .cloned()
                .collect();
            let held = real.held(USERS[*u].0);
            assert!(
                expected.is_subset(&held),
                "invariant 3: {} holds {held:?}, the policy gives {expected:?}\n{context}",
                USERS[*u].0
            );
        }
        Step::Redeliver(i) => {
            if model.log.is_empty() {
                return;
            }
            let (user, line) = model.log[i % model.log.len()].clone();
            let u = USERS.iter().position(|(id, _)| *id == user).unwrap_or(0);
            deliver_and_account(model, real, u, &line, None);
        }
        Step::AdminGrant(u, r) => {
            let (user, role) = (USERS[*u].0, ROLES[*r]);
            if model.accounts[*u].is_none() || real.held(user).contains(role) {
                return;
            }
            real.sim.grant_by_hand(user, &[role]);
            model.admin_removed[*u].remove(role);
        }
        Step::AdminRemove(u, r) => {
            let (user, role) = (USERS[*u].0, ROLES[*r]);
            if !real.held(user).contains(role) {
                return;
            }
            real.sim.remove_by_hand(user, &[role]);
            if model.service_added[*u].contains(role) {
                model.admin_removed[*u].insert(role.to_owned());
            }
        }
        Step::Delete(u, now) => {
            if model.accounts[*u].is_none() {
                return;
            }
            let user = USERS[*u].0;
            real.sim.delete_user(user);
            model.accounts[*u] = None;
            model.service_added[*u].clear();
            model.admin_removed[*u].clear();
            let line = json!({"log_id": model.log_id(), "data": {"type": "sdu", "date": model.date(), "user_id": user, "description": "Deleted user"}});
            model.log.push((user.to_owned(), line.clone()));
            if *now {
                real.deliver(&line);
            }
        }
        Step::Recreate(u) => {
            if model.accounts[*u].is_some() {
                return;
            }
            real.sim.add_user(seed(USERS[*u].0, model.date()));
            model.accounts[*u] = Some(account(model));
        }
        Step::CrashAfterWrite(u) => {
            let Some(line) = next_event(model, *u) else {
                return;
            };
            let user = USERS[*u].0;
            model.log.push((user.to_owned(), line.clone()));
            let before = real.held(user);
            if !real.deliver_crashing_after_write(&line, user) {
                // No write to crash on: an ordinary delivery, accounted as one.
                model
                    .added_by_event
                    .entry((user.to_owned(), log_id_of(&line)))
                    .or_default();
                return;
            }
            let added: BTreeSet<String> = real.held(user).difference(&before).cloned().collect();
            model.service_added[*u].extend(added.iter().cloned());
            model
                .added_by_event
                .entry((user.to_owned(), log_id_of(&line)))
                .or_default()
                .extend(added.iter().cloned());
            // Restarted, the broker redelivers the unacknowledged event.
            real.restart(model.partners);
            deliver_and_account(model, real, *u, &line, None);
            // 5: the redelivery's read finds the roles held and settles the journal: exactly the
            // roles the write added are standing grants of the crashed event, none pending.
            let event_id = log_id_of(&line);
            let claimed: BTreeSet<String> = real
                .standing()
                .into_iter()
                .filter(|g| g.user_id == user && g.event_id == event_id)
                .map(|g| g.role_name)
                .collect();
            assert_eq!(
                claimed, added,
                "invariant 5: after the crash the ledger records {claimed:?} for {user} by event {event_id}, the crashed write added {added:?}\n{context}"
            );
            let pending = real.pending_grants(user);
            assert!(
                pending.is_empty(),
                "invariant 5: pending grants left after the redelivery: {pending:?}\n{context}"
            );
            CRASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // ...and the user ends with the policy's roles all the same (3).
            let expected: BTreeSet<String> = model
                .policy_roles()
                .difference(&model.admin_removed[*u])
                .cloned()
                .collect();
            let held = real.held(user);
            assert!(
                expected.is_subset(&held),
                "invariant 3 after a crash: {user} holds {held:?}, the policy gives {expected:?}\n{context}"
            );
        }
        Step::TogglePolicy => {
            model.partners = !model.partners;
            real.restart(model.partners);
        }
        Step::Restart => real.restart(model.partners),
        Step::RevokeApply => {
            // reconcile records its grants at the wall clock's time, and the model's time runs
            // ahead of it after the first apply (each step is minutes): a second apply would
            // record grants dated before the accounts and events that precede it in the model.
            // So one apply per sequence, the first.
            if model.clock > auth0_default_roles::ledger::now_millis() {
                return;
            }
            let before: Vec<BTreeSet<String>> = USERS.iter().map(|(u, _)| real.held(u)).collect();
            let said = real.revoke_apply(model.partners);
            // reconcile records its grants at the wall clock's time: the model's time moves
            // past it, so later events and accounts come after them, as they would.
            model.clock = model
                .clock
                .max(auth0_default_roles::ledger::now_millis() + 2 * STEP_MS);
            for (u, (user, _)) in USERS.iter().enumerate() {
                let after = real.held(user);
                let removed: BTreeSet<String> = before[u].difference(&after).cloned().collect();
                // 2: only what the service's write added to this account.
                assert!(
                    removed.is_subset(&model.service_added[u]),
                    "invariant 2: reconcile --revoke took {removed:?} from {user}, the service added {:?}\n{said}\n{context}",
                    model.service_added[u]
                );
                for role in &removed {
                    model.service_added[u].remove(role);
                }
                let added: BTreeSet<String> = after.difference(&before[u]).cloned().collect();
                model.service_added[u].extend(added.iter().cloned());
                model
                    .added_by_event
                    .entry(((*user).to_owned(), "reconcile".to_owned()))
                    .or_default()
                    .extend(added);
            }
        }
    }
}

fn check(model: &Model, real: &Real, context: &str) {
    // 1: every standing grant was added by its event's processing.
    for grant in real.standing() {
        let key = (grant.user_id.clone(), grant.event_id.clone());
        let added = model.added_by_event.get(&key);
        let raced = model.raced_by_event.get(&key);
        assert!(
            added.is_some_and(|a| a.contains(&grant.role_name))
                || raced.is_some_and(|r| r.contains(&grant.role_name)),
            "invariant 1: the ledger claims {} for {} by event {}, which added {added:?}\n{context}",
            grant.role_name,
            grant.user_id,
            grant.event_id
        );
    }
    // 4: nothing an admin removed after the service's grant is back.
    for (u, (user, _)) in USERS.iter().enumerate() {
        let held = real.held(user);
        let back: Vec<&String> = model.admin_removed[u].intersection(&held).collect();
        assert!(
            back.is_empty(),
            "invariant 4: {user} holds {back:?} again after an admin removed them\n{context}"
        );
    }
}

/// Crashes that landed between an accepted write and its record, over the cases run (printed:
/// a run whose crashes never hit that window tests nothing of invariant 5).
static CRASHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Cases per test: `default`, or `LEDGER_MODEL_CASES` to run more.
fn cases(default: u32) -> u32 {
    std::env::var("LEDGER_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The cases' seed: fixed, so that CI runs the same sequences every time; set
/// `LEDGER_MODEL_SEED` to explore others (a failure prints its minimal sequence).
fn cases_seed() -> proptest::test_runner::RngSeed {
    let seed = std::env::var("LEDGER_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_206);
    proptest::test_runner::RngSeed::Fixed(seed)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(48),
        max_shrink_iters: 200,
        rng_seed: cases_seed(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_ledger_tells_the_truth_on_sqlite(steps in prop::collection::vec(step(), 1..40)) {
        let dir = temp_dir("ledger-model");
        let url = format!("sqlite://{}", dir.join("ledger.db").display());
        run(&steps, url, &dir);
        eprintln!("crashes between an accepted write and its record so far: {}", CRASHES.load(std::sync::atomic::Ordering::Relaxed));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(12),
        max_shrink_iters: 100,
        rng_seed: cases_seed(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_ledger_tells_the_truth_on_postgresql(steps in prop::collection::vec(step(), 1..30)) {
        let server = test_harness::pg::shared();
        let dir = temp_dir("ledger-model-pg");
        run(&steps, server.database("model"), &dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
