//! The ledger link of the pipeline: what the ledger says before a write (roles this service
//! granted, a re-created user, organization memberships) and the record of each outcome after.

use crate::event::{Decoded, LogEvent, Trigger};
use crate::ledger::link::Refused;
use crate::ledger::{Grant, LedgerLink};

use super::*;

impl Pipeline {
    /// Event Streams' membership events, in the ledger: `organization.member.role.deleted`
    /// records an admin's removal of a member role (never given back by a trigger);
    /// `organization.member.deleted` ends the member's grants there (added again, it gets them
    /// again), and what this process remembers of them.
    pub(super) async fn follow_membership(
        &self,
        link: &LedgerLink,
        event: &LogEvent,
    ) -> Result<(), Refused> {
        let (Some(user), Some(organization)) = (event.user(), event.organization()) else {
            return Ok(());
        };
        let event_id = event.log_id.as_deref().unwrap_or("-");
        match event.event_type.as_str() {
            "organization.member.role.deleted" => {
                let Some(role) = &event.member_role else {
                    return Ok(());
                };
                let name = role
                    .name
                    .clone()
                    .or_else(|| {
                        self.assigner.as_ref().and_then(|a| {
                            a.directory()
                                .all()
                                .into_iter()
                                .find(|(_, id)| id == &role.id)
                                .map(|(name, _)| name)
                        })
                    })
                    .unwrap_or_else(|| role.id.clone());
                let removal = crate::ledger::Revocation {
                    user_id: user.to_owned(),
                    role_id: role.id.clone(),
                    role_name: name,
                    organization_id: Some(organization.to_owned()),
                    by: "an admin".to_owned(),
                    reason: event.event_type.clone(),
                    at: event
                        .date
                        .as_deref()
                        .and_then(crate::event::unix_millis)
                        .unwrap_or_else(crate::ledger::now_millis),
                };
                tracing::info!(user_id = user, organization, role = %removal.role_name, "a member role was removed by an admin: it is not given again");
                link.record_member_role_removal(&self.metrics, &removal, event_id)
                    .await?;
            }
            "organization.member.deleted" => {
                let left_at = event
                    .date
                    .as_deref()
                    .and_then(crate::event::unix_millis)
                    .unwrap_or_else(crate::ledger::now_millis);
                link.end_membership(&self.metrics, user, organization, left_at, event_id)
                    .await?;
                self.processor.dedup().forget_membership(organization, user);
            }
            _ => {}
        }
        Ok(())
    }

    /// Leaves out of an assignment the roles the ledger shows this service granted before (the
    /// user's tenant roles, and its member roles in the event's organization, where an admin's
    /// recorded removal counts too), after ending the grants of an account re-created since
    /// them. `Err` when the ledger refuses the user's records (an id it cannot take).
    pub(super) async fn without_granted(
        &self,
        mut assignment: Assignment,
    ) -> Result<Assignment, (Assignment, Refused)> {
        let (Some(link), Some(assigner)) = (&self.ledger, &self.assigner) else {
            return Ok(assignment);
        };
        let mut standing = match link.standing(&self.metrics, &assignment.user_id).await {
            Ok(standing) => standing,
            Err(refused) => return Err((assignment, refused)),
        };
        if !standing.is_empty() && self.is_recreated(&assignment, &standing).await {
            tracing::info!(
                user_id = %assignment.user_id,
                log_id = assignment.report.log_id.as_deref().unwrap_or("-"),
                grants = standing.len(),
                "the user was re-created with the same id: the old account's grants end and the new account gets its roles"
            );
            if self.mode == Mode::Live {
                let ended = link
                    .end_recreated(
                        &self.metrics,
                        &standing,
                        assignment.report.log_id.as_deref().unwrap_or("-"),
                    )
                    .await;
                if let Err(refused) = ended {
                    return Err((assignment, refused));
                }
            }
            standing.clear();
        }
        if !assignment.missing.is_empty() {
            let held = link.already_granted(
                &self.metrics,
                assigner.directory(),
                &standing,
                &assignment.missing,
            );
            assignment.missing.retain(|role| !held.contains(role));
        }
        if let Some(member) = assignment.organization.as_mut() {
            let organization = member.organization_id.clone();
            let removed = match link
                .removed_member_roles(&self.metrics, &assignment.user_id, &organization)
                .await
            {
                Ok(removed) => removed,
                Err(refused) => return Err((assignment, refused)),
            };
            let kept = link.member_roles_kept_off(
                &self.metrics,
                assigner.directory(),
                &standing,
                &organization,
                &removed,
                &member.missing,
            );
            member.missing.retain(|role| !kept.contains(role));
            if member.missing.is_empty() {
                assignment.organization = None;
            }
        }
        Ok(assignment)
    }

    /// Whether the event shows the user's account was deleted and re-created with the same id
    /// since its `standing` grants (social and enterprise ids are stable): a signup (`ss`,
    /// `user.created`) dated after the event of every standing grant, or a first login of an
    /// account created after them (`created_at` from the event, else one profile read, only
    /// here). A redelivery of the event that gave a grant, and a database user's first login
    /// after its own signup, never are.
    async fn is_recreated(&self, assignment: &Assignment, standing: &[Grant]) -> bool {
        let event_id = assignment.report.log_id.as_deref();
        if standing
            .iter()
            .any(|g| Some(g.event_id.as_str()) == event_id)
        {
            return false;
        }
        let Some(newest) = standing.iter().map(|g| g.event_at.unwrap_or(g.at)).max() else {
            return false;
        };
        let margin = i64::try_from(RECREATION_MARGIN.as_millis()).unwrap_or(i64::MAX);
        let after = |at: i64| at.saturating_sub(newest) > margin;
        match assignment.report.trigger {
            Some(Trigger::Signup) => assignment.event_at.is_some_and(after),
            Some(Trigger::FirstLogin) => {
                // The account's own signup is on record: a re-created account logs a signup of
                // its own, judged above.
                if standing
                    .iter()
                    .any(|g| g.trigger == Trigger::Signup.as_str())
                {
                    return false;
                }
                let created_at = match assignment.created_at {
                    Some(at) => Some(at),
                    None => match &self.client {
                        Some(client) => match client.get_user(&assignment.user_id).await {
                            Ok(profile) => profile
                                .created_at
                                .as_deref()
                                .and_then(crate::event::unix_millis),
                            Err(err) => {
                                tracing::debug!(error = %err, "the profile read for the account's creation failed: taken for the same account");
                                None
                            }
                        },
                        None => None,
                    },
                };
                created_at.is_some_and(after)
            }
            _ => false,
        }
    }

    /// For a later login through an organization (with a ledger, in a live run, and a policy
    /// handling `organization_member_added`): whether the ledger holds a standing grant of
    /// this user in that organization. `None` otherwise: such a login triggers nothing.
    pub(super) async fn seen_in_organization(
        &self,
        item: &Decoded,
    ) -> Option<Result<bool, Refused>> {
        let link = self.ledger.as_ref().filter(|_| self.mode == Mode::Live)?;
        if !self
            .processor
            .policy()
            .handles(Trigger::OrganizationMemberAdded)
        {
            return None;
        }
        let event = item.as_ref().ok()?;
        event.organization_login(Some(false))?;
        let (user, organization) = (event.user()?, event.organization()?);
        // Judged before under this policy and given no member role: taken as seen (no profile
        // read again for each login).
        if link.is_quiet_membership(user, organization) {
            return Some(Ok(true));
        }
        Some(Box::pin(link.seen_in_organization(&self.metrics, user, organization)).await)
    }
}

impl Pipeline {
    pub(super) fn record(
        &self,
        report: &Report,
        started: tokio::time::Instant,
        happened: Option<std::time::SystemTime>,
        email_domain: Option<&str>,
    ) {
        let m = &self.metrics;
        m.inflight_events.dec();
        let trigger = report.trigger.map(|t| t.as_str()).unwrap_or("none");
        self.counters
            .processed(&m.events_processed, report.trigger, report.outcome);
        m.event_processing_duration
            .observe(started.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now();
        if let Some(at) = happened {
            if let Ok(age) = now.duration_since(at) {
                m.event_age.observe(age.as_secs_f64());
            }
        }
        if let Ok(t) = now.duration_since(std::time::UNIX_EPOCH) {
            m.last_processed_event_timestamp.set(t.as_secs_f64());
        }
        for label in &report.skipped {
            if let Some((rule, key)) = label.rsplit_once('.') {
                m.policy_rules_undecided
                    .with_label_values(&[rule, key])
                    .inc();
            }
        }
        if report.outcome == Outcome::AlreadyDone {
            let kind = if report.rules.is_empty() {
                "log_id"
            } else {
                "user_roles"
            };
            m.dedup_hits.with_label_values(&[kind]).inc();
        }
        m.dedup_entries
            .set(i64::try_from(self.processor.dedup().entries()).unwrap_or(i64::MAX));
        let log_id = report.log_id.as_deref().unwrap_or("-");
        let user = report.user_id.as_deref().unwrap_or("-");
        let domain = RedactedEmail(email_domain);
        match report.outcome {
            Outcome::Assigned => tracing::info!(
                log_id, user_id = user, email = %domain, trigger, roles = ?report.roles, rules = ?report.rules,
                organization = report.organization.as_deref().unwrap_or("-"), organization_roles = ?report.organization_roles,
                "roles assigned"
            ),
            Outcome::WouldAssign => tracing::info!(
                log_id, user_id = user, email = %domain, trigger, roles = ?report.roles, rules = ?report.rules,
                "roles would be assigned"
            ),
            Outcome::Failed => tracing::warn!(
                log_id, user_id = user, trigger, roles = ?report.roles, error = report.error.as_deref().unwrap_or("-"),
                "assignment failed permanently"
            ),
            Outcome::Invalid => tracing::warn!(
                log_id,
                error = report.error.as_deref().unwrap_or("-"),
                "invalid event"
            ),
            other => tracing::debug!(log_id, trigger, outcome = other.as_str(), "event done"),
        }
    }
}

/// When an event dated `date` (RFC 3339) happened, if its date reads.
pub(super) fn happened_at(date: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(date.trim_end_matches('Z')).ok()
}

/// An email as logged at info level: `*@domain`, or `-` without one (written only when a
/// line is logged: no string made per event).
struct RedactedEmail<'a>(Option<&'a str>);

impl std::fmt::Display for RedactedEmail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(domain) => write!(f, "*@{domain}"),
            None => f.write_str("-"),
        }
    }
}

/// The reason of an event failed because the ledger refused its record.
pub(super) fn refusal_reason(refused: &Refused) -> String {
    format!("the ledger refuses this event's record (no retry can fix it): {refused}")
}

/// `report`, failed because the ledger refused its record.
pub(super) fn ledger_refused(mut report: Report, refused: &Refused) -> Report {
    report.error = Some(refusal_reason(refused));
    report
}
