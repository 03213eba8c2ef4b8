//! What a `reconcile` run counted, and the summary it prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use super::error::StopCause;
use crate::mgmt::{CallStats, MgmtError};

/// Counts of a finished (or interrupted) reconcile.
#[derive(Debug, Default)]
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
    /// Revocations an interrupted `--revoke --apply` journaled and did not record: finished
    /// first by an apply (`pending_finished`), left for the next apply by a plan.
    pub pending_revocations: u64,
    pub pending_finished: u64,
    /// Pairs removed by `--apply`, by role.
    pub removed_by_role: BTreeMap<String, u64>,
    /// `--apply` planned more removals than `--max-revocations` and removed none.
    pub revocations_refused: Option<(u64, usize)>,
    /// (user, error) of every removal that failed.
    pub removal_failed: Vec<(String, String)>,
    /// The ledger failed to record what was written, or the service was refused while
    /// removing: the run stopped (exit 1).
    pub stopped_with: Option<StopCause>,
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
        if self.pending_revocations > 0 {
            if self.apply {
                writeln!(
                    out,
                    "pending revocations finished: {} of {} (begun by an interrupted --revoke --apply: removed again, then recorded)",
                    self.pending_finished, self.pending_revocations
                )?;
            } else {
                writeln!(
                    out,
                    "pending revocations: {} (begun by an interrupted --revoke --apply; taken as revoked, and the next --apply finishes them)",
                    self.pending_revocations
                )?;
            }
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
