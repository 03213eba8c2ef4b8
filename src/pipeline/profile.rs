//! Profile reads: what the undecided conditions of a rule need of the user (`GET /users/{id}`,
//! its roles) and of the application (`client_metadata`), and only that.

use crate::event::LogEvent;
use crate::mgmt::MgmtClient;
use crate::policy::{Profile, Undecided, ASSIGN_CLIENT_METADATA};

use super::*;

impl Pipeline {
    /// Reads what the undecided conditions need, and only that: the user (`GET /users/{id}`)
    /// unless the event carries the profile or only `has_roles` is undecided; the user's roles
    /// (`GET /users/{id}/roles`, or `effective-roles` with `[auth0] count_group_roles`) for
    /// `has_roles`, unless this service gave the user roles
    /// recently (those count, and prove the answer).
    pub(super) async fn read_profile(
        &self,
        client: &MgmtClient,
        event: &LogEvent,
        undecided: &[Undecided],
    ) -> Result<Profile, crate::mgmt::MgmtError> {
        let user = event.user().unwrap_or_default();
        let needs_roles = undecided.iter().any(|u| u.key == "has_roles");
        let needs_client = undecided.iter().any(|u| u.key == ASSIGN_CLIENT_METADATA);
        let needs_user = undecided
            .iter()
            .any(|u| u.key != "has_roles" && u.key != ASSIGN_CLIENT_METADATA);
        let mut profile = match (&event.profile, needs_user) {
            (Some(profile), _) => (**profile).clone(),
            (None, true) => client.get_user(user).await?,
            (None, false) => Profile::default(),
        };
        if needs_roles {
            let given = self.processor.dedup().given_roles(user);
            let count_group_roles = self
                .assigner
                .as_ref()
                .is_some_and(|a| a.count_group_roles());
            profile.roles = Some(if given.is_empty() {
                client.get_held_role_ids(user, count_group_roles).await?
            } else {
                given
            });
        }
        if needs_client {
            profile.client_metadata = Some(self.client_roles(client, event).await?);
        }
        Ok(profile)
    }

    /// The event application's `client_metadata`, reduced to the keys `assign_client_metadata`
    /// rules name whose value is a role of the tenant. A name the tenant lacks adds nothing:
    /// it is counted, and logged once a day per application and name.
    pub(super) async fn client_roles(
        &self,
        client: &MgmtClient,
        event: &LogEvent,
    ) -> Result<std::collections::BTreeMap<String, String>, crate::mgmt::MgmtError> {
        let mut kept = std::collections::BTreeMap::new();
        let (Some(app), Some(assigner)) = (
            event.client_id.as_deref().filter(|c| !c.is_empty()),
            &self.assigner,
        ) else {
            return Ok(kept);
        };
        let metadata = self.applications.metadata(client, app).await?;
        let keys: std::collections::BTreeSet<&str> = self
            .processor
            .policy()
            .rules()
            .iter()
            .filter_map(|r| r.assign_client_metadata.as_deref())
            .collect();
        for key in keys {
            let Some(name) = metadata
                .get(key)
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if assigner.directory().lookup(client, name).await?.is_some() {
                kept.insert(key.to_owned(), name.to_owned());
            } else {
                self.metrics.client_metadata_unknown_roles.inc();
                if self.applications.first_unknown(app, name) {
                    tracing::warn!(
                        client_id = app,
                        client_name = event.client_name.as_deref().unwrap_or("-"),
                        key,
                        role = name,
                        "the application's client_metadata names a role the tenant does not have: nothing added for it (the event's other roles are still assigned)"
                    );
                }
            }
        }
        Ok(kept)
    }
}
