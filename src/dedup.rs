//! Deduplication: the `log_id`s already handled and the roles already given to each user, in
//! bounded TTL caches (moka), shared by every task of the process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moka::sync::Cache;

/// The default of `dedup.user_roles_ttl_seconds`: ten minutes.
pub const DEFAULT_USER_ROLES_TTL: Duration = Duration::from_secs(600);

/// Settings of the `[dedup]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupSettings {
    /// How long a handled `log_id` is remembered (redeliveries within it are `already_done`).
    pub ttl: Duration,
    /// How long the roles given to a user are remembered. Short on purpose: it only absorbs a
    /// burst (signup, first login, verification, redeliveries); a user deleted and re-created
    /// with the same id, or whose role an admin removed, gets it again on a later trigger.
    pub user_roles_ttl: Duration,
    /// Upper bound on entries per cache.
    pub max_entries: u64,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings {
            ttl: Duration::from_secs(86_400),
            user_roles_ttl: DEFAULT_USER_ROLES_TTL,
            max_entries: 1_000_000,
        }
    }
}

/// Remembers handled events and assigned roles. Cheap to clone (shared caches).
#[derive(Clone)]
pub struct Dedup {
    seen_logs: Cache<String, ()>,
    assigned: Cache<String, Arc<BTreeSet<String>>>,
    /// The time of the newest event whose roles `assigned` remembers, per user, and whether a
    /// signup was among them: a signup (or, without one, a first login) dated well after it is
    /// a re-created account.
    assigned_for: Cache<String, (SystemTime, bool)>,
    /// Users an Event Streams `user.deleted` named, with the deletion's time (remembered as
    /// long as `log_id`s).
    deleted: Cache<String, Deletion>,
    /// How long an event without a time is taken for one from before a deletion.
    untimed_window: Duration,
}

/// When a user was deleted: the event's time, else when the deletion arrived.
#[derive(Debug, Clone, Copy)]
// moka expires entries on its own clock, the wall clock: the untimed window is measured on the
// same clock, so an entry and its window age together.
#[allow(clippy::disallowed_types)]
struct Deletion {
    at: SystemTime,
    received: std::time::Instant,
}

/// An RFC 3339 time (`2026-12-01T10:00:00.123Z`, `2026-12-01T11:00:00+01:00`, any precision) as
/// an instant; `None` when it is not one.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    let nanos = parsed.unix_timestamp_nanos();
    let since = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).ok()?);
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since)
    }
}

/// A member role as remembered in its user's entry: `organization\nrole` (no organization id
/// holds a line break), so a user's deletion forgets its member roles too.
fn member_role(organization_id: &str, role: &str) -> String {
    format!("{organization_id}\n{role}")
}

impl Dedup {
    pub fn new(settings: DedupSettings) -> Self {
        Dedup {
            seen_logs: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .build(),
            deleted: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .build(),
            assigned: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.user_roles_ttl)
                .build(),
            assigned_for: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.user_roles_ttl)
                .build(),
            untimed_window: settings.user_roles_ttl,
        }
    }

    /// True when this `log_id` already reached a final outcome.
    pub fn log_seen(&self, log_id: &str) -> bool {
        self.seen_logs.contains_key(log_id)
    }

    /// Records that this `log_id` reached a final outcome.
    pub fn mark_log_done(&self, log_id: &str) {
        self.seen_logs.insert(log_id.to_owned(), ());
    }

    /// The roles of `wanted` not yet given to `user_id` by this process (in `wanted` order).
    pub fn missing_roles(&self, user_id: &str, wanted: &[String]) -> Vec<String> {
        match self.assigned.get(user_id) {
            Some(held) => wanted
                .iter()
                .filter(|r| !held.contains(*r))
                .cloned()
                .collect(),
            None => wanted.to_vec(),
        }
    }

    /// The tenant roles this process gave `user_id` recently (empty when none, or forgotten);
    /// member roles in organizations are not the user's roles and are left out.
    pub fn given_roles(&self, user_id: &str) -> Vec<String> {
        self.assigned
            .get(user_id)
            .map(|set| set.iter().filter(|r| !r.contains('\n')).cloned().collect())
            .unwrap_or_default()
    }

    /// Records that `user_id` now holds `roles`.
    pub fn mark_assigned(&self, user_id: &str, roles: &[String]) {
        let mut held = self
            .assigned
            .get(user_id)
            .map(|set| (*set).clone())
            .unwrap_or_default();
        held.extend(roles.iter().cloned());
        self.assigned.insert(user_id.to_owned(), Arc::new(held));
    }

    /// Records the time of the event whose roles were just remembered for `user_id` (the
    /// newest one counts) and whether it was a signup.
    pub fn mark_event_time(&self, user_id: &str, at: SystemTime, signup: bool) {
        let (newest, signed_up) = match self.assigned_for.get(user_id) {
            Some((known, seen)) => (known.max(at), seen || signup),
            None => (at, signup),
        };
        self.assigned_for
            .insert(user_id.to_owned(), (newest, signed_up));
    }

    /// A trigger of `user_id` at `date` (RFC 3339) more than `margin` after the newest event
    /// whose roles this process remembers for the user is a re-created account (same id, new
    /// account) when it is a signup, or a first login of a user whose signup was never among
    /// them (social and enterprise users log none; a database user's first login follows its
    /// own signup): what was remembered is forgotten, and the ledger judges. Returns whether it
    /// was.
    pub fn forget_if_recreated(
        &self,
        user_id: &str,
        date: &str,
        margin: Duration,
        signup: bool,
    ) -> bool {
        let (Some(at), Some((known, signed_up))) =
            (parse_time(date), self.assigned_for.get(user_id))
        else {
            return false;
        };
        if (signup || !signed_up) && at.duration_since(known).is_ok_and(|after| after > margin) {
            self.assigned.invalidate(user_id);
            self.assigned_for.invalidate(user_id);
            return true;
        }
        false
    }

    /// The roles of `wanted` not yet given to `user_id` as its roles in `organization_id` by
    /// this process (in `wanted` order): one memory per (user, organization).
    pub fn missing_member_roles(
        &self,
        organization_id: &str,
        user_id: &str,
        wanted: &[String],
    ) -> Vec<String> {
        let remembered: Vec<String> = wanted
            .iter()
            .map(|role| member_role(organization_id, role))
            .collect();
        self.missing_roles(user_id, &remembered)
            .into_iter()
            .filter_map(|r| r.split_once('\n').map(|(_, role)| role.to_owned()))
            .collect()
    }

    /// Forgets the member roles remembered for `user_id` in `organization_id` (the member
    /// left it: added again, it gets them again).
    pub fn forget_membership(&self, organization_id: &str, user_id: &str) {
        let Some(held) = self.assigned.get(user_id) else {
            return;
        };
        let prefix = format!("{organization_id}\n");
        let kept: BTreeSet<String> = held
            .iter()
            .filter(|r| !r.starts_with(&prefix))
            .cloned()
            .collect();
        self.assigned.insert(user_id.to_owned(), Arc::new(kept));
    }

    /// Records that `user_id` now holds `roles` in `organization_id`.
    pub fn mark_member_assigned(&self, organization_id: &str, user_id: &str, roles: &[String]) {
        let remembered: Vec<String> = roles
            .iter()
            .map(|role| member_role(organization_id, role))
            .collect();
        self.mark_assigned(user_id, &remembered);
    }

    /// Records that `user_id` was deleted at `time` (RFC 3339; without one, or unreadable: now):
    /// its triggers from before then are not eligible.
    #[allow(clippy::disallowed_types)] // the wall clock, as `Deletion` says
    pub fn mark_user_deleted(&self, user_id: &str, time: Option<&str>) {
        let deletion = Deletion {
            at: time.and_then(parse_time).unwrap_or_else(SystemTime::now),
            received: std::time::Instant::now(),
        };
        self.deleted.insert(user_id.to_owned(), deletion);
        self.assigned.invalidate(user_id);
        self.assigned_for.invalidate(user_id);
    }

    /// Whether `user_id` was deleted after an event of `time`, compared as instants (offsets
    /// and precision do not matter). A user re-created after the deletion (a later `time`) is
    /// eligible again. An event without a readable time is taken for an earlier one only
    /// shortly after the deletion arrived (`user_roles_ttl`), never for a day.
    pub fn user_deleted(&self, user_id: &str, time: Option<&str>) -> bool {
        let Some(deletion) = self.deleted.get(user_id) else {
            return false;
        };
        match time.and_then(parse_time) {
            Some(event_at) => event_at <= deletion.at,
            None => deletion.received.elapsed() < self.untimed_window,
        }
    }

    /// Entries held (approximate, for metrics): handled logs plus users.
    pub fn entries(&self) -> u64 {
        self.seen_logs.entry_count() + self.assigned.entry_count()
    }
}

#[cfg(test)]
// moka's TTLs run on the wall clock, not tokio's: these tests wait on it for real.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remembers_logs_and_roles() {
        let dedup = Dedup::new(DedupSettings::default());
        assert!(!dedup.log_seen("1"));
        dedup.mark_log_done("1");
        assert!(dedup.log_seen("1"));
        assert_eq!(
            dedup.missing_roles("u", &roles(&["A", "B"])),
            roles(&["A", "B"])
        );
        dedup.mark_assigned("u", &roles(&["A"]));
        assert_eq!(dedup.missing_roles("u", &roles(&["A", "B"])), roles(&["B"]));
        dedup.mark_assigned("u", &roles(&["B"]));
        assert!(dedup.missing_roles("u", &roles(&["B", "A"])).is_empty());
        assert_eq!(dedup.missing_roles("other", &roles(&["A"])), roles(&["A"]));
    }

    #[test]
    fn member_roles_are_remembered_per_organization_apart_from_tenant_roles() {
        let dedup = Dedup::new(DedupSettings::default());
        dedup.mark_assigned("u", &roles(&["Viewer"]));
        dedup.mark_member_assigned("org_a", "u", &roles(&["Viewer", "Staff"]));
        assert!(dedup
            .missing_member_roles("org_a", "u", &roles(&["Staff", "Viewer"]))
            .is_empty());
        assert_eq!(
            dedup.missing_member_roles("org_b", "u", &roles(&["Viewer"])),
            roles(&["Viewer"]),
            "another organization is another membership"
        );
        assert_eq!(
            dedup.missing_roles("u", &roles(&["Viewer", "Staff"])),
            roles(&["Staff"]),
            "a member role is not a tenant role"
        );
        assert_eq!(
            dedup.given_roles("u"),
            roles(&["Viewer"]),
            "has_roles sees tenant roles"
        );
        // A deleted user (re-created later with the same id) starts over in every organization.
        dedup.mark_user_deleted("u", None);
        assert_eq!(
            dedup.missing_member_roles("org_a", "u", &roles(&["Staff"])),
            roles(&["Staff"])
        );
    }

    #[test]
    fn deletions_and_events_are_compared_as_instants() {
        let dedup = Dedup::new(DedupSettings::default());
        // 10:00:00.5 UTC, written with an offset and a precision the event does not use.
        dedup.mark_user_deleted("u", Some("2026-12-01T11:00:00.500+01:00"));
        assert!(dedup.user_deleted("u", Some("2026-12-01T10:00:00Z")));
        assert!(dedup.user_deleted("u", Some("2026-12-01T10:00:00.499999Z")));
        // Text order says "earlier" ("09" < "11"), time order says later: re-created.
        assert!(!dedup.user_deleted("u", Some("2026-12-01T10:00:01Z")));
        assert!(!dedup.user_deleted("u", Some("2026-12-01T09:30:00-01:00")));
        assert!(!dedup.user_deleted("other", Some("2026-12-01T10:00:00Z")));
    }

    #[test]
    fn a_deletion_without_a_time_counts_from_its_arrival() {
        let dedup = Dedup::new(DedupSettings {
            user_roles_ttl: Duration::from_millis(50),
            ..DedupSettings::default()
        });
        dedup.mark_user_deleted("u", None);
        let before = "2020-01-01T00:00:00Z";
        assert!(dedup.user_deleted("u", Some(before)));
        // A re-created user's signup is later than the deletion's arrival.
        let later = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(5));
        assert!(!dedup.user_deleted("u", Some(&later.to_string())));
        assert!(dedup.user_deleted("u", None), "untimed, just after");
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !dedup.user_deleted("u", None),
            "untimed, later: not blocked"
        );
    }

    #[test]
    fn forgets_after_ttl() {
        let dedup = Dedup::new(DedupSettings {
            ttl: Duration::from_millis(50),
            user_roles_ttl: Duration::from_millis(50),
            max_entries: 10,
        });
        dedup.mark_log_done("1");
        dedup.mark_assigned("u", &roles(&["A"]));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!dedup.log_seen("1"));
        assert_eq!(dedup.missing_roles("u", &roles(&["A"])), roles(&["A"]));
    }
}
