//! Deduplication: the `log_id`s already handled and the roles already given to each user, in
//! bounded TTL caches (moka), shared by every task of the process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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
    /// Users an Event Streams `user.deleted` named, with the deletion's time (remembered as
    /// long as `log_id`s).
    deleted: Cache<String, Arc<str>>,
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

    /// The roles this process gave `user_id` recently (empty when none, or forgotten).
    pub fn given_roles(&self, user_id: &str) -> Vec<String> {
        self.assigned
            .get(user_id)
            .map(|set| set.iter().cloned().collect())
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

    /// Records that `user_id` was deleted at `time` (RFC 3339): its triggers from before then
    /// are not eligible.
    pub fn mark_user_deleted(&self, user_id: &str, time: &str) {
        self.deleted.insert(user_id.to_owned(), Arc::from(time));
        self.assigned.invalidate(user_id);
    }

    /// Whether `user_id` was deleted after an event of `time` (unknown time: any deletion). A
    /// user re-created after the deletion (a later `time`) is eligible again.
    pub fn user_deleted(&self, user_id: &str, time: Option<&str>) -> bool {
        self.deleted
            .get(user_id)
            .is_some_and(|deleted_at| time.is_none_or(|t| t <= &*deleted_at))
    }

    /// Entries held (approximate, for metrics): handled logs plus users.
    pub fn entries(&self) -> u64 {
        self.seen_logs.entry_count() + self.assigned.entry_count()
    }
}

#[cfg(test)]
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
