//! Role assignment with coalescing: requests arriving within a short window are assigned with
//! whichever spends fewer calls, one `POST /users/{id}/roles` per user or one
//! `POST /roles/{id}/users` per role. A bulk call that fails for one user (a deleted user fails
//! the whole call) falls back to per-user calls, so one bad user never blocks the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use tokio::sync::{mpsc, oneshot};

use super::{MgmtClient, MgmtError, RoleDirectory};

/// What an assignment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignOutcome {
    /// These roles were written (the others asked for were held already, when the user's
    /// roles were read first).
    Assigned { written: Vec<String> },
    /// The read before the write found the user already holds every role: nothing written.
    AlreadyHeld,
}

/// Coalescing settings (`[auth0] batch_window_ms`, `batch_max_users`, `read_user_roles`,
/// `count_group_roles`).
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub window: Duration,
    pub max_users: usize,
    pub read_user_roles: bool,
    /// The read of the roles held counts roles held through groups (`effective-roles`).
    pub count_group_roles: bool,
}

/// Runs between the read of the user's roles and the role write (the ledger's journal of the
/// grants): given the names of the roles about to be written (maybe none) and the ids of the
/// roles the read found held (`None`: no read). `Err` (a reason) fails the user's assignment
/// with [`MgmtError::BeforeWrite`], nothing written.
pub type BeforeWrite = Box<
    dyn FnOnce(Vec<String>, Option<Vec<String>>) -> BoxFuture<'static, Result<(), String>> + Send,
>;

struct Pending {
    user_id: String,
    roles: Vec<String>,
    /// Read the user's roles first and write only the missing ones.
    read_held: bool,
    before_write: Option<BeforeWrite>,
    /// The roles written for this user (of all its requests in the batch).
    done: WrittenReply,
}

/// Where a pending assignment's written roles (or its failure) go.
type WrittenReply = oneshot::Sender<Result<BTreeSet<String>, MgmtError>>;

/// Pending assignments queued for the batching task at most.
pub const PENDING_MAX: usize = 10_000;

/// Events in process and messages taken and not begun (queued behind their user, or spawned and
/// not polled yet), together, at which sources pause their intake
/// ([`crate::source::Intake::update_waiting`]): at the tenant's rate more waiting buys no
/// throughput, only memory. The events in process with the messages queued behind their user
/// pause it sooner, at [`crate::pipeline::PROCESSING_MAX`] (an event in process holds its path,
/// about 10 KB; a queued message only its decoded events).
pub const WAITING_MAX: usize = 10_000;

/// Assigns roles by name. Cheap to clone; one batching task per process.
#[derive(Clone)]
pub struct RoleAssigner {
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    /// Bounded: when the tenant is slow, assignments queue here at most [`PENDING_MAX`] deep
    /// and callers wait for room.
    tx: mpsc::Sender<Pending>,
    read_user_roles: bool,
    count_group_roles: bool,
    /// Assignments inside [`RoleAssigner::assign`] now (shared by the clones).
    waiting: Arc<AtomicUsize>,
}

/// Counts an assignment waiting for the tenant while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn enter(count: &Arc<AtomicUsize>) -> Waiting {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RoleAssigner {
    /// Starts the batching task on the current tokio runtime.
    pub fn start(
        client: MgmtClient,
        directory: Arc<RoleDirectory>,
        settings: BatchSettings,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PENDING_MAX);
        tokio::spawn(batch_loop(
            client.clone(),
            Arc::clone(&directory),
            rx,
            settings.window,
            settings.max_users.max(1),
            settings.count_group_roles,
        ));
        RoleAssigner {
            client,
            directory,
            tx,
            read_user_roles: settings.read_user_roles,
            count_group_roles: settings.count_group_roles,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn directory(&self) -> &Arc<RoleDirectory> {
        &self.directory
    }

    /// The ids of the roles `user_id` holds, as `[auth0] count_group_roles` counts them:
    /// direct roles only (`GET /users/{id}/roles`), or also those held through groups
    /// (`GET /users/{id}/effective-roles`).
    pub async fn held_role_ids(&self, user_id: &str) -> Result<Vec<String>, MgmtError> {
        self.client
            .get_held_role_ids(user_id, self.count_group_roles)
            .await
    }

    /// Whether reads of the roles held count roles held through groups.
    pub fn count_group_roles(&self) -> bool {
        self.count_group_roles
    }

    /// Assignments waiting for the tenant now (see [`WAITING_MAX`]).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Gives `user_id` the roles named `roles`, first reading the roles the user holds
    /// (`GET /users/{id}/roles`, or `effective-roles` with `count_group_roles`: a role held
    /// through a group is then not written) when `read_user_roles` is set or `read_held` asks for it (the
    /// ledger records only what the write added). Waits through transient failures; returns
    /// a permanent failure (404 user, 400, 403) as an error.
    pub async fn assign(
        &self,
        user_id: &str,
        roles: &[String],
        read_held: bool,
    ) -> Result<AssignOutcome, MgmtError> {
        self.assign_journaled(user_id, roles, read_held, None).await
    }

    /// [`RoleAssigner::assign`], with `before_write` run between the read and the write (see
    /// [`BeforeWrite`]).
    pub async fn assign_journaled(
        &self,
        user_id: &str,
        roles: &[String],
        read_held: bool,
        before_write: Option<BeforeWrite>,
    ) -> Result<AssignOutcome, MgmtError> {
        let read_held = self.read_user_roles || read_held;
        let _waiting = Waiting::enter(&self.waiting);
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            user_id: user_id.to_owned(),
            roles: roles.to_vec(),
            read_held,
            before_write,
            done,
        };
        let written = match self.tx.send(pending).await {
            Ok(()) => match wait.await {
                Ok(result) => result?,
                // The batch was dropped (runtime shutting down): its journal with it.
                Err(_) => {
                    self.assign_directly(user_id, roles, read_held, None)
                        .await?
                }
            },
            // The batching task is gone (runtime shutting down): assign directly.
            Err(mpsc::error::SendError(pending)) => {
                self.assign_directly(user_id, roles, read_held, pending.before_write)
                    .await?
            }
        };
        let written: Vec<String> = roles
            .iter()
            .filter(|r| written.contains(*r))
            .cloned()
            .collect();
        if written.is_empty() && read_held {
            return Ok(AssignOutcome::AlreadyHeld);
        }
        Ok(AssignOutcome::Assigned { written })
    }

    /// One user's assignment without the batching task: the read (when asked), then one call.
    async fn assign_directly(
        &self,
        user_id: &str,
        roles: &[String],
        read_held: bool,
        before_write: Option<BeforeWrite>,
    ) -> Result<BTreeSet<String>, MgmtError> {
        let mut roles: BTreeSet<String> = roles.iter().cloned().collect();
        let mut read = None;
        if read_held {
            let held = self.held_role_ids(user_id).await?;
            roles.retain(|name| self.directory.id(name).is_none_or(|id| !held.contains(&id)));
            read = Some(held);
        }
        let list: Vec<String> = roles.iter().cloned().collect();
        if let Some(before_write) = before_write {
            before_write(list.clone(), read)
                .await
                .map_err(MgmtError::BeforeWrite)?;
        }
        assign_user(&self.client, &self.directory, user_id, &list).await?;
        Ok(roles)
    }
}

async fn batch_loop(
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    mut rx: mpsc::Receiver<Pending>,
    window: Duration,
    max_users: usize,
    count_group_roles: bool,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < max_users {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(pending)) => batch.push(pending),
                Ok(None) | Err(_) => break,
            }
        }
        tokio::spawn(run_batch(
            client.clone(),
            Arc::clone(&directory),
            batch,
            count_group_roles,
        ));
    }
}

/// Role names → ids. A policy role the directory does not know is a missing role; a role named
/// by an application's `client_metadata` that the tenant no longer has (deleted since it was
/// looked up) is that application's data: left out, warned about and counted, and the other
/// roles are given.
fn ids(
    client: &MgmtClient,
    directory: &RoleDirectory,
    names: &[String],
) -> Result<Vec<String>, MgmtError> {
    let mut ids = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match directory.id(name) {
            Some(id) => ids.push(id),
            None if !directory.is_policy_role(name) => {
                client.metrics().client_metadata_unknown_roles.inc();
                tracing::warn!(role = %name, "a role an application's client_metadata names no longer exists in the tenant: left out (the event's other roles are given)");
            }
            None => missing.push(name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(ids)
    } else {
        Err(MgmtError::MissingRoles(missing))
    }
}

/// How many times a call answered 404 for a role id is sent again after the names resolved
/// again (a role deleted and re-created gets a new id; deleted again meanwhile, again).
const ROLE_RETRIES: u32 = 3;

/// One per-user call. A 404 for a role id resolves the names again (waiting, as a service
/// fault, while a policy role is missing) and sends the call again with the new ids; a 404 for
/// the user fails that user and reads no role.
pub(crate) async fn assign_user(
    client: &MgmtClient,
    directory: &RoleDirectory,
    user_id: &str,
    roles: &[String],
) -> Result<(), MgmtError> {
    if roles.is_empty() {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        let seen = directory.generation();
        let role_ids = ids(client, directory, roles)?;
        if role_ids.is_empty() {
            return Ok(());
        }
        match client.assign_user_roles(user_id, &role_ids).await {
            Err(err) if err.is_role_not_found() && attempt < ROLE_RETRIES => {
                tracing::warn!(error = %err, "a role id was not found: resolving role names again");
                directory.resolve_again(client, seen).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One bulk call for a role, with the id it went to. A 404 for the role id resolves the names
/// again as [`assign_user`] does; "One or more of the users do not exist" is returned as is.
pub(crate) async fn assign_role_with_id(
    client: &MgmtClient,
    directory: &RoleDirectory,
    role: &str,
    users: &[String],
) -> (Option<String>, Result<(), MgmtError>) {
    let role_names = [role.to_owned()];
    let mut attempt = 0;
    loop {
        let seen = directory.generation();
        let id = match ids(client, directory, &role_names) {
            Ok(ids) => match ids.into_iter().next() {
                Some(id) => id,
                // An application's role the tenant no longer has: nothing to write.
                None => return (None, Ok(())),
            },
            Err(err) => return (None, Err(err)),
        };
        match client.assign_role_users(&id, users).await {
            Err(err) if err.is_role_not_found() && attempt < ROLE_RETRIES => {
                tracing::warn!(error = %err, role, "a role id was not found: resolving role names again");
                if let Err(err) = directory.resolve_again(client, seen).await {
                    return (Some(id), Err(err));
                }
                attempt += 1;
            }
            other => return (Some(id), other),
        }
    }
}

/// One bulk call for a role (see [`assign_role_with_id`]).
pub(crate) async fn assign_role(
    client: &MgmtClient,
    directory: &RoleDirectory,
    role: &str,
    users: &[String],
) -> Result<(), MgmtError> {
    assign_role_with_id(client, directory, role, users).await.1
}

async fn run_batch(
    client: MgmtClient,
    directory: Arc<RoleDirectory>,
    batch: Vec<Pending>,
    count_group_roles: bool,
) {
    // Merge requests by user; remember every waiter.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut read: BTreeSet<String> = BTreeSet::new();
    let mut waiters: Vec<(String, WrittenReply)> = Vec::new();
    let mut journals: Vec<(String, Vec<String>, BeforeWrite)> = Vec::new();
    for pending in batch {
        if let Some(before_write) = pending.before_write {
            journals.push((pending.user_id.clone(), pending.roles.clone(), before_write));
        }
        wanted
            .entry(pending.user_id.clone())
            .or_default()
            .extend(pending.roles);
        if pending.read_held {
            read.insert(pending.user_id.clone());
        }
        waiters.push((pending.user_id, pending.done));
    }
    let mut results: BTreeMap<String, Result<(), MgmtError>> = BTreeMap::new();
    // The roles the users asked to be read hold already: read together (the batch keeps its
    // shape, so the writes still coalesce), left out of the writes.
    let reads = read.iter().map(|user| {
        let client = &client;
        async move {
            (
                user,
                client.get_held_role_ids(user, count_group_roles).await,
            )
        }
    });
    let mut read_held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, held) in join_all(reads).await {
        match held {
            Ok(held) => {
                if let Some(roles) = wanted.get_mut(user) {
                    roles.retain(|name| directory.id(name).is_none_or(|id| !held.contains(&id)));
                }
                read_held.insert(user.clone(), held);
            }
            Err(err) => {
                wanted.remove(user);
                results.insert(user.clone(), Err(err));
            }
        }
    }
    // Between the read and the write: the journals (the ledger's pending grants, one commit
    // for the batch through its write batcher). A user whose journal is refused is not written.
    let journaled = journals
        .into_iter()
        .filter(|(user, _, _)| !results.contains_key(user))
        .map(|(user, roles, before_write)| {
            let to_write: Vec<String> = wanted
                .get(&user)
                .map(|w| roles.into_iter().filter(|r| w.contains(r)).collect())
                .unwrap_or_default();
            let held = read_held.get(&user).cloned();
            async move { (user, before_write(to_write, held).await) }
        });
    for (user, journaled) in join_all(journaled).await {
        if let Err(reason) = journaled {
            wanted.remove(&user);
            results.insert(user, Err(MgmtError::BeforeWrite(reason)));
        }
    }
    wanted.retain(|_, roles| !roles.is_empty());
    let mut by_role: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, roles) in &wanted {
        for role in roles {
            by_role.entry(role.clone()).or_default().push(user.clone());
        }
    }
    let users = wanted.len();
    if users >= 2 && by_role.len() < users {
        tracing::debug!(users, calls = by_role.len(), "bulk assignment");
        let calls = by_role.iter().map(|(role, members)| {
            let client = &client;
            let directory = &directory;
            async move {
                let outcome = assign_role(client, directory, role, members).await;
                (role, members, outcome)
            }
        });
        let mut fallback: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (role, members, outcome) in join_all(calls).await {
            match outcome {
                Ok(()) => {}
                Err(err @ (MgmtError::Auth(_) | MgmtError::MissingRoles(_))) => {
                    for user in members {
                        results.insert(user.clone(), Err(err.clone()));
                    }
                }
                Err(err) => {
                    // One bad user fails the whole bulk call: find it with per-user calls.
                    tracing::info!(error = %err, users = members.len(), "bulk assignment failed; assigning one by one");
                    for user in members {
                        fallback.entry(user.clone()).or_default().push(role.clone());
                    }
                }
            }
        }
        let retries = fallback.iter().map(|(user, roles)| {
            let client = &client;
            let directory = &directory;
            async move { (user, assign_user(client, directory, user, roles).await) }
        });
        for (user, outcome) in join_all(retries).await {
            if let Err(err) = outcome {
                results.insert(user.clone(), Err(err));
            }
        }
    } else {
        let calls = wanted.iter().map(|(user, roles)| {
            let client = &client;
            let directory = &directory;
            let roles: Vec<String> = roles.iter().cloned().collect();
            async move { (user, assign_user(client, directory, user, &roles).await) }
        });
        for (user, outcome) in join_all(calls).await {
            results.insert(user.clone(), outcome);
        }
    }
    for (user, done) in waiters {
        let result = match results.get(&user) {
            Some(Err(err)) => Err(err.clone()),
            _ => Ok(wanted.get(&user).cloned().unwrap_or_default()),
        };
        let _ = done.send(result);
    }
}
