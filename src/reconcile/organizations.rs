//! `reconcile` for organization members: lists every organization and its members with their
//! roles (checkpoint pages of `GET /api/v2/organizations` and
//! `GET /api/v2/organizations/{id}/members?fields=user_id,roles`), judges each member the
//! users' export names with [`Policy::evaluate_member`] (the member's profile is the export's,
//! the organization is known), prints one plan line per (member, organization) missing roles
//! and, with `--apply`, writes each with one member role call through the organization limiter.
//!
//! Members the export does not hold (created after it) are not judged: the next run finds them.
//!
//! With a ledger, member roles follow the tenant roles' rules: a member role this service
//! granted in that organization and the member no longer holds, or one an admin removed
//! (`organization.member.role.deleted`), is left removed (`--restore` gives it back), and what
//! `--apply` writes is recorded (trigger `reconcile`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::ledger::{Grant, Ledger};
use crate::mgmt::organizations::{assign_member_roles, is_member_gone};
use crate::mgmt::{MgmtClient, MgmtError, RoleDirectory};
use crate::policy::{Evaluation, Policy, Profile};

/// Checkpoint page size (Auth0's maximum `take`).
const TAKE: usize = 100;
/// Member role writes in flight at once (the organization limiter paces them).
const WRITERS: usize = 4;
/// Failures listed in the summary at most.
const FAILED_SHOWN: usize = 50;

/// The scopes reading organization members with their roles needs.
pub const READ_SCOPES: [&str; 3] = [
    "read:organizations",
    "read:organization_members",
    "read:organization_member_roles",
];
/// The scope member role writes need.
pub const WRITE_SCOPE: &str = "create:organization_member_roles";

/// One membership of a user: the organization and the role ids the member holds there.
#[derive(Debug, Clone)]
struct Membership {
    organization_id: String,
    organization_name: Option<String>,
    held: Vec<String>,
}

/// One plan line: a member missing roles in an organization.
#[derive(Debug, Serialize)]
struct PlanLine<'a> {
    user_id: &'a str,
    organization: &'a str,
    roles: &'a [String],
    rules: &'a [String],
}

/// A write to make: (organization, user, role names, the rules that give them).
type Write3 = (String, String, Vec<String>, Vec<String>);

/// What the ledger holds of one user for the organizations pass.
pub struct Recorded<'a> {
    /// The user's standing grants (those of member roles name their organization).
    pub grants: &'a [Grant],
    /// The member roles an admin removed: (organization, role id).
    pub removed: &'a [(String, String)],
    /// `--restore`: give such roles back.
    pub restore: bool,
}

/// Records in the ledger the member roles `--apply` wrote.
pub struct GrantRecorder {
    ledger: Ledger,
    fingerprint: String,
}

impl GrantRecorder {
    pub fn new(ledger: Ledger, fingerprint: String) -> GrantRecorder {
        GrantRecorder {
            ledger,
            fingerprint,
        }
    }
}

/// The organizations' part of a reconcile run.
#[derive(Debug, Default)]
pub struct OrganizationPass {
    /// User id → its memberships.
    memberships: HashMap<String, Vec<Membership>>,
    planned: Vec<Write3>,
    pub organizations: usize,
    pub members: usize,
    /// (member, organization) pairs missing at least one role.
    pub members_missing: u64,
    pub pairs: u64,
    /// Member roles the ledger says this service granted (or an admin removed) and the member
    /// no longer holds: left removed.
    pub left_removed: u64,
    /// Of the pairs, those given back by `--restore`.
    pub restored: u64,
    pub assigned: u64,
    /// (organization, user, error) of each write that failed.
    pub failed: Vec<(String, String, String)>,
    pub failed_total: u64,
}

/// Checks that the token grants what the organizations pass needs (when it lists its scopes).
pub async fn require_scopes(client: &MgmtClient, apply: bool) -> Result<(), MgmtError> {
    let Some(scopes) = client.granted_scopes().await? else {
        return Ok(());
    };
    let mut needed: Vec<&str> = READ_SCOPES.to_vec();
    if apply {
        needed.push(WRITE_SCOPE);
    }
    let lacking: Vec<&str> = needed
        .into_iter()
        .filter(|n| !scopes.iter().any(|s| s == n))
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(MgmtError::Auth(format!(
        "the policy gives roles in organizations (assign_in_organization) and the application is not granted {}, which reconcile needs to read organization members{} (grant them: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications)",
        lacking.join(", "),
        if apply { " and write their roles" } else { "" }
    )))
}

impl OrganizationPass {
    /// Lists every organization and its members with their roles.
    pub async fn list(client: &MgmtClient) -> Result<OrganizationPass, MgmtError> {
        let mut pass = OrganizationPass::default();
        let mut from: Option<String> = None;
        loop {
            let page = client.organizations_page(from.as_deref(), TAKE).await?;
            for org in page.organizations {
                if org.id.is_empty() {
                    continue;
                }
                pass.organizations += 1;
                let mut member_from: Option<String> = None;
                loop {
                    let members = client
                        .organization_members_page(&org.id, member_from.as_deref(), TAKE)
                        .await?;
                    for member in members.members {
                        if member.user_id.is_empty() {
                            continue;
                        }
                        pass.members += 1;
                        pass.memberships
                            .entry(member.user_id)
                            .or_default()
                            .push(Membership {
                                organization_id: org.id.clone(),
                                organization_name: org.name.clone(),
                                held: member.roles.into_iter().map(|r| r.id).collect(),
                            });
                    }
                    match members.next.filter(|n| !n.is_empty()) {
                        Some(next) => member_from = Some(next),
                        None => break,
                    }
                }
            }
            match page.next.filter(|n| !n.is_empty()) {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        tracing::info!(
            organizations = pass.organizations,
            members = pass.members,
            "reconcile: organization members listed"
        );
        Ok(pass)
    }

    /// Judges `user_id` (with the export's profile) in each organization it is a member of;
    /// writes a plan line per membership missing roles when `jsonl`, and keeps the write.
    pub fn judge(
        &mut self,
        policy: &Policy,
        directory: &RoleDirectory,
        user_id: &str,
        profile: &Profile,
        recorded: Recorded<'_>,
        out: Option<&mut dyn Write>,
    ) -> std::io::Result<()> {
        let Some(memberships) = self.memberships.remove(user_id) else {
            return Ok(());
        };
        let mut out = out;
        for membership in memberships {
            let evaluation = policy.evaluate_member(
                user_id,
                profile,
                &membership.organization_id,
                membership.organization_name.as_deref(),
            );
            let Evaluation::Assign(decision) = evaluation else {
                continue;
            };
            let mut missing: Vec<String> = decision
                .organization_roles
                .into_iter()
                .filter(|name| {
                    directory
                        .id(name)
                        .is_none_or(|id| !membership.held.contains(&id))
                })
                .collect();
            // Granted by this service there, or removed by an admin, and missing now: someone
            // removed it on purpose. Never fought, unless --restore asks for it back.
            let organization = membership.organization_id.as_str();
            missing.retain(|name| {
                let Some(id) = directory.id(name) else {
                    return true;
                };
                let removed =
                    recorded.grants.iter().any(|g| {
                        g.organization_id.as_deref() == Some(organization) && g.role_id == id
                    }) || recorded
                        .removed
                        .iter()
                        .any(|(o, r)| o == organization && *r == id);
                if !removed {
                    true
                } else if recorded.restore {
                    self.restored += 1;
                    true
                } else {
                    self.left_removed += 1;
                    false
                }
            });
            if missing.is_empty() {
                continue;
            }
            self.members_missing += 1;
            self.pairs += missing.len() as u64;
            if let Some(out) = out.as_mut() {
                let line = PlanLine {
                    user_id,
                    organization: &membership.organization_id,
                    roles: &missing,
                    rules: &decision.rules,
                };
                serde_json::to_writer(&mut **out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            self.planned.push((
                membership.organization_id,
                user_id.to_owned(),
                missing,
                decision.rules,
            ));
        }
        Ok(())
    }

    /// Writes every planned membership: one member role call each, a few at a time, through
    /// the organization limiter, each recorded in the ledger (with `recorder`) once Auth0
    /// accepted it. A member removed since the listing fails alone.
    pub async fn apply(
        &mut self,
        client: &MgmtClient,
        directory: &Arc<RoleDirectory>,
        policy: &Policy,
        recorder: Option<GrantRecorder>,
    ) {
        let mut tasks = JoinSet::new();
        let planned = std::mem::take(&mut self.planned);
        let recorder = recorder.map(Arc::new);
        for (organization, user, roles, rules) in planned {
            while tasks.len() >= WRITERS {
                if let Some(done) = tasks.join_next().await {
                    self.settle(done);
                }
            }
            let client = client.clone();
            let directory = Arc::clone(directory);
            let recorder = recorder.clone();
            let grants: Vec<(String, String)> = roles
                .iter()
                .map(|name| {
                    (
                        name.clone(),
                        crate::ledger::link::rule_of(policy, &rules, name),
                    )
                })
                .collect();
            tasks.spawn(async move {
                let mut result =
                    assign_member_roles(&client, &directory, &organization, &user, &roles)
                        .await
                        .map_err(|err| {
                            let gone = if is_member_gone(&err) {
                                " (no longer a member, or the organization was deleted)"
                            } else {
                                ""
                            };
                            format!("{err}{gone}")
                        });
                if let (Ok(()), Some(recorder)) = (&result, &recorder) {
                    let at = crate::ledger::now_millis();
                    let records: Vec<Grant> = grants
                        .iter()
                        .map(|(name, rule)| Grant {
                            user_id: user.clone(),
                            role_id: directory.id(name).unwrap_or_else(|| name.clone()),
                            role_name: name.clone(),
                            organization_id: Some(organization.clone()),
                            rule: rule.clone(),
                            trigger: "reconcile".to_owned(),
                            event_id: "reconcile".to_owned(),
                            policy_fingerprint: recorder.fingerprint.clone(),
                            instance: recorder.ledger.instance().to_owned(),
                            at,
                            event_at: None,
                        })
                        .collect();
                    if let Err(err) = recorder.ledger.record_grants(&records).await {
                        result = Err(format!(
                            "written, but the ledger could not record it: {err}"
                        ));
                    }
                }
                (organization, user, roles.len() as u64, result)
            });
        }
        while let Some(done) = tasks.join_next().await {
            self.settle(done);
        }
    }

    fn settle(
        &mut self,
        done: Result<(String, String, u64, Result<(), String>), tokio::task::JoinError>,
    ) {
        match done {
            Ok((_, _, n, Ok(()))) => self.assigned += n,
            Ok((organization, user, _, Err(error))) => self.fail(organization, user, error),
            Err(err) => self.fail(String::new(), String::new(), format!("task failed: {err}")),
        }
    }

    fn fail(&mut self, organization: String, user: String, error: String) {
        tracing::warn!(
            organization,
            user_id = user,
            error,
            "reconcile: member role write failed"
        );
        self.failed_total += 1;
        if self.failed.len() < FAILED_SHOWN {
            self.failed.push((organization, user, error));
        }
    }

    /// The summary's organization lines.
    pub fn write_to(&self, out: &mut dyn Write, apply: bool) -> std::io::Result<()> {
        writeln!(
            out,
            "organizations: {} listed, {} members; {} (member, organization) missing {} roles",
            self.organizations, self.members, self.members_missing, self.pairs
        )?;
        if self.left_removed > 0 {
            writeln!(
                out,
                "  left removed: {} member roles (granted by this service or removed by an admin, missing now; --restore gives them back)",
                self.left_removed
            )?;
        }
        if self.restored > 0 {
            writeln!(
                out,
                "  restored: {} of the member roles to add were removed before (--restore)",
                self.restored
            )?;
        }
        if apply {
            writeln!(
                out,
                "  added: {} member roles; failed: {} members",
                self.assigned, self.failed_total
            )?;
            for (organization, user, error) in &self.failed {
                writeln!(
                    out,
                    "  organization={organization} user_id={user} error={error}"
                )?;
            }
        }
        Ok(())
    }
}
