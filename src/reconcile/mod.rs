//! `reconcile`: brings every existing user in line with the policy. Reads who exists (a
//! users-export job, or `--users FILE`), what they hold (each policy role's members by
//! checkpoint pages), judges each user as if each trigger had happened, and prints the missing
//! (user, role) pairs (plan) or adds them with bulk calls (`--apply`), resumable through
//! `--state FILE`.

pub mod export;
pub mod members;
pub mod organizations;
pub mod revoke;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::app::{Env, StartError, EXIT_FAILED};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mgmt::assigner::assign_role_with_id;
use crate::mgmt::{CallStats, ClientSettings, MgmtClient, MgmtError, RoleDirectory};
use crate::policy::{Evaluation, Policy};
use crate::progress::Progress;
use crate::shutdown::Shutdown;

use crate::ledger::{Grant, Ledger};
use export::{ExportError, Polling, Users};
use members::{Memberships, UserSet};
use state::{Entry, Journal, Resume};

/// Bulk writes in flight at once (the limiter paces them; this hides their latency).
pub(crate) const WRITERS: usize = 4;
/// Failed users listed in the summary at most (all are in the state file).
pub(crate) const FAILED_SHOWN: usize = 50;
/// Bad export lines whose numbers the summary lists at most.
const BAD_LINES_SHOWN: usize = 10;
/// A failed part of at most this many users is retried one user at a time, not halved.
const SPLIT_TO_SINGLES: usize = 4;
/// Fresh locations asked of the job when the download's pre-signed URL has expired.
const LOCATION_RENEWALS: u32 = 3;
/// After a stop signal, how often the batches still in flight are checked for being stuck in a
/// fault of the service (then they are abandoned).
const STUCK_CHECK: Duration = Duration::from_millis(250);

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per user missing something (stdout); the summary goes to stderr.
    Jsonl,
    /// The summary only (stdout).
    Summary,
}

/// What `reconcile` was asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    pub apply: bool,
    pub output: Output,
    /// An export already downloaded (gzipped or plain NDJSON) instead of an export job.
    pub users: Option<PathBuf>,
    /// The share (0 < F ≤ 1) of `requests_per_second` and `burst` this run may spend.
    pub rate_share: f64,
    pub state: Option<PathBuf>,
    /// How the export job is awaited.
    pub polling: Polling,
    /// Also take back the ledger's grants the policy no longer gives (needs `[ledger]`).
    pub revoke: bool,
    /// Give back the ledger's grants someone removed that the policy still gives (needs
    /// `[ledger]`); without it such roles are left removed.
    pub restore: bool,
    /// An apply removing more (user, role) pairs than this removes none and stops (exit 2).
    pub max_revocations: usize,
}

/// `--max-revocations` by default.
pub const MAX_REVOCATIONS: usize = 100;
/// Users whose standing grants are read from the ledger in one query.
const LEDGER_CHUNK: usize = 500;

/// The rate and burst a share `F` of the tenant's gets: `requests_per_second × F` and
/// `⌊burst × F⌋` (at least 1). `F` outside (0, 1] is refused.
pub fn share_rate(requests_per_second: f64, burst: u32, share: f64) -> Result<(f64, u32), String> {
    if !(share > 0.0 && share <= 1.0) {
        return Err(format!(
            "--rate-share must be above 0 and at most 1 (got {share})"
        ));
    }
    let burst = ((f64::from(burst) * share).floor() as u32).max(1);
    Ok((requests_per_second * share, burst))
}

/// One plan line: a user missing roles, and the rules that give them.
#[derive(Debug, Serialize)]
struct PlanLine<'a> {
    user_id: &'a str,
    roles: &'a [String],
    rules: &'a [String],
    /// Roles to take back (`--revoke`), and the rules that had granted them.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    remove: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    remove_rules: &'a [String],
}

/// Counts of a finished (or interrupted) reconcile.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub apply: bool,
    /// Where the users came from.
    pub source: String,
    pub users_scanned: u64,
    pub bad_lines: u64,
    pub first_bad_lines: Vec<usize>,
    /// Users missing at least one role.
    pub users_missing: u64,
    /// Missing (user, role) pairs by role.
    pub pairs_by_role: BTreeMap<String, u64>,
    /// Rules never applied to existing users, and why.
    pub rules_skipped: Vec<(String, String)>,
    /// Users for whom a rule stayed undecided, by `rule.key`.
    pub undecided: BTreeMap<String, u64>,
    pub members_listed: usize,
    pub membership_bytes: usize,
    /// Pairs a resumed apply found done by its earlier run, and the batches it had written.
    pub resumed_pairs: usize,
    pub resumed_batches: usize,
    pub assigned_by_role: BTreeMap<String, u64>,
    pub batches: u64,
    /// Batches whose bulk call failed for some users (a 404 for a user deleted since the
    /// export) and were split to find them.
    pub split_batches: u64,
    /// (user, role, error) of every pair that failed.
    pub failed: Vec<(String, String, String)>,
    pub failed_total: u64,
    pub export_bytes: Option<u64>,
    pub calls: CallStats,
    pub elapsed: Duration,
    pub interrupted: bool,
    /// The fault of the service that stopped the run (a role deleted meanwhile): the export
    /// was read no further, no new batch was started, those in flight were finished, and the
    /// run exits with it.
    pub stopped_by: Option<MgmtError>,
    /// Batches in flight at a stop that could not finish (the tenant refused the service, or
    /// a batch's task died): not journaled, so the next run writes them again.
    pub abandoned_batches: u64,
    pub abandoned_pairs: u64,
    /// The ledger in use (`[ledger]`), if any.
    pub ledger: Option<String>,
    /// Pairs the policy gives that the ledger says this service granted and someone removed
    /// since: left removed (`--restore` gives them back), by role.
    pub left_removed_by_role: BTreeMap<String, u64>,
    /// Of the pairs to add, those given back on purpose (`--restore`).
    pub restored: u64,
    pub revoke: bool,
    /// Users with a grant to take back, and those (user, role) pairs by role.
    pub users_to_revoke: u64,
    pub revocations_by_role: BTreeMap<String, u64>,
    /// Standing grants kept only because a rule that could give them stayed undecided.
    pub kept_undecided: BTreeMap<String, u64>,
    /// Standing grants the policy no longer gives whose role the user no longer holds.
    pub revoked_elsewhere: u64,
    /// Pairs removed by `--apply`, by role.
    pub removed_by_role: BTreeMap<String, u64>,
    /// `--apply` planned more removals than `--max-revocations` and removed none.
    pub revocations_refused: Option<(u64, usize)>,
    /// (user, error) of every removal that failed.
    pub removal_failed: Vec<(String, String)>,
    /// The ledger failed to record what was written: the run stopped (exit 1).
    pub ledger_failed: Option<String>,
}

impl Summary {
    pub fn pairs(&self) -> u64 {
        self.pairs_by_role.values().sum()
    }

    pub fn assigned(&self) -> u64 {
        self.assigned_by_role.values().sum()
    }

    /// The human-readable summary.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mode = if self.apply {
            "apply"
        } else {
            "plan (nothing written)"
        };
        writeln!(out, "reconcile: {mode}")?;
        writeln!(
            out,
            "users: {} scanned from {}",
            self.users_scanned, self.source
        )?;
        if self.bad_lines > 0 {
            let shown: Vec<String> = self.first_bad_lines.iter().map(|n| n.to_string()).collect();
            writeln!(
                out,
                "  {} lines were not users and were skipped (lines {}{})",
                self.bad_lines,
                shown.join(", "),
                if self.bad_lines as usize > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            out,
            "memberships: {} members listed, {} KiB held ({} bytes per member)",
            self.members_listed,
            self.membership_bytes / 1024,
            std::mem::size_of::<u128>()
        )?;
        if self.resumed_batches > 0 {
            writeln!(
                out,
                "resumed: {} batches ({} pairs) written by the interrupted run were not repeated",
                self.resumed_batches, self.resumed_pairs
            )?;
        }
        writeln!(
            out,
            "to add: {} users missing {} (user, role) pairs",
            self.users_missing,
            self.pairs()
        )?;
        for (role, n) in &self.pairs_by_role {
            writeln!(out, "  {role:<20} {n} users")?;
        }
        for (rule, why) in &self.rules_skipped {
            writeln!(out, "rule skipped for existing users: {rule} ({why})")?;
        }
        for (label, n) in &self.undecided {
            writeln!(
                out,
                "undecided for {n} users: {label} (rule not applied to them)"
            )?;
        }
        if let Some(ledger) = &self.ledger {
            writeln!(out, "ledger: {ledger}")?;
        }
        for (role, n) in &self.left_removed_by_role {
            writeln!(
                out,
                "left removed: {role:<14} {n} users (granted by this service, removed since by someone else; --restore gives them back)"
            )?;
        }
        if self.restored > 0 {
            writeln!(
                out,
                "restored: {} of the pairs to add were granted before and removed since (--restore)",
                self.restored
            )?;
        }
        if self.revoke {
            writeln!(
                out,
                "to remove: {} users holding {} (user, role) pairs this service granted and the policy no longer gives",
                self.users_to_revoke,
                self.revocations_by_role.values().sum::<u64>()
            )?;
            for (role, n) in &self.revocations_by_role {
                writeln!(out, "  {role:<20} {n} users")?;
            }
            for (label, n) in &self.kept_undecided {
                writeln!(
                    out,
                    "kept for {n} users: undecided {label} (an undecided rule never removes)"
                )?;
            }
            if self.revoked_elsewhere > 0 {
                writeln!(
                    out,
                    "already gone: {} pairs the policy no longer gives were removed by someone else",
                    self.revoked_elsewhere
                )?;
            }
        }
        if let Some((planned, max)) = self.revocations_refused {
            writeln!(
                out,
                "removed: none: {planned} pairs to remove are more than --max-revocations {max}; check the plan (--output jsonl) and raise --max-revocations to apply it"
            )?;
        } else if self.apply && self.revoke {
            writeln!(
                out,
                "removed: {} pairs",
                self.removed_by_role.values().sum::<u64>()
            )?;
            for (role, n) in &self.removed_by_role {
                writeln!(out, "  {role:<20} {n} users")?;
            }
        }
        for (user, error) in &self.removal_failed {
            writeln!(out, "  could not remove: user_id={user} error={error}")?;
        }
        if self.apply {
            writeln!(
                out,
                "added: {} pairs in {} batches ({} split to find the users a bulk call failed for)",
                self.assigned(),
                self.batches,
                self.split_batches
            )?;
            for (role, n) in &self.assigned_by_role {
                writeln!(out, "  {role:<20} {n} users")?;
            }
        }
        writeln!(out, "management API calls: {}", self.calls.total())?;
        for (operation, n) in &self.calls.calls {
            writeln!(out, "  {:<18} {n}", operation.as_str())?;
        }
        writeln!(out, "  429 answers        {}", self.calls.rate_limited)?;
        writeln!(out, "  retries            {}", self.calls.retries)?;
        if let Some(bytes) = self.export_bytes {
            writeln!(
                out,
                "export download: {bytes} bytes (not a Management API call)"
            )?;
        }
        if self.apply && self.users_missing > 0 {
            writeln!(
                out,
                "write calls per user missing roles: {:.3}",
                self.calls.writes() as f64 / self.users_missing as f64
            )?;
        }
        writeln!(out, "elapsed: {:.1} s", self.elapsed.as_secs_f64())?;
        if self.failed_total > 0 {
            writeln!(out, "failed: {} pairs", self.failed_total)?;
            for (user, role, error) in &self.failed {
                writeln!(out, "  user_id={user} role={role} error={error}")?;
            }
            if self.failed_total as usize > self.failed.len() {
                writeln!(out, "  ... (every failure is in the state file)")?;
            }
        }
        if self.abandoned_batches > 0 {
            writeln!(
                out,
                "abandoned: {} batches ({} pairs) in flight could not finish at the stop; they are not journaled and the next run writes them again",
                self.abandoned_batches, self.abandoned_pairs
            )?;
        }
        if let Some(err) = &self.stopped_by {
            writeln!(
                out,
                "stopped by a fault of the tenant after {} users: the rest of the export was not read (the plan is incomplete): {err}",
                self.users_scanned
            )?;
        }
        if self.interrupted {
            writeln!(
                out,
                "interrupted: run the same command again (same --state) to resume"
            )?;
        }
        Ok(())
    }
}

/// Runs `reconcile`: plan (default) or apply. Returns the exit status: 0, 3 when some users
/// failed; errors carry theirs (2 configuration, 1 otherwise).
pub async fn run(
    config: &Config,
    env: Env<'_>,
    request: &Request,
    shutdown: Shutdown,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, StartError> {
    let started = Instant::now();
    let mut auth0 = config.require_auth0()?.clone();
    let (rate, burst) = share_rate(auth0.requests_per_second, auth0.burst, request.rate_share)
        .map_err(StartError::Config)?;
    auth0.requests_per_second = rate;
    auth0.burst = burst;
    if (request.revoke || request.restore) && config.ledger.is_none() {
        let flag = if request.revoke {
            "--revoke"
        } else {
            "--restore"
        };
        return Err(StartError::Config(format!(
            "reconcile {flag} needs a ledger of what this service granted: set [ledger] url (see docs/ledger.md)"
        )));
    }
    let secret = auth0.client_secret(env)?;
    let policy: &Policy = &config.policy;
    let metrics = Arc::new(Metrics::new()?);
    let client = MgmtClient::new(ClientSettings::from_config(&auth0, secret), metrics)
        .map_err(StartError::Mgmt)?;
    // Organization member role writes: the same share of their own bucket.
    let (org_rate, org_burst) = share_rate(
        f64::from(auth0.organization_roles_per_minute),
        auth0.organization_roles_burst,
        request.rate_share,
    )
    .map_err(StartError::Config)?;
    client.set_organization_limit((org_rate as u32).max(1), org_burst);
    let directory = Arc::new(
        or_stop(&shutdown, async {
            client.ensure_token().await.map_err(StartError::Mgmt)?;
            if request.apply {
                require_write_scope(&client).await?;
                if request.revoke {
                    revoke::require_remove_scope(&client).await?;
                }
            }
            if policy.uses_organizations() {
                organizations::require_scopes(&client, request.apply)
                    .await
                    .map_err(StartError::Mgmt)?;
            }
            RoleDirectory::resolve(&client, policy.role_names())
                .await
                .map_err(StartError::Mgmt)
        })
        .await?,
    );
    let role_ids = directory.all();
    let ledger = match &config.ledger {
        Some(settings) => Some(
            or_stop(&shutdown, async {
                Ledger::open(settings, "reconcile")
                    .await
                    .map_err(|e| StartError::Config(e.to_string()))
            })
            .await?,
        ),
        None => None,
    };
    let fingerprint = config.policy_fingerprint.clone();
    tracing::info!(
        requests_per_second = rate,
        burst,
        roles = role_ids.len(),
        "reconcile: connected"
    );

    let (mut journal, resume) = match (&request.state, request.apply) {
        (Some(path), true) => {
            let (mut journal, resume) =
                Journal::open(path).map_err(|e| StartError::Config(e.to_string()))?;
            match resume.as_ref().and_then(|r| r.tenant.as_deref()) {
                Some(tenant) if !tenant.eq_ignore_ascii_case(&auth0.domain) => {
                    return Err(StartError::Config(format!(
                        "state file {} belongs to an unfinished apply on tenant {tenant}, not {}: give another --state file (or delete it to start over)",
                        path.display(),
                        auth0.domain
                    )));
                }
                Some(_) => {}
                None if resume.is_some() => {}
                None => journal
                    .record(&Entry::Tenant {
                        domain: auth0.domain.clone(),
                    })
                    .map_err(|e| StartError::Reconcile(e.to_string()))?,
            }
            (Some(journal), resume)
        }
        _ => (None, None),
    };
    let resume = resume.unwrap_or_default();
    let mut summary = Summary {
        apply: request.apply,
        revoke: request.revoke,
        ledger: ledger.as_ref().map(Ledger::describe),
        rules_skipped: policy.skipped_for_existing_users(),
        resumed_batches: resume.batches,
        resumed_pairs: resume.finished.values().map(Vec::len).sum(),
        ..Summary::default()
    };
    let mut progress = Progress::new();

    // Who exists: a file given, the export an interrupted apply downloaded, or a new job
    // (created first: Auth0 prepares it while the memberships are listed).
    let kept_export = resume.export.clone().filter(|p| p.exists());
    // Without --state, the export (emails included) goes to a private temporary file (0600, a
    // random name) removed when the run ends, however it ends.
    let mut temp_export: Option<tempfile::TempPath> = None;
    let (export_path, job) = match (&request.users, kept_export) {
        (Some(path), _) => {
            // Unreadable: say so now, not after minutes of membership listing.
            std::fs::File::open(path).map_err(|e| {
                StartError::Reconcile(format!("cannot read {}: {e}", path.display()))
            })?;
            summary.source = path.display().to_string();
            (Some(path.clone()), None)
        }
        (None, Some(path)) => {
            summary.source = format!("{} (kept by the interrupted run)", path.display());
            (Some(path), None)
        }
        (None, None) => (None, Some(or_stop(&shutdown, start_job(&client)).await?)),
    };

    progress.update(|| "listing role members".to_owned());
    let mut memberships = or_stop(
        &shutdown,
        list_memberships(&client, policy, &role_ids, &resume, &mut progress),
    )
    .await?;
    if let (Some(ledger), true) = (&ledger, request.revoke) {
        or_stop(
            &shutdown,
            revoke::list_ledger_roles(&client, ledger, &role_ids, &mut memberships, &mut progress),
        )
        .await?;
    }
    summary.members_listed = memberships.members();
    summary.membership_bytes = memberships.bytes();
    let mut org_pass = match policy.uses_organizations() {
        true => Some(
            or_stop(&shutdown, async {
                organizations::OrganizationPass::list(&client)
                    .await
                    .map_err(StartError::Mgmt)
            })
            .await?,
        ),
        false => None,
    };
    // From here on, a refused service (revoked credentials, a scope taken away) makes calls
    // wait as `run` does, instead of ending the run.
    client.start_serving();

    let export_path = match (export_path, job) {
        (Some(path), _) => path,
        (None, Some(job_id)) => {
            let to = match &journal {
                Some(journal) => journal.export_path(),
                None => {
                    let temp = tempfile::Builder::new()
                        .prefix("auth0-default-roles-export-")
                        .suffix(".json.gz")
                        .tempfile()
                        .map_err(|e| {
                            StartError::Reconcile(format!(
                                "cannot create a temporary file for the export: {e}"
                            ))
                        })?
                        .into_temp_path();
                    let path = temp.to_path_buf();
                    temp_export = Some(temp);
                    path
                }
            };
            let bytes = or_stop(
                &shutdown,
                finish_job(&client, request.polling, &job_id, &to, &mut progress),
            )
            .await?;
            summary.export_bytes = Some(bytes);
            summary.source = format!("export job {job_id}");
            if let Some(journal) = &mut journal {
                journal
                    .record(&Entry::Export {
                        export: to.clone(),
                        job: Some(job_id),
                    })
                    .map_err(|e| StartError::Reconcile(e.to_string()))?;
            }
            to
        }
        (None, None) => unreachable_export()?,
    };

    let reader = export::open(&export_path).map_err(|e| StartError::Reconcile(e.to_string()))?;
    let mut users = Users::new(reader);
    let jsonl = request.output == Output::Jsonl;
    let batch_max = auth0.batch_max_users.max(1);
    let mut buffers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut writers = Writers::new(
        client.clone(),
        Arc::clone(&directory),
        ledger.clone(),
        fingerprint.clone(),
    );
    let uses_has_roles = policy.uses_has_roles();
    // Users are read a chunk at a time, so that the ledger answers for a chunk in one query.
    let mut chunk: std::collections::VecDeque<export::ExportUser> = Default::default();
    let mut standing: HashMap<String, Vec<Grant>> = HashMap::new();
    let mut removals: Vec<(String, Vec<revoke::Removal>)> = Vec::new();
    let mut removal_pairs: u64 = 0;
    'scan: loop {
        if shutdown.is_triggered() {
            summary.interrupted = true;
        }
        // Batches that finished are journaled now; a fault of the service one of them met
        // stops the reading at once.
        writers.settle_finished(&mut summary, &mut journal)?;
        if summary.interrupted {
            break;
        }
        if chunk.is_empty() {
            while chunk.len() < LEDGER_CHUNK {
                let next = users
                    .next_user()
                    .map_err(|e| StartError::Reconcile(format!("cannot read the export: {e}")))?;
                match next {
                    None => break,
                    Some(Ok(user)) => chunk.push_back(user),
                    Some(Err(line)) => {
                        summary.bad_lines += 1;
                        if summary.first_bad_lines.len() < BAD_LINES_SHOWN {
                            summary.first_bad_lines.push(line);
                        }
                    }
                }
            }
            if let (Some(ledger), false) = (&ledger, chunk.is_empty()) {
                let ids: Vec<&str> = chunk.iter().map(|u| u.user_id.as_str()).collect();
                standing = ledger
                    .granted(&ids)
                    .await
                    .map_err(|e| StartError::Reconcile(format!("the ledger: {e}")))?;
            }
        }
        let Some(user) = chunk.pop_front() else { break };
        summary.users_scanned += 1;
        let mut profile = user.profile;
        if uses_has_roles {
            profile.roles = Some(memberships.held_role_ids(&user.user_id, &role_ids));
        }
        if let Some(pass) = &mut org_pass {
            let lines = jsonl.then_some(&mut *out as &mut dyn Write);
            pass.judge(policy, &directory, &user.user_id, &profile, lines)?;
        }
        let evaluation = policy.evaluate_existing(&user.user_id, &profile);
        let (roles, rules, skipped) = match &evaluation {
            Evaluation::Assign(decision) => (
                decision.roles.clone(),
                decision.rules.clone(),
                decision.skipped.as_slice(),
            ),
            Evaluation::NoRule(skipped) | Evaluation::NeedsProfile(skipped) => {
                (Vec::new(), Vec::new(), skipped.as_slice())
            }
        };
        for undecided in skipped {
            *summary.undecided.entry(undecided.label()).or_default() += 1;
        }
        // Tenant roles only: an organization's member roles are judged apart.
        let grants: Vec<Grant> = standing
            .remove(&user.user_id)
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g.organization_id.is_none())
            .collect();
        let mut missing: Vec<String> = roles
            .into_iter()
            .filter(|role| !memberships.holds(&user.user_id, role))
            .collect();
        if !grants.is_empty() {
            // Granted by this service and missing now: someone removed it. Never fought,
            // unless --restore asks for it back.
            missing.retain(|role| {
                let granted = role_ids
                    .get(role)
                    .is_some_and(|id| grants.iter().any(|g| &g.role_id == id));
                if !granted {
                    true
                } else if request.restore {
                    summary.restored += 1;
                    true
                } else {
                    *summary
                        .left_removed_by_role
                        .entry(role.clone())
                        .or_default() += 1;
                    false
                }
            });
        }
        let (remove, remove_rules) = if request.revoke && !grants.is_empty() {
            let views: Vec<revoke::Standing> = grants
                .iter()
                .map(|g| revoke::Standing {
                    role_id: g.role_id.clone(),
                    role_name: g.role_name.clone(),
                    rule: g.rule.clone(),
                })
                .collect();
            let judged = revoke::judge(policy, &evaluation, &views, |g| {
                memberships.holds_id(&user.user_id, &g.role_id, &g.role_name, &role_ids)
            });
            for label in judged.kept_undecided {
                *summary.kept_undecided.entry(label).or_default() += 1;
            }
            summary.revoked_elsewhere += judged.already_gone as u64;
            let names: Vec<String> = judged.removals.iter().map(|r| r.role.clone()).collect();
            let mut by: Vec<String> = judged.removals.iter().map(|r| r.rule.clone()).collect();
            by.dedup();
            if !judged.removals.is_empty() {
                summary.users_to_revoke += 1;
                for removal in &judged.removals {
                    *summary
                        .revocations_by_role
                        .entry(removal.role.clone())
                        .or_default() += 1;
                }
                removal_pairs += judged.removals.len() as u64;
                if request.apply && removal_pairs <= request.max_revocations as u64 {
                    removals.push((user.user_id.clone(), judged.removals));
                }
            }
            (names, by)
        } else {
            (Vec::new(), Vec::new())
        };
        if summary.users_scanned % 1000 == 0 {
            let (scanned, pairs, added) =
                (summary.users_scanned, summary.pairs(), summary.assigned());
            progress
                .update(|| format!("judged {scanned} users, {pairs} pairs missing, {added} added"));
            // The writers are tasks of their own; on a single-threaded runtime they (and the
            // signal handler) need the scan to step aside now and then.
            tokio::task::yield_now().await;
        }
        if missing.is_empty() && remove.is_empty() {
            continue;
        }
        if !missing.is_empty() {
            summary.users_missing += 1;
        }
        for role in &missing {
            *summary.pairs_by_role.entry(role.clone()).or_default() += 1;
        }
        if jsonl {
            let line = PlanLine {
                user_id: &user.user_id,
                roles: &missing,
                rules: &rules,
                remove: &remove,
                remove_rules: &remove_rules,
            };
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        if request.apply {
            for role in missing {
                if ledger.is_some() {
                    let rule = rule_giving(policy, &rules, &role);
                    writers
                        .rules
                        .entry(role.clone())
                        .or_default()
                        .insert(user.user_id.clone(), rule);
                }
                let buffer = buffers.entry(role.clone()).or_default();
                buffer.push(user.user_id.clone());
                if buffer.len() >= batch_max {
                    let batch = std::mem::take(buffer);
                    writers
                        .wait_for_room(&shutdown, &mut summary, &mut journal)
                        .await?;
                    if summary.interrupted {
                        // Not started: the next run finds these users missing again.
                        break 'scan;
                    }
                    writers.start(role, batch);
                }
            }
        }
    }
    if !summary.interrupted {
        for (role, batch) in std::mem::take(&mut buffers) {
            if batch.is_empty() {
                continue;
            }
            writers
                .wait_for_room(&shutdown, &mut summary, &mut journal)
                .await?;
            if summary.interrupted {
                break;
            }
            writers.start(role, batch);
        }
    }
    // Batches in flight finish and are journaled, even after a fault that stops the run; after
    // a stop signal, those stuck in a fault of the service are abandoned.
    writers
        .drain(&shutdown, &mut summary, &mut journal, &mut progress)
        .await?;
    if let Some(pass) = &mut org_pass {
        if request.apply && !summary.interrupted && summary.stopped_by.is_none() {
            progress.update(|| "writing organization member roles".to_owned());
            pass.apply(&client, &directory).await;
        }
        summary.failed_total += pass.failed_total;
    }
    if let (Some(ledger), true, false) = (
        &ledger,
        request.apply && request.revoke,
        summary.interrupted,
    ) {
        if removal_pairs > request.max_revocations as u64 {
            summary.revocations_refused = Some((removal_pairs, request.max_revocations));
        } else if !removals.is_empty() {
            progress.update(|| format!("taking back {removal_pairs} roles"));
            revoke::apply_removals(&client, ledger, removals, &shutdown, &mut summary).await?;
        }
    }
    if let (Some(journal), false) = (&mut journal, summary.interrupted) {
        journal
            .record(&Entry::Done)
            .map_err(|e| StartError::Reconcile(e.to_string()))?;
        // Finished: a next run starts over with a new export, so this copy of every user's
        // email address has no use left.
        let kept = journal.export_path();
        if kept == export_path {
            let _ = std::fs::remove_file(kept);
        }
    }
    progress.finish();
    drop(temp_export);
    summary.calls = client.stats();
    summary.elapsed = started.elapsed();
    match request.output {
        Output::Summary => summary.write_to(out)?,
        Output::Jsonl => summary.write_to(err)?,
    }
    if let Some(pass) = &org_pass {
        match request.output {
            Output::Summary => pass.write_to(out, request.apply)?,
            Output::Jsonl => pass.write_to(err, request.apply)?,
        }
    }
    out.flush()?;
    if let Some(err) = summary.stopped_by.take() {
        return Err(StartError::Mgmt(err));
    }
    if let Some(err) = summary.ledger_failed.take() {
        return Err(StartError::Reconcile(err));
    }
    if let Some((planned, max)) = summary.revocations_refused {
        return Err(StartError::Config(format!(
            "{planned} (user, role) pairs to take back, more than --max-revocations {max}: none was removed (the roles to add were added); check the plan with --revoke --output jsonl, then raise --max-revocations"
        )));
    }
    Ok(if summary.interrupted {
        1
    } else if summary.failed_total > 0 {
        EXIT_FAILED
    } else {
        0
    })
}

/// `work`, unless a stop signal comes first (before any write: nothing to resume).
async fn or_stop<T>(
    shutdown: &Shutdown,
    work: impl std::future::Future<Output = Result<T, StartError>>,
) -> Result<T, StartError> {
    tokio::select! {
        result = work => result,
        _ = shutdown.wait() => Err(StartError::Reconcile(
            "interrupted before any role was written".to_owned(),
        )),
    }
}

fn unreachable_export() -> Result<PathBuf, StartError> {
    Err(StartError::Reconcile(
        "no export: neither --users nor an export job".to_owned(),
    ))
}

fn export_error(err: ExportError) -> StartError {
    match err {
        ExportError::Mgmt(err) => StartError::Mgmt(err),
        other => StartError::Reconcile(other.to_string()),
    }
}

/// `--apply` adds role members: without `create:role_members` (or the broader `update:roles`)
/// every write would be refused and, once the run serves, wait. A token that lists its scopes
/// and lacks both stops the run here (exit 2), before any listing.
async fn require_write_scope(client: &MgmtClient) -> Result<(), StartError> {
    let Some(scopes) = client.granted_scopes().await.map_err(StartError::Mgmt)? else {
        return Ok(());
    };
    if scopes
        .iter()
        .any(|s| s == "create:role_members" || s == "update:roles")
    {
        return Ok(());
    }
    Err(StartError::Mgmt(MgmtError::Auth(
        "the application is not granted create:role_members, which --apply needs to add role members (grant it: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications; run without --apply to plan)".to_owned(),
    )))
}

/// Creates the users-export job (before the service serves: a missing scope stops here with
/// exit 2 and the advice).
async fn start_job(client: &MgmtClient) -> Result<String, StartError> {
    export::create_job(client).await.map_err(export_error)
}

/// Waits for the job and downloads its file to `to`; returns the bytes downloaded.
async fn finish_job(
    client: &MgmtClient,
    polling: Polling,
    job_id: &str,
    to: &std::path::Path,
    progress: &mut Progress,
) -> Result<u64, StartError> {
    // The location is pre-signed for about a minute; the job stays readable for a day, so an
    // expired location is replaced by asking the job again.
    let mut renewals = 0;
    loop {
        let location = export::await_job(client, polling, job_id, |status, percent| {
            progress.update(|| match percent {
                Some(p) => format!("export job {status} ({p} %)"),
                None => format!("export job {status}"),
            });
        })
        .await
        .map_err(export_error)?;
        match export::download(&location, to, 5, |bytes| {
            progress.update(|| format!("downloading the export: {bytes} bytes"));
        })
        .await
        {
            Err(ExportError::LocationExpired(status)) if renewals < LOCATION_RENEWALS => {
                renewals += 1;
                tracing::warn!(job = %job_id, status, renewals, "the export's location expired; asking the job for a fresh one");
            }
            other => return other.map_err(export_error),
        }
    }
}

/// Lists the members of every policy role (and of every other role when a rule tests
/// `has_roles`); pairs an interrupted apply finished count as held.
async fn list_memberships(
    client: &MgmtClient,
    policy: &Policy,
    role_ids: &BTreeMap<String, String>,
    resume: &Resume,
    progress: &mut Progress,
) -> Result<Memberships, StartError> {
    let mut memberships = Memberships::default();
    let mut listed = 0usize;
    for (name, id) in role_ids {
        let base = listed;
        let mut fingerprints = members::list_role(client, id, |n| {
            progress.update(|| format!("listing role members: {} ({name})", base + n));
        })
        .await
        .map_err(StartError::Mgmt)?;
        listed += fingerprints.len();
        // Journaled batches of this role, unless the role was deleted and created again since
        // (a new id: its members lost it with the old one).
        for ((role, role_id), done) in &resume.finished {
            if role == name && role_id.as_ref().is_none_or(|r| r == id) {
                fingerprints.extend(done.iter().map(|u| members::fingerprint(u)));
            }
        }
        memberships
            .by_role
            .insert(name.clone(), UserSet::from_fingerprints(fingerprints));
    }
    if policy.uses_has_roles() {
        let policy_ids: BTreeSet<&String> = role_ids.values().collect();
        let mut others = Vec::new();
        for (_, id) in members::all_roles(client)
            .await
            .map_err(StartError::Mgmt)?
            .into_iter()
            .filter(|(_, id)| !policy_ids.contains(id))
        {
            let base = others.len();
            let listed_role = members::list_role(client, &id, |n| {
                progress.update(|| format!("listing members of other roles: {}", base + n));
            })
            .await
            .map_err(StartError::Mgmt)?;
            others.extend(listed_role);
        }
        memberships.others = Some(UserSet::from_fingerprints(others));
    }
    tracing::info!(
        members = memberships.members(),
        bytes = memberships.bytes(),
        "reconcile: memberships listed"
    );
    Ok(memberships)
}

/// What one batch did.
struct BatchDone {
    role: String,
    /// The users written, by the role id each part went to: a role deleted and created again
    /// during the batch has parts under both ids (those under the old id lost it with the role,
    /// and a resumed run must not count them).
    assigned: BTreeMap<Option<String>, Vec<String>>,
    failed: Vec<(String, MgmtError)>,
    /// The bulk call failed and the batch was split to find the users it failed for.
    split: bool,
    /// A fault of the service, not of a user (the role deleted mid-run): the run stops; a new
    /// run resumes.
    fatal: Option<MgmtError>,
    /// The ledger could not record a part written: the run stops.
    ledger_failed: Option<String>,
}

impl BatchDone {
    fn assigned(&self) -> usize {
        self.assigned.values().map(Vec::len).sum()
    }
}

/// Whether `err` is about the service rather than the users of the call.
pub(crate) fn is_service_fault(err: &MgmtError) -> bool {
    matches!(err, MgmtError::Auth(_) | MgmtError::MissingRoles(_))
}

/// One bulk call for `role`. When it fails for its users (a user deleted since the export
/// answers 404 for the whole call), the batch is split in halves, recursively, so only the
/// users it fails for fail: one deleted user in a batch of 1,000 costs about 20 calls, not
/// 1,000.
async fn write_batch(
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    role: String,
    users: Vec<String>,
    record: Option<GrantRecorder>,
) -> BatchDone {
    let mut done = BatchDone {
        role,
        assigned: BTreeMap::new(),
        failed: Vec::new(),
        split: false,
        fatal: None,
        ledger_failed: None,
    };
    let mut parts = vec![users];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        // The same call for one user as for many: one scope (create:role_members) for all.
        let (role_id, result) = assign_role_with_id(&client, &directory, &done.role, &part).await;
        match result {
            Ok(()) => {
                // Recorded once Auth0 accepted them, before they count as done.
                if let (Some(record), Some(id)) = (&record, &role_id) {
                    if let Err(err) = record.grants(&done.role, id, &part).await {
                        done.ledger_failed = Some(err.to_string());
                        done.assigned.entry(role_id).or_default().extend(part);
                        break;
                    }
                }
                done.assigned.entry(role_id).or_default().extend(part)
            }
            Err(err) if is_service_fault(&err) => {
                done.fatal = Some(err);
                break;
            }
            Err(err) if part.len() == 1 => {
                if let Some(user) = part.into_iter().next() {
                    done.failed.push((user, err));
                }
                done.split = true;
            }
            Err(err) => {
                if !done.split {
                    tracing::info!(error = %err, role = %done.role, users = part.len(), "bulk assignment failed; splitting the batch to find the users it fails for");
                }
                done.split = true;
                if part.len() <= SPLIT_TO_SINGLES {
                    // Halving a few users costs more calls than one call each when most fail.
                    parts.extend(part.into_iter().rev().map(|user| vec![user]));
                } else {
                    let half = part.len() / 2;
                    let mut first = part;
                    let second = first.split_off(half);
                    parts.push(second);
                    parts.push(first);
                }
            }
        }
    }
    done
}

/// The batches being written: each a tokio task, so they progress while the export is still
/// being read; at most [`WRITERS`] at once. Their results are settled (counted, journaled) by
/// the one loop that owns the summary and the journal.
struct Writers {
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    tasks: JoinSet<BatchDone>,
    /// The role and the users of each batch in flight (for those abandoned at a stop).
    in_flight: HashMap<tokio::task::Id, (String, usize)>,
    ledger: Option<Ledger>,
    fingerprint: String,
    /// With a ledger: the rule giving each buffered user each role, by role and user.
    rules: HashMap<String, HashMap<String, String>>,
}

impl Writers {
    fn new(
        client: MgmtClient,
        directory: Arc<RoleDirectory>,
        ledger: Option<Ledger>,
        fingerprint: String,
    ) -> Writers {
        Writers {
            client,
            directory,
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            ledger,
            fingerprint,
            rules: HashMap::new(),
        }
    }

    /// Starts writing `users` to `role` (the caller made room: see [`Writers::wait_for_room`]).
    fn start(&mut self, role: String, users: Vec<String>) {
        let size = users.len();
        let record = self.ledger.clone().map(|ledger| {
            let mut of_role = self.rules.remove(&role).unwrap_or_default();
            let rules: HashMap<String, String> = users
                .iter()
                .filter_map(|u| of_role.remove_entry(u))
                .collect();
            if !of_role.is_empty() {
                self.rules.insert(role.clone(), of_role);
            }
            GrantRecorder {
                ledger,
                fingerprint: self.fingerprint.clone(),
                rules,
            }
        });
        let handle = self.tasks.spawn(write_batch(
            self.client.clone(),
            Arc::clone(&self.directory),
            role.clone(),
            users,
            record,
        ));
        self.in_flight.insert(handle.id(), (role, size));
    }

    /// Settles the batches that finished, without waiting.
    fn settle_finished(
        &mut self,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
    ) -> Result<(), StartError> {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.settle_joined(joined, summary, journal)?;
        }
        Ok(())
    }

    /// Waits until fewer than [`WRITERS`] batches are in flight, settling those that finish,
    /// unless the run stops first (a stop signal, a fault of the service).
    async fn wait_for_room(
        &mut self,
        shutdown: &Shutdown,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
    ) -> Result<(), StartError> {
        while self.tasks.len() >= WRITERS && !summary.interrupted {
            tokio::select! {
                joined = self.tasks.join_next_with_id() => if let Some(joined) = joined {
                    self.settle_joined(joined, summary, journal)?;
                },
                _ = shutdown.wait() => summary.interrupted = true,
            }
        }
        Ok(())
    }

    /// Waits for every batch in flight, settling each. After a stop signal, the batches that
    /// cannot finish now (the tenant refuses the service, or has been failing for a while) are
    /// abandoned: not journaled, so the next run writes them again (the call is idempotent).
    async fn drain(
        &mut self,
        shutdown: &Shutdown,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
        progress: &mut Progress,
    ) -> Result<(), StartError> {
        while !self.tasks.is_empty() {
            if shutdown.is_triggered() && self.client.is_failing() {
                // Batches that did finish are journaled first; only the rest are abandoned.
                self.settle_finished(summary, journal)?;
                self.abandon(summary).await;
                break;
            }
            tokio::select! {
                joined = self.tasks.join_next_with_id() => if let Some(joined) = joined {
                    self.settle_joined(joined, summary, journal)?;
                    let (added, batches) = (summary.assigned(), summary.batches);
                    progress.update(|| format!("{added} pairs added in {batches} batches"));
                },
                _ = shutdown.wait(), if !shutdown.is_triggered() => {}
                _ = tokio::time::sleep(STUCK_CHECK), if shutdown.is_triggered() => {}
            }
        }
        Ok(())
    }

    /// Stops the batches in flight and counts them as abandoned.
    async fn abandon(&mut self, summary: &mut Summary) {
        let reason = self
            .client
            .blocked()
            .map_or_else(|| "calls keep failing".to_owned(), |(_, said)| said);
        for (role, users) in self.in_flight.values() {
            tracing::warn!(role = %role, users, reason = %reason, "stopping: a batch waiting for the tenant is abandoned (not journaled; the next run writes it again)");
            summary.abandoned_batches += 1;
            summary.abandoned_pairs += *users as u64;
        }
        self.in_flight.clear();
        summary.interrupted = true;
        self.tasks.shutdown().await;
    }

    fn settle_joined(
        &mut self,
        joined: Result<(tokio::task::Id, BatchDone), tokio::task::JoinError>,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
    ) -> Result<(), StartError> {
        match joined {
            Ok((id, done)) => {
                self.in_flight.remove(&id);
                settle(done, summary, journal)
            }
            Err(err) => {
                // A task that died is never counted as done: the run stops, the next one
                // writes the batch again.
                if let Some((role, users)) = self.in_flight.remove(&err.id()) {
                    tracing::error!(role = %role, users, error = %err, "a batch's task ended without a result; stopping (the next run writes it again)");
                    summary.abandoned_batches += 1;
                    summary.abandoned_pairs += users as u64;
                }
                summary.interrupted = true;
                Ok(())
            }
        }
    }
}

/// Counts a finished batch and records it in the journal, each part under the role id it was
/// written to. A fault of the service that stopped it stops the run (`summary.interrupted`,
/// `summary.stopped_by`).
fn settle(
    mut done: BatchDone,
    summary: &mut Summary,
    journal: &mut Option<Journal>,
) -> Result<(), StartError> {
    summary.batches += 1;
    summary.split_batches += u64::from(done.split);
    if let Some(err) = done.fatal.take() {
        summary.interrupted = true;
        summary.stopped_by.get_or_insert(err);
    }
    if let Some(err) = done.ledger_failed.take() {
        summary.interrupted = true;
        summary.ledger_failed.get_or_insert(err);
    }
    *summary
        .assigned_by_role
        .entry(done.role.clone())
        .or_default() += done.assigned() as u64;
    for (user, err) in &done.failed {
        tracing::warn!(user_id = %user, role = %done.role, error = %err, "could not assign");
        summary.failed_total += 1;
        if summary.failed.len() < FAILED_SHOWN {
            summary
                .failed
                .push((user.clone(), done.role.clone(), err.to_string()));
        }
    }
    if let Some(journal) = journal {
        let record = |journal: &mut Journal, entry: &Entry| {
            journal
                .record(entry)
                .map_err(|e| StartError::Reconcile(e.to_string()))
        };
        for (user, err) in &done.failed {
            record(
                journal,
                &Entry::Failed {
                    role: done.role.clone(),
                    user: user.clone(),
                    error: err.to_string(),
                },
            )?;
        }
        for (role_id, users) in done.assigned {
            if !users.is_empty() {
                record(
                    journal,
                    &Entry::Batch {
                        role: done.role.clone(),
                        role_id,
                        users,
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// Records in the ledger the grants of one batch's parts, each under the rule that gave it.
struct GrantRecorder {
    ledger: Ledger,
    fingerprint: String,
    /// The rule by user.
    rules: HashMap<String, String>,
}

impl GrantRecorder {
    async fn grants(
        &self,
        role: &str,
        role_id: &str,
        users: &[String],
    ) -> Result<(), crate::ledger::LedgerError> {
        let at = crate::ledger::now_millis();
        let grants: Vec<Grant> = users
            .iter()
            .map(|user| Grant {
                user_id: user.clone(),
                role_id: role_id.to_owned(),
                role_name: role.to_owned(),
                organization_id: None,
                rule: self.rules.get(user).cloned().unwrap_or_default(),
                trigger: "reconcile".to_owned(),
                event_id: "reconcile".to_owned(),
                policy_fingerprint: self.fingerprint.clone(),
                instance: self.ledger.instance().to_owned(),
                at,
            })
            .collect();
        self.ledger.record_grants(&grants).await
    }
}

/// The first of the matched `rules` that names `role` (the one a ledger grant records).
fn rule_giving(policy: &Policy, rules: &[String], role: &str) -> String {
    rules
        .iter()
        .find(|name| {
            policy
                .rules()
                .iter()
                .any(|r| &r.name == *name && r.assign.iter().any(|a| a == role))
        })
        .or_else(|| rules.first())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_share_scales_the_rate_and_the_burst() {
        assert_eq!(share_rate(16.0, 50, 0.5), Ok((8.0, 25)));
        assert_eq!(share_rate(16.0, 50, 1.0), Ok((16.0, 50)));
        assert_eq!(
            share_rate(2.0, 2, 0.25),
            Ok((0.5, 1)),
            "at least a burst of 1"
        );
        assert_eq!(share_rate(16.0, 50, 0.3), Ok((16.0 * 0.3, 15)));
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(share_rate(16.0, 50, bad).is_err(), "{bad}");
        }
    }
}
