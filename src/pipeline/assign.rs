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
            let journal = self.journal(&assignment, assigner);
            match assigner
                .assign_journaled(&assignment.user_id, &assignment.missing, read_held, journal)
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
    /// With a ledger, the journal run between the read of the user's roles and the write: the
    /// grants about to be written are recorded as pending (one commit per batch, through the
    /// ledger's write batcher), after settling the user's earlier pending grants against what
    /// the read found held (a crash between an accepted write and its record: the role held
    /// now is recorded as this service's grant). A crash after the write leaves the grant
    /// pending, never lost.
    fn journal(
        &self,
        assignment: &Assignment,
        assigner: &RoleAssigner,
    ) -> Option<crate::mgmt::BeforeWrite> {
        let link = self.ledger.clone()?;
        let metrics = Arc::clone(&self.metrics);
        let grants = link.grants_of(
            self.processor.policy(),
            assigner.directory(),
            &assignment.user_id,
            None,
            &assignment.missing,
            &GrantOrigin::of(&assignment.report, assignment.event_at),
        );
        let user_id = assignment.user_id.clone();
        Some(Box::new(
            move |to_write: Vec<String>, held: Option<Vec<String>>| {
                Box::pin(async move {
                    let grants: Vec<_> = grants
                        .into_iter()
                        .filter(|g| to_write.contains(&g.role_name))
                        .collect();
                    link.journal_grants(&metrics, &user_id, held, grants)
                        .await
                        .map_err(|refused| refusal_reason(&refused))
                })
            },
        ))
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
        let grants = link.grants_of(
            self.processor.policy(),
            assigner.directory(),
            &assignment.user_id,
            organization,
            roles,
            &GrantOrigin::of(&assignment.report, assignment.event_at),
        );
        link.write_grants(&self.metrics, grants)
            .await
            .map_err(|refused| refusal_reason(&refused))
    }
}
