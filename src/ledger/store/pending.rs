//! The ledger's statements about grants journaled before their role write (`pending_grants`,
//! migration 0006): the journal itself, its settlement at the user's next read, and the record
//! that ends it (one transaction for all three, see [`GrantWrites`]).

use super::*;

/// The grant statements of one transaction, in this order: `settle` (each user's pending
/// grants, after a read of the roles the user holds: a role held is recorded as this service's
/// grant, the others dropped), `journal` (grants about to be written, pending until recorded),
/// `record` (grants the Management API accepted: recorded, their pending rows gone, their users'
/// failures cleared).
#[derive(Debug, Default, Clone)]
pub struct GrantWrites {
    /// (user id, ids of the tenant roles a read just found held).
    pub settle: Vec<(String, Vec<String>)>,
    pub journal: Vec<Grant>,
    pub record: Vec<Grant>,
}

impl GrantWrites {
    pub fn is_empty(&self) -> bool {
        self.settle.is_empty() && self.journal.is_empty() && self.record.is_empty()
    }

    /// Records `grants` (nothing settled or journaled).
    pub fn record(grants: &[Grant]) -> GrantWrites {
        GrantWrites {
            record: grants.to_vec(),
            ..GrantWrites::default()
        }
    }
}

/// The columns of `grants` and `pending_grants` a grant is written in and read from.
macro_rules! grant_columns {
    () => {
        "user_id, role_id, role_name, organization_id, rule, trigger_name, event_id, policy_fingerprint, instance, at_ms, event_at_ms"
    };
}
const GRANT_COLUMNS: &str = grant_columns!();

/// Binds one grant's values in [`GRANT_COLUMNS`]' order (a macro: each `with_pool!` arm has its
/// own database type).
macro_rules! push_grant {
    ($row:ident, $g:ident) => {
        $row.push_bind($g.user_id.as_str())
            .push_bind($g.role_id.as_str())
            .push_bind($g.role_name.as_str())
            .push_bind(org_key(&$g.organization_id))
            .push_bind($g.rule.as_str())
            .push_bind($g.trigger.as_str())
            .push_bind($g.event_id.as_str())
            .push_bind($g.policy_fingerprint.as_str())
            .push_bind($g.instance.as_str())
            .push_bind($g.at)
            .push_bind($g.event_at)
    };
}

impl Backend {
    /// Runs `writes` in one transaction; returns how many pending grants were settled as this
    /// service's grants (their role found held: the write before a crash had happened).
    pub(in crate::ledger) async fn write_grants(
        &self,
        writes: &GrantWrites,
    ) -> Result<u64, LedgerError> {
        if writes.is_empty() {
            return Ok(0);
        }
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            let mut completed = 0;
            // Settle: a pending grant whose role the read found held is this service's grant
            // (its write was accepted before a crash); the others never happened or were undone.
            let held: Vec<(&str, &str)> = writes
                .settle
                .iter()
                .flat_map(|(user, roles)| roles.iter().map(move |r| (user.as_str(), r.as_str())))
                .collect();
            for chunk in held.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Db>::new(format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) SELECT {GRANT_COLUMNS} FROM pending_grants WHERE organization_id = '' AND (user_id, role_id) IN (VALUES "
                ));
                let mut list = q.separated(", ");
                for (user, role) in chunk {
                    list.push("(");
                    list.push_bind_unseparated(*user);
                    list.push_unseparated(", ");
                    list.push_bind_unseparated(*role);
                    list.push_unseparated(")");
                }
                q.push(") ON CONFLICT DO NOTHING");
                completed += q
                    .build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("complete pending grants"))?
                    .rows_affected();
            }
            let settled: Vec<&str> = writes.settle.iter().map(|(u, _)| u.as_str()).collect();
            for chunk in settled.chunks(ROWS_PER_STATEMENT * 10) {
                let mut q = QueryBuilder::<Db>::new(
                    "DELETE FROM pending_grants WHERE organization_id = '' AND user_id IN (",
                );
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("settle pending grants"))?;
            }
            // Journal: the latest write about to happen is the one a later read settles.
            for chunk in writes.journal.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Db>::new(format!(
                    "INSERT INTO pending_grants ({GRANT_COLUMNS}) "
                ));
                q.push_values(chunk, |mut row, g| {
                    push_grant!(row, g);
                });
                q.push(
                    " ON CONFLICT (user_id, role_id, organization_id) DO UPDATE SET role_name = excluded.role_name, rule = excluded.rule, trigger_name = excluded.trigger_name, event_id = excluded.event_id, policy_fingerprint = excluded.policy_fingerprint, instance = excluded.instance, at_ms = excluded.at_ms, event_at_ms = excluded.event_at_ms",
                );
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("journal grants"))?;
            }
            // Record: the grant, its pending row gone, its user's failure cleared.
            for chunk in writes.record.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Db>::new(format!("INSERT INTO grants ({GRANT_COLUMNS}) "));
                q.push_values(chunk, |mut row, g| {
                    push_grant!(row, g);
                });
                // A grant already standing stays as first written.
                q.push(" ON CONFLICT DO NOTHING");
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("record grants"))?;
                let mut q = QueryBuilder::<Db>::new(
                    "DELETE FROM pending_grants WHERE (user_id, role_id, organization_id) IN (VALUES ",
                );
                let mut list = q.separated(", ");
                for g in chunk {
                    list.push("(");
                    list.push_bind_unseparated(g.user_id.as_str());
                    list.push_unseparated(", ");
                    list.push_bind_unseparated(g.role_id.as_str());
                    list.push_unseparated(", ");
                    list.push_bind_unseparated(org_key(&g.organization_id));
                    list.push_unseparated(")");
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("end pending grants"))?;
            }
            // A grant is a success: the users' standing failures end with it.
            let mut users: Vec<&str> = writes.record.iter().map(|g| g.user_id.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            for chunk in users.chunks(ROWS_PER_STATEMENT * 10) {
                let mut q = QueryBuilder::<Db>::new("DELETE FROM failures WHERE user_id IN (");
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("clear failures"))?;
            }
            tx.commit().await.map_err(self.unreachable("commit grants"))?;
            Ok(completed)
        })
    }

    /// The user's pending grants (journaled, not recorded), oldest first.
    pub(in crate::ledger) async fn pending_grants(
        &self,
        user_id: &str,
    ) -> Result<Vec<Grant>, LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM pending_grants WHERE user_id = $1 ORDER BY at_ms, role_id"
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("read the user's pending grants"))?
            .iter()
            .map(grant_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a pending grant"))
        })
    }
}
