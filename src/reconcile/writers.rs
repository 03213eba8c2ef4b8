//! `--apply`'s writes: each batch a bulk call (split to find the users it fails for), at most
//! [`WRITERS`] in flight as tasks, settled into the summary and the journal, and recorded in
//! the ledger once Auth0 accepted them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::error::StopCause;
use super::state::{Entry, Journal};
use super::ReconcileError;
use super::{Summary, FAILED_SHOWN, SPLIT_TO_SINGLES, STUCK_CHECK, WRITERS};
use crate::ledger::{Grant, Ledger, LedgerError};
use crate::mgmt::assigner::assign_role_with_id;
use crate::mgmt::{MgmtClient, MgmtError, RoleDirectory};
use crate::policy::Policy;
use crate::progress::Progress;
use crate::shutdown::Shutdown;

/// What one batch did.
pub(super) struct BatchDone {
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
    stopped_with: Option<LedgerError>,
}

impl BatchDone {
    fn assigned(&self) -> usize {
        self.assigned.values().map(Vec::len).sum()
    }
}

/// Whether `err` is about the service rather than the users of the call.
pub(crate) fn is_service_fault(err: &MgmtError) -> bool {
    matches!(
        err,
        MgmtError::Auth(_) | MgmtError::MissingRoles(_) | MgmtError::AmbiguousRoles(_)
    )
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
        stopped_with: None,
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
                        done.stopped_with = Some(err);
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
pub(super) struct Writers {
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    tasks: JoinSet<BatchDone>,
    /// The role and the users of each batch in flight (for those abandoned at a stop).
    in_flight: HashMap<tokio::task::Id, (String, usize)>,
    ledger: Option<Ledger>,
    fingerprint: String,
    /// With a ledger: the rule giving each buffered user each role, by role and user.
    pub(super) rules: HashMap<String, HashMap<String, String>>,
}

impl Writers {
    pub(super) fn new(
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
    pub(super) fn start(&mut self, role: String, users: Vec<String>) {
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
    pub(super) fn settle_finished(
        &mut self,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
    ) -> Result<(), ReconcileError> {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.settle_joined(joined, summary, journal)?;
        }
        Ok(())
    }

    /// Waits until fewer than [`WRITERS`] batches are in flight, settling those that finish,
    /// unless the run stops first (a stop signal, a fault of the service).
    pub(super) async fn wait_for_room(
        &mut self,
        shutdown: &Shutdown,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
    ) -> Result<(), ReconcileError> {
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
    pub(super) async fn drain(
        &mut self,
        shutdown: &Shutdown,
        summary: &mut Summary,
        journal: &mut Option<Journal>,
        progress: &mut Progress,
    ) -> Result<(), ReconcileError> {
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
    ) -> Result<(), ReconcileError> {
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
) -> Result<(), ReconcileError> {
    summary.batches += 1;
    summary.split_batches += u64::from(done.split);
    if let Some(err) = done.fatal.take() {
        summary.interrupted = true;
        summary.stopped_by.get_or_insert(err);
    }
    if let Some(err) = done.stopped_with.take() {
        summary.interrupted = true;
        if summary.stopped_with.is_none() {
            summary.stopped_with = Some(StopCause::Record(err));
        }
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
            journal.record(entry).map_err(ReconcileError::State)
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
pub(super) struct GrantRecorder {
    ledger: Ledger,
    fingerprint: String,
    /// The rule by user.
    rules: HashMap<String, String>,
}

impl GrantRecorder {
    async fn grants(&self, role: &str, role_id: &str, users: &[String]) -> Result<(), LedgerError> {
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
                event_at: None,
            })
            .collect();
        self.ledger.record_grants(&grants).await
    }
}

/// The first of the matched `rules` that names `role` (the one a ledger grant records).
pub(super) fn rule_giving(policy: &Policy, rules: &[String], role: &str) -> String {
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
