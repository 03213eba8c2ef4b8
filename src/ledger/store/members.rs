//! The ledger's statements about organization memberships: an admin's removal of a member
//! role (never given back), and a member's departure (its grants end).

use super::*;

impl Backend {
    /// Records that an admin removed a member role (the latest event of it counts).
    pub(in crate::ledger) async fn record_member_role_removal(
        &self,
        removal: &Revocation,
        event_id: &str,
    ) -> Result<(), LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(
                "INSERT INTO member_role_removals (user_id, role_id, role_name, organization_id, event_id, at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, organization_id, role_id) DO UPDATE SET role_name = excluded.role_name, event_id = excluded.event_id, at_ms = excluded.at_ms",
            )
            .bind(removal.user_id.as_str())
            .bind(removal.role_id.as_str())
            .bind(removal.role_name.as_str())
            .bind(org_key(&removal.organization_id))
            .bind(event_id)
            .bind(removal.at)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.unreachable("record a member role removal"))
        })
    }

    /// The ids of the member roles an admin removed from `user_id` in `organization_id`.
    pub(in crate::ledger) async fn removed_member_roles(
        &self,
        user_id: &str,
        organization_id: &str,
    ) -> Result<Vec<String>, LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(
                "SELECT role_id FROM member_role_removals WHERE user_id = $1 AND organization_id = $2",
            )
            .bind(user_id)
            .bind(organization_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("look up member role removals"))?
            .iter()
            .map(|row| row.try_get::<String, _>("role_id"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a member role removal"))
        })
    }

    /// The member roles an admin removed from these users: user → (organization, role id).
    pub(in crate::ledger) async fn member_role_removals_of(
        &self,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(String, String)>>, LedgerError> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for chunk in user_ids.chunks(ROWS_PER_STATEMENT * 10) {
            if chunk.is_empty() {
                continue;
            }
            let rows = with_pool!(self, pool, Db => {
                let mut q = QueryBuilder::<Db>::new(
                    "SELECT user_id, organization_id, role_id FROM member_role_removals WHERE user_id IN (",
                );
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .fetch_all(pool)
                    .await
                    .map_err(self.unreachable("look up member role removals"))?
                    .iter()
                    .map(|row| {
                        Ok((
                            row.try_get::<String, _>("user_id")?,
                            row.try_get::<String, _>("organization_id")?,
                            row.try_get::<String, _>("role_id")?,
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(self.unreachable("read a member role removal"))?
            });
            for (user, organization, role) in rows {
                out.entry(user).or_default().push((organization, role));
            }
        }
        Ok(out)
    }

    /// The member left `organization_id` at `left_at`: its standing grants there from before
    /// then end (recorded as revocations with `by` and `reason`) and the removals an admin made
    /// there are forgotten, in one transaction. Returns the grants ended.
    pub(in crate::ledger) async fn end_membership(
        &self,
        user_id: &str,
        organization_id: &str,
        left_at: i64,
        by: &str,
        reason: &str,
    ) -> Result<u64, LedgerError> {
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            let ended = sqlx::query::<Db>(
                "SELECT role_id, role_name FROM grants WHERE user_id = $1 AND organization_id = $2 AND revoked = 0 AND COALESCE(event_at_ms, at_ms) <= $3",
            )
            .bind(user_id)
            .bind(organization_id)
            .bind(left_at)
            .fetch_all(&mut *tx)
            .await
            .map_err(self.unreachable("look up a member's grants"))?
            .iter()
            .map(|row| Ok((row.try_get::<String, _>("role_id")?, row.try_get::<String, _>("role_name")?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
            .map_err(self.unreachable("read a member's grant"))?;
            let at = crate::ledger::now_millis();
            for (role_id, role_name) in &ended {
                sqlx::query::<Db>(
                    "UPDATE grants SET revoked = 1 WHERE user_id = $1 AND role_id = $2 AND organization_id = $3 AND revoked = 0",
                )
                .bind(user_id)
                .bind(role_id.as_str())
                .bind(organization_id)
                .execute(&mut *tx)
                .await
                .map_err(self.unreachable("end a member's grant"))?;
                sqlx::query::<Db>(
                    "INSERT INTO revocations (user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(user_id)
                .bind(role_id.as_str())
                .bind(role_name.as_str())
                .bind(organization_id)
                .bind(by)
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(self.unreachable("record a member's revocation"))?;
            }
            sqlx::query::<Db>(
                "DELETE FROM member_role_removals WHERE user_id = $1 AND organization_id = $2 AND at_ms <= $3",
            )
            .bind(user_id)
            .bind(organization_id)
            .bind(left_at.max(at))
            .execute(&mut *tx)
            .await
            .map_err(self.unreachable("forget a member's role removals"))?;
            tx.commit().await.map_err(self.unreachable("commit a member's departure"))?;
            Ok(ended.len() as u64)
        })
    }
}
