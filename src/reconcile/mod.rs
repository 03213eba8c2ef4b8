//! `reconcile`: brings every existing user in line with the policy. Reads who exists (a
//! users-export job, or `--users FILE`), what they hold (each policy role's members by
//! checkpoint pages), judges each user as if each trigger had happened, and prints the missing
//! (user, role) pairs (plan) or adds them with bulk calls (`--apply`), resumable through
//! `--state FILE`.

mod error;
pub mod export;
pub mod members;
pub mod organizations;
pub mod revoke;
pub mod state;
mod summary;
mod writers;

pub use error::ReconcileError;
pub use summary::Summary;
pub(crate) use writers::is_service_fault;
use writers::{rule_giving, Writers};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::exit::EXIT_FAILED;
use crate::metrics::Metrics;
use crate::mgmt::{ClientSettings, MgmtClient, MgmtError, RoleDirectory};
use crate::policy::standing::StandingGrant;
use crate::policy::{Evaluation, Policy};
use crate::progress::Progress;
use crate::shutdown::Shutdown;

use crate::ledger::{Grant, Ledger};
pub use export::Polling;
use export::{ExportError, Users};
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

/// Runs `reconcile`: plan (default) or apply. Returns the exit status: 0, 3 when some users
/// failed; errors carry theirs (2 configuration, 1 otherwise).
pub async fn run(
    config: &Config,
    request: &Request,
    shutdown: Shutdown,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, ReconcileError> {
    let started = Instant::now();
    let mut auth0 = config.require_auth0()?.clone();
    let (rate, burst) = share_rate(auth0.requests_per_second, auth0.burst, request.rate_share)
        .map_err(ReconcileError::RateShare)?;
    auth0.requests_per_second = rate;
    auth0.burst = burst;
    auth0.auto_share = auth0.auto_share.map(|share| share * request.rate_share);
    if (request.revoke || request.restore) && config.ledger.is_none() {
        let flag = if request.revoke {
            "--revoke"
        } else {
            "--restore"
        };
        return Err(ReconcileError::NeedsLedger { flag });
    }
    let secret = auth0.client_secret()?;
    let policy: &Policy = &config.policy;
    let metrics = Arc::new(Metrics::new()?);
    let client = MgmtClient::new(ClientSettings::from_config(&auth0, secret), metrics)?;
    client.give_up_after(Some(auth0.give_up_after));
    // Organization member role writes: the same share of their own bucket.
    let (org_rate, org_burst) = share_rate(
        f64::from(auth0.organization_roles_per_minute),
        auth0.organization_roles_burst,
        request.rate_share,
    )
    .map_err(ReconcileError::RateShare)?;
    client.set_organization_limit((org_rate as u32).max(1), org_burst);
    let directory = Arc::new(
        or_stop(&shutdown, async {
            client.ensure_token().await?;
            if request.apply {
                require_write_scope(&client).await?;
                if request.revoke {
                    revoke::require_remove_scope(&client).await?;
                }
            }
            if policy.uses_organizations() {
                organizations::require_scopes(&client, request.apply).await?;
            }
            Ok(RoleDirectory::resolve(&client, policy.role_names()).await?)
        })
        .await?,
    );
    let role_ids = directory.all();
    let ledger = match &config.ledger {
        Some(settings) => Some(
            or_stop(&shutdown, async {
                Ledger::open(settings, "reconcile")
                    .await
                    .map_err(ReconcileError::OpenLedger)
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
            let (mut journal, resume) = Journal::open(path).map_err(ReconcileError::OpenState)?;
            match resume.as_ref().and_then(|r| r.tenant.as_deref()) {
                Some(tenant) if !tenant.eq_ignore_ascii_case(&auth0.domain) => {
                    return Err(ReconcileError::OtherTenant {
                        path: path.clone(),
                        tenant: tenant.to_owned(),
                        domain: auth0.domain.clone(),
                    });
                }
                Some(_) => {}
                None if resume.is_some() => {}
                None => journal
                    .record(&Entry::Tenant {
                        domain: auth0.domain.clone(),
                    })
                    .map_err(ReconcileError::State)?,
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
            std::fs::File::open(path).map_err(|source| ReconcileError::ReadUsers {
                path: path.clone(),
                source,
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

    // Revocations an interrupted `--revoke --apply` began (journaled before their DELETE, not
    // recorded): an apply finishes them first, before anything is listed; a plan takes them as
    // revoked (never as an admin's removal) and leaves them to the next apply.
    let mut pending_left: HashSet<(String, String)> = HashSet::new();
    if let Some(ledger) = &ledger {
        let pending = ledger
            .pending_revocations()
            .await
            .map_err(ReconcileError::Ledger)?;
        summary.pending_revocations = pending.len() as u64;
        if request.apply && !pending.is_empty() {
            if !request.revoke {
                or_stop(&shutdown, revoke::require_remove_scope(&client)).await?;
            }
            progress.update(|| format!("finishing {} pending revocations", pending.len()));
            revoke::finish_pending(&client, ledger, &pending, &shutdown, &mut summary).await?;
            if summary.interrupted {
                progress.finish();
                summary.calls = client.stats();
                summary.elapsed = started.elapsed();
                match request.output {
                    Output::Summary => summary.write_to(out)?,
                    Output::Jsonl => summary.write_to(err)?,
                }
                return match summary.stopped_with.take() {
                    Some(stopped) => Err(ReconcileError::Stopped(Box::new(stopped))),
                    None => Ok(1),
                };
            }
            pending_left.extend(
                ledger
                    .pending_revocations()
                    .await
                    .map_err(ReconcileError::Ledger)?
                    .into_iter()
                    .map(|p| (p.user_id, p.role_id)),
            );
        } else {
            pending_left.extend(pending.into_iter().map(|p| (p.user_id, p.role_id)));
        }
    }

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
                Ok(organizations::OrganizationPass::list(&client).await?)
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
                        .map_err(ReconcileError::TempFile)?
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
                    .map_err(ReconcileError::State)?;
            }
            to
        }
        (None, None) => unreachable_export()?,
    };

    let reader = export::open(&export_path)?;
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
    // With organizations: the member roles an admin removed, by user: (organization, role id).
    let mut member_removals: HashMap<String, Vec<(String, String)>> = HashMap::new();
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
                let next = users.next_user().map_err(ReconcileError::ReadExport)?;
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
                standing = ledger.granted(&ids).await.map_err(ReconcileError::Ledger)?;
                if org_pass.is_some() {
                    member_removals = ledger
                        .member_role_removals_of(&ids)
                        .await
                        .map_err(ReconcileError::Ledger)?;
                }
            }
        }
        let Some(user) = chunk.pop_front() else { break };
        summary.users_scanned += 1;
        let mut profile = user.profile;
        if uses_has_roles {
            profile.roles = Some(memberships.held_role_ids(&user.user_id, &role_ids));
        }
        let user_grants = standing.remove(&user.user_id).unwrap_or_default();
        if let Some(pass) = &mut org_pass {
            let lines = jsonl.then_some(&mut *out as &mut dyn Write);
            let removed = member_removals.remove(&user.user_id).unwrap_or_default();
            let recorded = organizations::Recorded {
                grants: &user_grants,
                removed: &removed,
                restore: request.restore,
            };
            pass.judge(policy, &directory, &user.user_id, &profile, recorded, lines)?;
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
        let grants: Vec<Grant> = user_grants
            .into_iter()
            .filter(|g| g.organization_id.is_none())
            // A revocation begun and not recorded is a revocation, not an admin's removal.
            .filter(|g| !pending_left.contains(&(g.user_id.clone(), g.role_id.clone())))
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
            let views: Vec<StandingGrant> = grants.iter().map(Grant::standing).collect();
            let judged = revoke::judge(policy, &user.user_id, &profile, &views, |g| {
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
            let recorder = ledger
                .as_ref()
                .map(|l| organizations::GrantRecorder::new(l.clone(), fingerprint.clone()));
            pass.apply(&client, &directory, policy, recorder).await;
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
            revoke::apply_removals(&client, ledger, removals, &shutdown, &mut summary, false)
                .await?;
        }
    }
    if let (Some(journal), false) = (&mut journal, summary.interrupted) {
        journal
            .record(&Entry::Done)
            .map_err(ReconcileError::State)?;
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
        return Err(ReconcileError::Mgmt(err));
    }
    if let Some(err) = summary.stopped_with.take() {
        return Err(ReconcileError::Stopped(Box::new(err)));
    }
    if let Some((planned, max)) = summary.revocations_refused {
        return Err(ReconcileError::TooManyRevocations { planned, max });
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
    work: impl std::future::Future<Output = Result<T, ReconcileError>>,
) -> Result<T, ReconcileError> {
    tokio::select! {
        result = work => result,
        _ = shutdown.wait() => Err(ReconcileError::Interrupted),
    }
}

fn unreachable_export() -> Result<PathBuf, ReconcileError> {
    Err(ReconcileError::NoExport)
}

/// `--apply` adds role members: without `create:role_members` (or the broader `update:roles`)
/// every write would be refused and, once the run serves, wait. A token that lists its scopes
/// and lacks both stops the run here (exit 2), before any listing.
async fn require_write_scope(client: &MgmtClient) -> Result<(), ReconcileError> {
    let Some(scopes) = client.granted_scopes().await? else {
        return Ok(());
    };
    if scopes
        .iter()
        .any(|s| s == "create:role_members" || s == "update:roles")
    {
        return Ok(());
    }
    Err(ReconcileError::Mgmt(MgmtError::Auth(
        "the application is not granted create:role_members, which --apply needs to add role members (grant it: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications; run without --apply to plan)".to_owned(),
    )))
}

/// Creates the users-export job (before the service serves: a missing scope stops here with
/// exit 2 and the advice).
async fn start_job(client: &MgmtClient) -> Result<String, ReconcileError> {
    Ok(export::create_job(client).await?)
}

/// Waits for the job and downloads its file to `to`; returns the bytes downloaded.
async fn finish_job(
    client: &MgmtClient,
    polling: Polling,
    job_id: &str,
    to: &std::path::Path,
    progress: &mut Progress,
) -> Result<u64, ReconcileError> {
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
        .await?;
        match export::download(&location, to, 5, |bytes| {
            progress.update(|| format!("downloading the export: {bytes} bytes"));
        })
        .await
        {
            Err(ExportError::LocationExpired(status)) if renewals < LOCATION_RENEWALS => {
                renewals += 1;
                tracing::warn!(job = %job_id, status, renewals, "the export's location expired; asking the job for a fresh one");
            }
            other => return Ok(other?),
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
) -> Result<Memberships, ReconcileError> {
    let mut memberships = Memberships::default();
    let mut listed = 0usize;
    for (name, id) in role_ids {
        let base = listed;
        let mut fingerprints = members::list_role(client, id, |n| {
            progress.update(|| format!("listing role members: {} ({name})", base + n));
        })
        .await?;
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
            .await?
            .into_iter()
            .filter(|(_, id)| !policy_ids.contains(id))
        {
            let base = others.len();
            let listed_role = members::list_role(client, &id, |n| {
                progress.update(|| format!("listing members of other roles: {}", base + n));
            })
            .await?;
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
