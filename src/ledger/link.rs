//! The pipeline's use of the ledger: which of an assignment's roles this service granted before
//! (never granted again), the grants to record once the Management API accepted them, failures
//! and deleted users; every statement waited out while the database fails (a service fault:
//! the event waits, nothing is acknowledged or lost).

use std::future::Future;
use std::time::Duration;

use crate::event::LogEvent;
use crate::metrics::Metrics;
use crate::mgmt::RoleDirectory;
use crate::policy::Policy;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{now_millis, Grant, GrantWrites, Ledger, LedgerError, Revocation};

/// The batcher's loop: takes the first lookup waiting and every other one queued (up to
/// [`LOOKUP_BATCH`]), answers them with one query, and so on until every sender is gone. A
/// query the database refuses (one user id it cannot take) is asked again user by user, so
/// only that user's lookup fails.
async fn batch_lookups(
    link: LedgerLink,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Lookup>,
) {
    let link = LedgerLink {
        lookups: None,
        writes: None,
        ..link
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < LOOKUP_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let users: Vec<&str> = batch.iter().map(|(u, _)| u.as_str()).collect();
        let users = &users;
        let standing = link
            .until_ok(&metrics, "look up standing grants", |l| async move {
                l.granted(users).await
            })
            .await;
        match standing {
            Ok(standing) => {
                for (user, reply) in batch {
                    let grants = standing.get(&user).cloned().unwrap_or_default();
                    let _ = reply.send(Ok(grants));
                }
            }
            Err(refused) if batch.len() == 1 => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(refused.clone()));
                }
            }
            Err(_) => {
                for (user, reply) in batch {
                    let _ = reply.send(link.standing_one(&metrics, &user).await);
                }
            }
        }
    }
}

/// Tenant log type codes of a user's deletion: `sdu` (Success User Deletion) and the legacy
/// `du` (see the shared Auth0 logs reference).
pub const USER_DELETION_LOG_TYPES: [&str; 2] = ["sdu", "du"];

/// Whether the event says its user was deleted (Event Streams `user.deleted`, or the tenant
/// log's user deletion).
pub fn is_user_deletion(event: &LogEvent) -> bool {
    if event.is_cloud_event() {
        event.event_type == "user.deleted"
    } else {
        USER_DELETION_LOG_TYPES.contains(&event.event_type.as_str())
    }
}

/// The write batcher's loop: the writes of the first writer waiting and of every other one
/// queued (up to [`WRITE_BATCH`] grants) in one transaction (journals, settlements and records
/// alike, [`GrantWrites`]), then each writer is answered. A transaction the database refuses
/// (one grant it cannot take) is written again writer by writer, and a refused writer's grants
/// one by one: every grant it can take is recorded and only the writers of the refused ones
/// hear of it.
async fn batch_writes(link: LedgerLink, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Write>) {
    let link = LedgerLink {
        lookups: None,
        writes: None,
        ..link
    };
    while let Some((first, reply)) = rx.recv().await {
        let mut batch = GrantWrites::default();
        let mut waiting = vec![(batch.add(first), reply)];
        while batch.journal.len() + batch.record.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok((more, reply)) => waiting.push((batch.add(more), reply)),
                Err(_) => break,
            }
        }
        let whole = &batch;
        let written = link
            .until_ok(&metrics, "record grants", |l| async move {
                l.write_grants(whole).await
            })
            .await;
        match written {
            Ok(completed) => {
                batch.count(&metrics, completed);
                for (_, reply) in waiting {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(refused) if waiting.len() == 1 && batch.journal.len() + batch.record.len() <= 1 => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(refused.clone()));
                }
            }
            Err(_) => {
                for (part, reply) in waiting {
                    let mine = batch.part(&part);
                    let _ = reply.send(link.write_one_by_one(&metrics, mine).await);
                }
            }
        }
    }
}

/// One writer's share of a batch: its ranges of `settle`, `journal` and `record`.
type Part = [std::ops::Range<usize>; 3];

impl GrantWrites {
    /// Adds another writer's statements to this transaction's: where they are.
    fn add(&mut self, other: GrantWrites) -> Part {
        let at = [self.settle.len(), self.journal.len(), self.record.len()];
        self.settle.extend(other.settle);
        self.journal.extend(other.journal);
        self.record.extend(other.record);
        [
            at[0]..self.settle.len(),
            at[1]..self.journal.len(),
            at[2]..self.record.len(),
        ]
    }

    /// A writer's share of a batch, on its own.
    fn part(&self, part: &Part) -> GrantWrites {
        GrantWrites {
            settle: self
                .settle
                .get(part[0].clone())
                .unwrap_or_default()
                .to_vec(),
            journal: self
                .journal
                .get(part[1].clone())
                .unwrap_or_default()
                .to_vec(),
            record: self
                .record
                .get(part[2].clone())
                .unwrap_or_default()
                .to_vec(),
        }
    }

    /// Counts the transaction committed (`ledger_writes_total{kind="grant"}` when it recorded
    /// grants, else `journal`) and logs the pending grants it settled as this service's.
    fn count(&self, metrics: &Metrics, completed: u64) {
        let kind = if self.record.is_empty() {
            "journal"
        } else {
            "grant"
        };
        metrics.ledger_writes.with_label_values(&[kind]).inc();
        if completed > 0 {
            tracing::info!(
                grants = completed,
                "grants journaled before a crash found held at the users' next read: recorded as this service's"
            );
        }
    }
}

/// What gave a set of grants: the event's matching rules, its trigger, its id and its time.
#[derive(Debug, Clone, Copy)]
pub struct GrantOrigin<'a> {
    pub rules: &'a [String],
    pub trigger: &'a str,
    pub event_id: &'a str,
    /// When the event happened (unix milliseconds), when it said.
    pub event_at: Option<i64>,
}

impl<'a> GrantOrigin<'a> {
    /// The origin of an event's grants, from its report.
    pub fn of(report: &'a crate::pipeline::Report, event_at: Option<i64>) -> GrantOrigin<'a> {
        GrantOrigin {
            rules: &report.rules,
            trigger: report.trigger.map(|t| t.as_str()).unwrap_or("none"),
            event_id: report.log_id.as_deref().unwrap_or("-"),
            event_at,
        }
    }
}

/// First wait after a failed statement, and the cap of the doubling waits.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Users per standing-grants query of the lookup batcher.
const LOOKUP_BATCH: usize = 500;

/// A user whose standing grants are wanted, and where to send them.
type Lookup = (String, oneshot::Sender<Result<Vec<Grant>, Refused>>);

/// Grants to settle, journal or record, and who waits for their commit.
type Write = (GrantWrites, oneshot::Sender<Result<(), Refused>>);

/// Grants per transaction of the write batcher.
const WRITE_BATCH: usize = 2000;

/// Writes (events' grants) queued for the write batcher at most: a writer past it waits for
/// room, so the grants waiting for a commit stay bounded (memory) while the database is slower
/// than the Management API.
const WRITE_QUEUE: usize = 1000;

/// First wait after a conflict with a concurrent transaction, and the cap of the doubling
/// waits (retried quietly: no fault).
const CONFLICT_WAIT: Duration = Duration::from_millis(10);
const CONFLICT_MAX_WAIT: Duration = Duration::from_millis(500);

/// A record the database refuses for its data (a NUL in an id, a value past a limit): no
/// retry can fix it, so the item it belongs to fails (its event ends `failed`, dead-lettered)
/// and the service goes on. Holds the database's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The ledger as the pipeline uses it: the ledger, the `[policy]` fingerprint in force, and the
/// lookup batcher (concurrent events' lookups become one query).
#[derive(Debug, Clone)]
pub struct LedgerLink {
    ledger: Ledger,
    fingerprint: String,
    lookups: Option<mpsc::UnboundedSender<Lookup>>,
    writes: Option<mpsc::Sender<Write>>,
    /// Memberships a later login through the organization was judged for and that the policy
    /// gives no member role (keyed by policy fingerprint, organization and user): the next
    /// logins cost no profile read (see docs/organizations.md).
    quiet_memberships: moka::sync::Cache<String, ()>,
}

/// Memberships kept as "no member role" at most, and for how long (a profile change that now
/// earns a role is seen after it, or at once by `organization.member.added` and `reconcile`).
const QUIET_MEMBERSHIPS: u64 = 100_000;
const QUIET_MEMBERSHIP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Who a member's revocations are by when the member left the organization.
pub const MEMBER_DELETED_BY: &str = "organization.member.deleted";

impl LedgerLink {
    /// Outside a Tokio runtime, lookups go one by one.
    pub fn new(ledger: Ledger, fingerprint: String) -> Self {
        LedgerLink {
            ledger,
            fingerprint,
            lookups: None,
            writes: None,
            quiet_memberships: moka::sync::Cache::builder()
                .max_capacity(QUIET_MEMBERSHIPS)
                .time_to_live(QUIET_MEMBERSHIP_TTL)
                .build(),
        }
    }

    fn quiet_key(&self, user_id: &str, organization: &str) -> String {
        format!("{}\n{organization}\n{user_id}", self.fingerprint)
    }

    /// Whether a later login of `user_id` through `organization` was judged under this policy
    /// and gave no member role (the negative decision kept).
    pub fn is_quiet_membership(&self, user_id: &str, organization: &str) -> bool {
        self.quiet_memberships
            .contains_key(&self.quiet_key(user_id, organization))
    }

    /// Keeps the negative decision for (`user_id`, `organization`) under this policy.
    pub fn mark_quiet_membership(&self, user_id: &str, organization: &str) {
        self.quiet_memberships
            .insert(self.quiet_key(user_id, organization), ());
    }

    /// The member roles of `wanted` (names) to leave out in `organization`: a standing grant
    /// there (this service gave it; an admin's removal since is not undone, another instance's
    /// grant not repeated), or an admin's recorded removal (`removed`, role ids).
    pub fn member_roles_kept_off(
        &self,
        metrics: &Metrics,
        directory: &RoleDirectory,
        standing: &[Grant],
        organization: &str,
        removed: &[String],
        wanted: &[String],
    ) -> Vec<String> {
        let kept: Vec<String> = wanted
            .iter()
            .filter(|name| {
                let id = directory.id(name);
                let same = |role_id: &str, role_name: &str| match &id {
                    Some(id) => role_id == id,
                    None => role_name.eq_ignore_ascii_case(name),
                };
                standing.iter().any(|g| {
                    g.organization_id.as_deref() == Some(organization)
                        && same(&g.role_id, &g.role_name)
                }) || removed.iter().any(|r| same(r, ""))
            })
            .cloned()
            .collect();
        metrics.ledger_kept_off.inc_by(kept.len() as u64);
        kept
    }

    /// The ids of the member roles an admin removed from `user_id` in `organization`.
    pub async fn removed_member_roles(
        &self,
        metrics: &Metrics,
        user_id: &str,
        organization: &str,
    ) -> Result<Vec<String>, Refused> {
        self.until_ok(metrics, "look up member role removals", |l| async move {
            l.removed_member_roles(user_id, organization).await
        })
        .await
    }

    /// Records an admin's removal of a member role (`organization.member.role.deleted`).
    pub async fn record_member_role_removal(
        &self,
        metrics: &Metrics,
        removal: &Revocation,
        event_id: &str,
    ) -> Result<(), Refused> {
        self.until_ok(metrics, "record a member role removal", |l| async move {
            l.record_member_role_removal(removal, event_id).await
        })
        .await?;
        metrics
            .ledger_writes
            .with_label_values(&["revocation"])
            .inc();
        Ok(())
    }

    /// The member left `organization` at `left_at` (`organization.member.deleted`): its grants
    /// there end and an admin's removals there are forgotten, so added again it gets its roles
    /// again; the negative decision kept for it goes too.
    pub async fn end_membership(
        &self,
        metrics: &Metrics,
        user_id: &str,
        organization: &str,
        left_at: i64,
        event_id: &str,
    ) -> Result<(), Refused> {
        let reason = format!("the member left the organization (event {event_id})");
        let reason = reason.as_str();
        let ended = self
            .until_ok(metrics, "end a member's grants", |l| async move {
                l.end_membership(user_id, organization, left_at, MEMBER_DELETED_BY, reason)
                    .await
            })
            .await?;
        self.quiet_memberships
            .invalidate(&self.quiet_key(user_id, organization));
        if ended > 0 {
            metrics
                .ledger_writes
                .with_label_values(&["revocation"])
                .inc();
        }
        Ok(())
    }

    /// Starts the lookup and write batchers: the lookups (grants) queued while a query
    /// (transaction) runs go together in the next one, with no added wait when idle; each
    /// caller still gets its answer (its commit) before its event's verdict. Needs a Tokio
    /// runtime.
    pub fn batched(mut self, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_lookups(self.clone(), Arc::clone(&metrics), rx));
        self.lookups = Some(tx);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(batch_writes(self.clone(), metrics, rx));
        self.writes = Some(tx);
        self
    }

    /// Whether the user holds a standing grant in `organization` (a later login through an
    /// organization the ledger has not seen is a member joining it).
    pub async fn seen_in_organization(
        &self,
        metrics: &Metrics,
        user_id: &str,
        organization: &str,
    ) -> Result<bool, Refused> {
        Ok(self
            .standing(metrics, user_id)
            .await?
            .iter()
            .any(|g| g.organization_id.as_deref() == Some(organization)))
    }

    /// The user's standing grants: through the batcher when it runs, else one query (both
    /// wait out a failing database; a refused user id is that lookup's failure).
    pub async fn standing(&self, metrics: &Metrics, user_id: &str) -> Result<Vec<Grant>, Refused> {
        if let Some(lookups) = &self.lookups {
            let (tx, rx) = oneshot::channel();
            if lookups.send((user_id.to_owned(), tx)).is_ok() {
                if let Ok(grants) = rx.await {
                    return grants;
                }
            }
        }
        self.standing_one(metrics, user_id).await
    }

    /// One user's standing grants, one query.
    async fn standing_one(&self, metrics: &Metrics, user_id: &str) -> Result<Vec<Grant>, Refused> {
        let mut standing = self
            .until_ok(metrics, "look up standing grants", |l| async move {
                l.granted(&[user_id]).await
            })
            .await?;
        Ok(standing.remove(user_id).unwrap_or_default())
    }

    /// Runs a writer's statements in a transaction of its own, and the grants of a writer the
    /// database refuses one by one (all it can take are written): the first refusal.
    async fn write_one_by_one(
        &self,
        metrics: &Metrics,
        writes: GrantWrites,
    ) -> Result<(), Refused> {
        let whole = &writes;
        let written = self
            .until_ok(metrics, "record grants", |l| async move {
                l.write_grants(whole).await
            })
            .await;
        match written {
            Ok(completed) => {
                writes.count(metrics, completed);
                return Ok(());
            }
            Err(refused) if writes.journal.len() + writes.record.len() <= 1 => return Err(refused),
            Err(_) => {}
        }
        let mut first_refusal = None;
        let singles = writes
            .journal
            .iter()
            .map(|g| GrantWrites {
                journal: vec![g.clone()],
                ..GrantWrites::default()
            })
            .chain(
                writes
                    .record
                    .iter()
                    .map(|g| GrantWrites::record(std::slice::from_ref(g))),
            );
        let settle = GrantWrites {
            settle: writes.settle.clone(),
            ..GrantWrites::default()
        };
        for one in std::iter::once(settle).chain(singles) {
            let one = &one;
            match self
                .until_ok(metrics, "record a grant", |l| async move {
                    l.write_grants(one).await
                })
                .await
            {
                Ok(completed) => one.count(metrics, completed),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        first_refusal.map_or(Ok(()), Err)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Runs `op` until it succeeds, or until the database refuses it for its data
    /// ([`Refused`]: returned, no retry can fix it, no fault). A conflict with a concurrent
    /// transaction is retried quietly. Any other failure sets the fault (intake pauses,
    /// `/readyz` names the ledger, `ledger_unreachable` = 1) and is retried with doubling
    /// waits (a ping first while failing); the first answer clears it.
    pub async fn until_ok<T, F, Fut>(
        &self,
        metrics: &Metrics,
        what: &str,
        op: F,
    ) -> Result<T, Refused>
    where
        F: Fn(Ledger) -> Fut,
        Fut: Future<Output = Result<T, LedgerError>>,
    {
        let mut wait = FIRST_WAIT;
        let mut conflict_wait = CONFLICT_WAIT;
        loop {
            let attempt = if self.ledger.fault().is_failing() {
                match self.ledger.ping().await {
                    Ok(()) => op(self.ledger.clone()).await,
                    Err(err) => Err(err),
                }
            } else {
                op(self.ledger.clone()).await
            };
            match attempt {
                Ok(value) => {
                    self.answered(metrics);
                    return Ok(value);
                }
                Err(err) if err.is_refused() => {
                    // The database answered: this record is the problem, not the service.
                    self.answered(metrics);
                    metrics.ledger_errors.inc();
                    metrics.ledger_refused.inc();
                    let said = crate::exit::cause_chain(&err);
                    tracing::warn!(error = %said, what, "the ledger refuses this record: its event fails, the service goes on");
                    return Err(Refused(said));
                }
                Err(err) if err.is_conflict() => {
                    metrics.ledger_errors.inc();
                    tracing::debug!(error = %crate::exit::cause_chain(&err), what, "a concurrent transaction conflicted; trying again");
                    tokio::time::sleep(conflict_wait).await;
                    conflict_wait = (conflict_wait * 2).min(CONFLICT_MAX_WAIT);
                }
                Err(err) => {
                    metrics.ledger_errors.inc();
                    let said = crate::exit::cause_chain(&err);
                    if self.ledger.fault().set_failing(said.clone()) {
                        metrics.ledger_unreachable.set(1);
                        tracing::warn!(error = %said, what, "the ledger fails: events wait and intake is paused until it answers again (nothing is lost)");
                    } else {
                        tracing::debug!(error = %said, what, "the ledger still fails");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_WAIT);
                }
            }
        }
    }

    /// The database answered: a failing period ends.
    fn answered(&self, metrics: &Metrics) {
        if self.ledger.fault().set_ok() {
            metrics.ledger_unreachable.set(0);
            tracing::info!(ledger = %self.ledger.describe(), "ledger answering again; resuming");
        }
    }

    /// The roles of `wanted` (names) among the user's `standing` grants of tenant roles: an
    /// admin's removal since then is not undone, nor is another instance's grant repeated.
    pub fn already_granted(
        &self,
        metrics: &Metrics,
        directory: &RoleDirectory,
        standing: &[Grant],
        wanted: &[String],
    ) -> Vec<String> {
        let held: Vec<String> = wanted
            .iter()
            .filter(|name| {
                let id = directory.id(name);
                standing.iter().any(|g| {
                    g.organization_id.is_none()
                        && match &id {
                            Some(id) => &g.role_id == id,
                            None => g.role_name.eq_ignore_ascii_case(name),
                        }
                })
            })
            .cloned()
            .collect();
        metrics.ledger_kept_off.inc_by(held.len() as u64);
        held
    }

    /// Ends the `standing` grants of an account that was deleted and re-created with the same
    /// id (the roles went with the old account): recorded as revocations, so the new account
    /// gets its roles and the history says why.
    pub async fn end_recreated(
        &self,
        metrics: &Metrics,
        standing: &[Grant],
        event_id: &str,
    ) -> Result<(), Refused> {
        let at = now_millis();
        let revocations: Vec<Revocation> = standing
            .iter()
            .map(|g| Revocation {
                user_id: g.user_id.clone(),
                role_id: g.role_id.clone(),
                role_name: g.role_name.clone(),
                organization_id: g.organization_id.clone(),
                by: self.ledger.instance().to_owned(),
                reason: format!(
                    "the user was re-created with the same id (event {event_id}): the old account's grant ended"
                ),
                at,
            })
            .collect();
        let revocations = &revocations;
        self.until_ok(metrics, "end a re-created user's grants", |l| async move {
            l.record_revocations(revocations).await
        })
        .await?;
        metrics
            .ledger_writes
            .with_label_values(&["revocation"])
            .inc();
        Ok(())
    }

    /// The grants of `roles` for `user_id` (member roles in `organization_id`; `None`: tenant
    /// roles), each with the rule of the event that gave it, as this instance records them.
    #[allow(clippy::too_many_arguments)]
    pub fn grants_of(
        &self,
        policy: &Policy,
        directory: &RoleDirectory,
        user_id: &str,
        organization_id: Option<&str>,
        roles: &[String],
        origin: &GrantOrigin<'_>,
    ) -> Vec<Grant> {
        let at = now_millis();
        roles
            .iter()
            .map(|name| Grant {
                user_id: user_id.to_owned(),
                role_id: directory.id(name).unwrap_or_else(|| name.clone()),
                role_name: name.clone(),
                organization_id: organization_id.map(str::to_owned),
                rule: rule_of(policy, origin.rules, name),
                trigger: origin.trigger.to_owned(),
                event_id: origin.event_id.to_owned(),
                policy_fingerprint: self.fingerprint.clone(),
                instance: self.ledger.instance().to_owned(),
                at,
                event_at: origin.event_at,
            })
            .collect()
    }

    /// Records grants the Management API accepted (and ends their pending rows), clearing their
    /// users' standing failures, before the event's verdict.
    pub async fn write_grants(&self, metrics: &Metrics, grants: Vec<Grant>) -> Result<(), Refused> {
        self.write(
            metrics,
            GrantWrites {
                record: grants,
                ..GrantWrites::default()
            },
        )
        .await
    }

    /// Journals `grants` before their role write, after settling the user's pending grants
    /// when the roles the user holds were just read (`held`, role ids): a pending grant of a
    /// role held is recorded as this service's (a write before a crash happened), the others
    /// are dropped (rewritten by this journal when written again).
    pub async fn journal_grants(
        &self,
        metrics: &Metrics,
        user_id: &str,
        held: Option<Vec<String>>,
        grants: Vec<Grant>,
    ) -> Result<(), Refused> {
        self.write(
            metrics,
            GrantWrites {
                settle: held
                    .map(|held| vec![(user_id.to_owned(), held)])
                    .unwrap_or_default(),
                journal: grants,
                record: Vec::new(),
            },
        )
        .await
    }

    /// Writes through the write batcher when it runs (waiting for room in its queue, then for
    /// the commit), else in one transaction. `Err` when the database refuses one of the grants:
    /// every other one is written.
    async fn write(&self, metrics: &Metrics, writes: GrantWrites) -> Result<(), Refused> {
        let writes = match &self.writes {
            Some(queue) => {
                let (tx, rx) = oneshot::channel();
                match queue.send((writes, tx)).await {
                    Ok(()) => {
                        return rx.await.unwrap_or_else(|_| {
                            Err(Refused(
                            "internal error: the ledger's write batcher stopped before the commit"
                                .to_owned(),
                        ))
                        })
                    }
                    Err(mpsc::error::SendError((writes, _))) => writes,
                }
            }
            None => writes,
        };
        self.write_one_by_one(metrics, writes).await
    }

    /// Records that the user's event failed for good.
    pub async fn record_failure(
        &self,
        metrics: &Metrics,
        user_id: &str,
        event_id: &str,
        reason: &str,
    ) -> Result<(), Refused> {
        self.until_ok(metrics, "record a failure", |l| async move {
            l.record_failure(user_id, event_id, reason).await
        })
        .await?;
        metrics.ledger_writes.with_label_values(&["failure"]).inc();
        Ok(())
    }

    /// Clears the user's standing failure (a later event succeeded).
    pub async fn clear_failure(&self, metrics: &Metrics, user_id: &str) -> Result<(), Refused> {
        self.until_ok(metrics, "clear a failure", |l| async move {
            l.clear_failures(&[user_id]).await
        })
        .await?;
        metrics.ledger_writes.with_label_values(&["clear"]).inc();
        Ok(())
    }

    /// Forgets a deleted user: what the ledger holds from before `deleted_at` (the deletion's
    /// time, unix milliseconds; `None`: everything).
    pub async fn forget_user(
        &self,
        metrics: &Metrics,
        user_id: &str,
        deleted_at: Option<i64>,
    ) -> Result<(), Refused> {
        self.until_ok(metrics, "forget a deleted user", |l| async move {
            l.forget_user(user_id, deleted_at).await
        })
        .await?;
        metrics.ledger_writes.with_label_values(&["forget"]).inc();
        // That deletions reach the service at all (`doctor` tells when none ever did).
        let seen = crate::ledger::now_millis().to_string();
        let seen = seen.as_str();
        self.until_ok(metrics, "note that deletions arrive", |l| async move {
            l.save_checkpoint(super::DELETIONS_SEEN, seen).await
        })
        .await?;
        Ok(())
    }
}

/// The first of the event's matching `rules` that gives `role` (by `assign`, else by
/// `assign_client_metadata`), else the first matching rule.
pub fn rule_of(policy: &Policy, rules: &[String], role: &str) -> String {
    let matching = || {
        rules
            .iter()
            .filter_map(|name| policy.rules().iter().find(|r| &r.name == name))
    };
    matching()
        .find(|r| r.assign.iter().any(|a| a == role))
        .or_else(|| matching().find(|r| r.assign_in_organization.iter().any(|a| a == role)))
        .or_else(|| matching().find(|r| r.assign_client_metadata.is_some()))
        .map(|r| r.name.clone())
        .or_else(|| rules.first().cloned())
        .unwrap_or_default()
}
