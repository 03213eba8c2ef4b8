//! Acting on an assignment: the roles written through the assigner, the outcome counted.

use crate::ledger::link::GrantOrigin;
use crate::mgmt::AssignOutcome;

use super::processor::is_fresh_account;
use super::recording::refusal_reason;
use super::*;

impl Pipeline {
    /// Gives the assignment's missing roles (live): the user's tenant roles (recorded in the
    /// ledger), then its member roles in the event's organization (through the organization
    /// limiter), and completes the record. Each part that succeeded is remembered, so a
    /// redelivery after a failure of the other costs only that one.
    pub(super) async fn assign(&self, mut assignment: Assignment) -> Report {
        let assigner = match (&self.assigner, self.mode) {
            (Some(assigner), Mode::Live) => assigner,
            _ => {
                return self
                    .processor
                    .finish(assignment, Outcome::WouldAssign, None)
            }
        };
        let mut wrote = false;
        if !assignment.missing.is_empty() {
            // With a ledger, the roles the user holds are read before the write (the ledger
            // records only what the write added), except at a fresh account's creation: an
            // account created moments ago holds no role yet.
            let read_held = self.ledger.is_some() && !is_fresh_account(&assignment);
            match assigner
                .assign(&assignment.user_id, &assignment.missing, read_held)
                .await
            {
                Ok(AssignOutcome::Assigned { written }) => {
                    wrote = true;
                    // Remembered (dedup) and recorded: only what the write added. A role held
                    // already stays its holder's: an admin's later removal of it is not
                    // mistaken for a removal of this service's grant.
                    assignment.missing.retain(|role| written.contains(role));
                    if let Err(reason) = self
                        .count_and_record(&assignment, assigner, None, &written)
                        .await
                    {
                        return self
                            .processor
                            .finish(assignment, Outcome::Failed, Some(reason));
                    }
                }
                Ok(AssignOutcome::AlreadyHeld) => {
                    assignment.missing.clear();
                    // Held already (given by hand or by another tool): not this service's
                    // grant, so not recorded as one.
                    if let Some(link) = &self.ledger {
                        // Refused: logged by the link; the roles are held all the same.
                        let _ = link.clear_failure(&self.metrics, &assignment.user_id).await;
                    }
                }
                Err(err) => {
                    return self.processor.finish(
                        assignment,
                        Outcome::Failed,
                        Some(err.to_string()),
                    )
                }
            }
        }
        if let (Some(member), Some(client)) = (&assignment.organization, &self.client) {
            let written = crate::mgmt::organizations::assign_member_roles(
                client,
                assigner.directory(),
                &member.organization_id,
                &assignment.user_id,
                &member.missing,
            )
            .await;
            match written {
                Ok(()) => {
                    wrote = true;
                    if let Err(reason) = self
                        .count_and_record(
                            &assignment,
                            assigner,
                            Some(&member.organization_id),
                            &member.missing,
                        )
                        .await
                    {
                        return self
                            .processor
                            .finish(assignment, Outcome::Failed, Some(reason));
                    }
                }
                Err(err) => {
                    // The tenant part is done: remember it.
                    self.processor
                        .dedup()
                        .mark_assigned(&assignment.user_id, &assignment.missing);
                    let gone = if crate::mgmt::organizations::is_member_gone(&err) {
                        " (the user is no longer a member of the organization, or it was deleted)"
                    } else {
                        ""
                    };
                    let error = format!("{err}{gone}");
                    return self
                        .processor
                        .finish(assignment, Outcome::Failed, Some(error));
                }
            }
        }
        let outcome = if wrote {
            Outcome::Assigned
        } else {
            Outcome::AlreadyDone
        };
        self.processor.finish(assignment, outcome, None)
    }
    /// Counts the roles a write added (tenant roles, or member roles of `organization`) and
    /// records them as this service's grants. `Err` is the ledger's refusal of this record (the
    /// event's own fault), as its reason.
    async fn count_and_record(
        &self,
        assignment: &Assignment,
        assigner: &RoleAssigner,
        organization: Option<&str>,
        roles: &[String],
    ) -> Result<(), String> {
        let scope = if organization.is_some() {
            "organization"
        } else {
            "tenant"
        };
        for role in roles {
            self.metrics
                .role_assignments
                .with_label_values(&[role, scope])
                .inc();
        }
        let Some(link) = &self.ledger else {
            return Ok(());
        };
        link.record_grants(
            &self.metrics,
            self.processor.policy(),
            assigner.directory(),
            &assignment.user_id,
            organization,
            roles,
            &GrantOrigin::of(&assignment.report, assignment.event_at),
        )
        .await
        .map_err(|refused| refusal_reason(&refused))
    }
}
