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
                    for role in &written {
                        self.metrics
                            .role_assignments
                            .with_label_values(&[role, "tenant"])
                            .inc();
                    }
                    if let Some(link) = &self.ledger {
                        let report = &assignment.report;
                        let recorded = link
                            .record_grants(
                                &self.metrics,
                                self.processor.policy(),
                                assigner.directory(),
                                &assignment.user_id,
                                None,
                                &written,
                                &GrantOrigin::of(report, assignment.event_at),
                            )
                            .await;
                        if let Err(refused) = recorded {
                            return self.processor.finish(
                                assignment,
                                Outcome::Failed,
                                Some(refusal_reason(&refused)),
                            );
                        }
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
                    for role in &member.missing {
                        self.metrics
                            .role_assignments
                            .with_label_values(&[role, "organization"])
                            .inc();
                    }
                    if let Some(link) = &self.ledger {
                        let report = &assignment.report;
                        let recorded = link
                            .record_grants(
                                &self.metrics,
                                self.processor.policy(),
                                assigner.directory(),
                                &assignment.user_id,
                                Some(&member.organization_id),
                                &member.missing,
                                &GrantOrigin::of(report, assignment.event_at),
                            )
                            .await;
                        if let Err(refused) = recorded {
                            return self.processor.finish(
                                assignment,
                                Outcome::Failed,
                                Some(refusal_reason(&refused)),
                            );
                        }
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
}
