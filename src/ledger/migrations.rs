//! The ledger's migrations, compiled into the binary (no folder needed at run time, no
//! `macros` feature), for SQLite and PostgreSQL.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

pub(super) const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "ledger",
        include_str!("../../migrations/sqlite/0001_ledger.sql"),
    ),
    (
        2,
        "checkpoints",
        include_str!("../../migrations/sqlite/0002_checkpoints.sql"),
    ),
    (
        3,
        "grant event time",
        include_str!("../../migrations/sqlite/0003_grant_event_time.sql"),
    ),
    (
        4,
        "pending revocations and member role removals",
        include_str!(
            "../../migrations/sqlite/0004_pending_revocations_and_member_role_removals.sql"
        ),
    ),
    (
        5,
        "reader leases",
        include_str!("../../migrations/sqlite/0005_leases.sql"),
    ),
    (
        6,
        "pending grants",
        include_str!("../../migrations/sqlite/0006_pending_grants.sql"),
    ),
];
pub(super) const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "ledger",
        include_str!("../../migrations/postgres/0001_ledger.sql"),
    ),
    (
        2,
        "checkpoints",
        include_str!("../../migrations/postgres/0002_checkpoints.sql"),
    ),
    (
        3,
        "grant event time",
        include_str!("../../migrations/postgres/0003_grant_event_time.sql"),
    ),
    (
        4,
        "pending revocations and member role removals",
        include_str!(
            "../../migrations/postgres/0004_pending_revocations_and_member_role_removals.sql"
        ),
    ),
    (
        5,
        "reader leases",
        include_str!("../../migrations/postgres/0005_leases.sql"),
    ),
    (
        6,
        "pending grants",
        include_str!("../../migrations/postgres/0006_pending_grants.sql"),
    ),
];

/// Migrations compiled into the binary (no folder needed at run time, no `macros` feature).
#[derive(Debug)]
pub(super) struct Embedded(pub(super) &'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
