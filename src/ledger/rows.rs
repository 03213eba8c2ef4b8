//! Rows read back from the ledger's tables into its records.

use sqlx::Row;

use super::store::org_value;
use super::{Grant, Revocation};

pub(super) fn revocation_from_row<R: Row>(row: &R) -> Result<Revocation, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(Revocation {
        user_id: row.try_get("user_id")?,
        role_id: row.try_get("role_id")?,
        role_name: row.try_get("role_name")?,
        organization_id: org_value(row.try_get("organization_id")?),
        by: row.try_get("revoked_by")?,
        reason: row.try_get("reason")?,
        at: row.try_get("at_ms")?,
    })
}

/// A member role removal as a revocation by an admin (`reason` names the event).
pub(super) fn removal_from_row<R: Row>(row: &R) -> Result<Revocation, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let event_id: String = row.try_get("event_id")?;
    Ok(Revocation {
        user_id: row.try_get("user_id")?,
        role_id: row.try_get("role_id")?,
        role_name: row.try_get("role_name")?,
        organization_id: org_value(row.try_get("organization_id")?),
        by: MEMBER_ROLE_REMOVED_BY.to_owned(),
        reason: format!("organization.member.role.deleted, event {event_id}"),
        at: row.try_get("at_ms")?,
    })
}

/// Who a member role removal is by, as `explain` shows it.
pub(super) const MEMBER_ROLE_REMOVED_BY: &str = "an admin";

pub(super) fn grant_from_row<R: Row>(row: &R) -> Result<Grant, sqlx::Error>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(Grant {
        user_id: row.try_get("user_id")?,
        role_id: row.try_get("role_id")?,
        role_name: row.try_get("role_name")?,
        organization_id: org_value(row.try_get("organization_id")?),
        rule: row.try_get("rule")?,
        trigger: row.try_get("trigger_name")?,
        event_id: row.try_get("event_id")?,
        policy_fingerprint: row.try_get("policy_fingerprint")?,
        instance: row.try_get("instance")?,
        at: row.try_get("at_ms")?,
        event_at: row.try_get("event_at_ms")?,
    })
}
