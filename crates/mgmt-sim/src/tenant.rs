//! The simulated tenant's data (roles, users, and the roles each user holds) and the rules the
//! Management API applies to it: set semantics, at most 50 roles per user, all-or-nothing bulk
//! assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use axum::http::StatusCode;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::config::{Seed, SeedApplication, SeedRole, SeedUser};
use super::error::ApiError;
use super::wire::rfc3339_millis;

/// Auth0's entity limit: roles per user.
pub(crate) const MAX_ROLES_PER_USER: usize = 50;

/// Providers whose identities Auth0 marks `isSocial: true`.
const SOCIAL_PROVIDERS: &[&str] = &[
    "google-oauth2",
    "facebook",
    "github",
    "twitter",
    "linkedin",
    "apple",
    "windowslive",
    "amazon",
    "bitbucket",
    "dropbox",
    "gitlab",
    "discord",
    "slack",
];

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Role {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// An organization-owned role's organization (`type: "organization"`).
    pub owner_id: Option<String>,
}

impl Role {
    pub(crate) fn to_json(&self) -> Value {
        let mut role = Map::new();
        role.insert("id".into(), json!(self.id));
        role.insert("name".into(), json!(self.name));
        if let Some(description) = &self.description {
            role.insert("description".into(), json!(description));
        }
        if let Some(owner) = &self.owner_id {
            role.insert("type".into(), json!("organization"));
            role.insert("owner_id".into(), json!(owner));
        }
        Value::Object(role)
    }
}

#[derive(Clone, Debug)]
struct User {
    profile: SeedUser,
    created_at: String,
    role_ids: BTreeSet<String>,
    /// Roles held through the user's groups (never written by the API: a group gives them).
    group_role_ids: BTreeSet<String>,
}

impl User {
    fn new(profile: SeedUser) -> Self {
        User {
            created_at: profile
                .created_at
                .clone()
                .unwrap_or_else(|| rfc3339_millis(SystemTime::now())),
            profile,
            role_ids: BTreeSet::new(),
            group_role_ids: BTreeSet::new(),
        }
    }

    /// The user object of `GET /api/v2/users/{id}` for a user who never logged in.
    fn to_json(&self) -> Value {
        let p = &self.profile;
        let (provider, identity_id) = match p.user_id.split_once('|') {
            Some((provider, rest)) => (provider, rest),
            None => ("auth0", p.user_id.as_str()),
        };
        let connection = p.connection.clone().unwrap_or_else(|| match provider {
            "auth0" => "Username-Password-Authentication".to_owned(),
            other => other.to_owned(),
        });
        let mut user = Map::new();
        user.insert("created_at".into(), json!(self.created_at));
        if let Some(email) = &p.email {
            user.insert("email".into(), json!(email));
        }
        if let Some(verified) = p.email_verified {
            user.insert("email_verified".into(), json!(verified));
        }
        user.insert(
            "identities".into(),
            json!([{
                "connection": connection,
                "user_id": identity_id,
                "provider": provider,
                "isSocial": SOCIAL_PROVIDERS.contains(&provider),
            }]),
        );
        if let Some(email) = &p.email {
            user.insert("name".into(), json!(email));
        }
        user.insert("updated_at".into(), json!(self.created_at));
        user.insert("user_id".into(), json!(p.user_id));
        match &p.app_metadata {
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(Value::Null) | None => {}
            Some(meta) => {
                user.insert("app_metadata".into(), meta.clone());
            }
        }
        Value::Object(user)
    }
}

/// How many (user, role) pairs an assignment added and how many were already held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assigned {
    pub added: u64,
    pub duplicates: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Tenant {
    roles: HashMap<String, Role>,
    users: HashMap<String, User>,
    applications: HashMap<String, SeedApplication>,
    /// Roles an admin gives a user by hand just after the next read of the user's roles
    /// answers (a grant racing the service's read-then-write).
    grants_after_read: HashMap<String, Vec<String>>,
}

impl Tenant {
    pub(crate) fn from_seed(seed: Seed) -> Self {
        let mut tenant = Tenant::default();
        for app in seed.applications {
            tenant.applications.insert(app.client_id.clone(), app);
        }
        for role in seed.roles {
            tenant.add_role(role);
        }
        for user in seed.users {
            let held: BTreeSet<String> = user
                .roles
                .iter()
                .filter_map(|name| tenant.role_id(name))
                .collect();
            let (user_id, group_roles) = (user.user_id.clone(), user.group_roles.clone());
            tenant.upsert_user(user);
            if let Some(stored) = tenant.users.get_mut(&user_id) {
                stored.role_ids.extend(held);
            }
            tenant.grant_through_group(&user_id, &group_roles);
        }
        tenant
    }

    /// Adds a role and returns its id. A role without an id whose name already exists is not
    /// duplicated: the existing id is returned. A role with an id replaces that id's role.
    pub(crate) fn add_role(&mut self, role: SeedRole) -> String {
        let id = match role.id {
            Some(id) => id,
            None => {
                let existing = self
                    .roles
                    .values()
                    .filter(|r| r.name == role.name && r.owner_id == role.owner_id)
                    .map(|r| r.id.clone())
                    .min();
                if let Some(existing) = existing {
                    return existing;
                }
                self.fresh_role_id()
            }
        };
        self.roles.insert(
            id.clone(),
            Role {
                id: id.clone(),
                name: role.name,
                description: role.description,
                owner_id: role.owner_id,
            },
        );
        id
    }

    fn fresh_role_id(&self) -> String {
        loop {
            let suffix: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(16)
                .map(char::from)
                .collect();
            let id = format!("rol_{suffix}");
            if !self.roles.contains_key(&id) {
                return id;
            }
        }
    }

    /// The id of the role with exactly this name (lowest id if several share it).
    /// `GET /api/v2/clients/{id}` as Auth0 answers it, reduced to `fields` when given
    /// (`include_fields=true`).
    pub(crate) fn client_json(
        &self,
        client_id: &str,
        fields: Option<&[&str]>,
    ) -> Result<Value, ApiError> {
        let app = self
            .applications
            .get(client_id)
            .ok_or_else(ApiError::client_not_found)?;
        let mut client = Map::new();
        client.insert("client_id".into(), json!(app.client_id));
        client.insert("name".into(), json!(app.name));
        client.insert("client_metadata".into(), json!(app.client_metadata));
        client.insert("app_type".into(), json!("spa"));
        if let Some(fields) = fields {
            client.retain(|k, _| fields.contains(&k.as_str()));
        }
        Ok(Value::Object(client))
    }

    /// The name of the role with this id.
    pub(crate) fn role_name(&self, id: &str) -> Option<String> {
        self.roles.get(id).map(|r| r.name.clone())
    }

    pub(crate) fn role_id(&self, name: &str) -> Option<String> {
        self.roles
            .values()
            .filter(|r| r.name == name && r.owner_id.is_none())
            .map(|r| r.id.clone())
            .min()
    }

    /// Creates a user, or replaces an existing user's profile (keeping its roles and
    /// `created_at`).
    /// Arms a grant by hand of `roles` to `user_id` right after its roles are next read.
    pub(crate) fn grant_after_next_read(&mut self, user_id: &str, roles: Vec<String>) {
        self.grants_after_read.insert(user_id.to_owned(), roles);
    }

    /// Fires the grant armed for `user_id`, if any (after a read of its roles answered).
    pub(crate) fn fire_grant_after_read(&mut self, user_id: &str) {
        if let Some(roles) = self.grants_after_read.remove(user_id) {
            self.grant_named(user_id, &roles);
        }
    }

    pub(crate) fn upsert_user(&mut self, profile: SeedUser) {
        match self.users.get_mut(&profile.user_id) {
            Some(user) => user.profile = profile,
            None => {
                self.users
                    .insert(profile.user_id.clone(), User::new(profile));
            }
        }
    }

    pub(crate) fn remove_user(&mut self, user_id: &str) -> bool {
        self.users.remove(user_id).is_some()
    }

    /// Deletes the role named `name` and every user's membership of it, as Auth0 does.
    pub(crate) fn remove_role(&mut self, name: &str) -> bool {
        let Some(id) = self.role_id(name) else {
            return false;
        };
        self.roles.remove(&id);
        for user in self.users.values_mut() {
            user.role_ids.remove(&id);
        }
        true
    }

    fn user_mut(&mut self, user_id: &str, accept_any: bool) -> Result<&mut User, ApiError> {
        if accept_any && !self.users.contains_key(user_id) {
            tracing::debug!(user_id, "sim: auto-creating unknown user");
            self.upsert_user(SeedUser::new(user_id));
        }
        self.users
            .get_mut(user_id)
            .ok_or_else(ApiError::user_not_found)
    }

    pub(crate) fn user_json(&mut self, user_id: &str, accept_any: bool) -> Result<Value, ApiError> {
        Ok(self.user_mut(user_id, accept_any)?.to_json())
    }

    fn sorted(mut roles: Vec<Role>) -> Vec<Role> {
        roles.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        roles
    }

    /// Roles whose name contains `filter`, ignoring case (all roles without a filter), by name.
    pub(crate) fn roles_matching(&self, filter: Option<&str>) -> Vec<Role> {
        let needle = filter.map(str::to_lowercase);
        Self::sorted(
            self.roles
                .values()
                .filter(|r| {
                    needle
                        .as_deref()
                        .is_none_or(|n| r.name.to_lowercase().contains(n))
                })
                .cloned()
                .collect(),
        )
    }

    /// A user's roles, sorted by name.
    pub(crate) fn roles_of(
        &mut self,
        user_id: &str,
        accept_any: bool,
    ) -> Result<Vec<Role>, ApiError> {
        let ids = self.user_mut(user_id, accept_any)?.role_ids.clone();
        Ok(self.roles_by_ids(&ids))
    }

    /// `GET /users/{id}/effective-roles`: the direct roles and those held through a group, each
    /// with its sources (`direct`, `groups`), by role id (the order the `from` cursor walks).
    pub(crate) fn effective_roles_of(
        &mut self,
        user_id: &str,
        accept_any: bool,
    ) -> Result<Vec<(Role, Vec<&'static str>)>, ApiError> {
        let user = self.user_mut(user_id, accept_any)?;
        let (direct, groups) = (user.role_ids.clone(), user.group_role_ids.clone());
        let mut roles: Vec<(Role, Vec<&'static str>)> = direct
            .union(&groups)
            .filter_map(|id| self.roles.get(id))
            .map(|role| {
                let mut sources = Vec::new();
                if direct.contains(&role.id) {
                    sources.push("direct");
                }
                if groups.contains(&role.id) {
                    sources.push("groups");
                }
                (role.clone(), sources)
            })
            .collect();
        roles.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(roles)
    }

    fn roles_by_ids(&self, ids: &BTreeSet<String>) -> Vec<Role> {
        Self::sorted(
            ids.iter()
                .filter_map(|id| self.roles.get(id))
                .cloned()
                .collect(),
        )
    }

    /// Sorted role names of a user (empty for an unknown user).
    pub(crate) fn role_names_of(&self, user_id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .users
            .get(user_id)
            .map(|u| self.roles_by_ids(&u.role_ids))
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    /// Every user holding at least one role, with their sorted role names.
    pub(crate) fn users_with_roles(&self) -> BTreeMap<String, Vec<String>> {
        self.users
            .iter()
            .filter(|(_, u)| !u.role_ids.is_empty())
            .map(|(id, _)| (id.clone(), self.role_names_of(id)))
            .collect()
    }

    /// `POST /users/{id}/roles`: all roles or none.
    pub(crate) fn assign_roles_to_user(
        &mut self,
        user_id: &str,
        role_ids: &[String],
        accept_any: bool,
        unknown_role_status: StatusCode,
    ) -> Result<Assigned, ApiError> {
        if !self.users.contains_key(user_id) && !accept_any {
            return Err(ApiError::user_not_found());
        }
        if let Some(unknown) = role_ids.iter().find(|id| !self.roles.contains_key(*id)) {
            tracing::debug!(user_id, role_id = %unknown, "sim: unknown role id");
            return Err(ApiError::role_not_found(unknown_role_status));
        }
        let user = self.user_mut(user_id, accept_any)?;
        let requested: BTreeSet<&String> = role_ids.iter().collect();
        let new: Vec<&String> = requested
            .iter()
            .copied()
            .filter(|id| !user.role_ids.contains(*id))
            .collect();
        if user.role_ids.len() + new.len() > MAX_ROLES_PER_USER {
            return Err(too_many_roles());
        }
        let outcome = Assigned {
            added: new.len() as u64,
            duplicates: (requested.len() - new.len()) as u64,
        };
        user.role_ids.extend(new.into_iter().cloned());
        Ok(outcome)
    }

    /// `DELETE /users/{id}/roles`: removing a role the user does not hold is not an error.
    pub(crate) fn remove_roles_from_user(
        &mut self,
        user_id: &str,
        role_ids: &[String],
        accept_any: bool,
    ) -> Result<(), ApiError> {
        let user = self.user_mut(user_id, accept_any)?;
        for id in role_ids {
            user.role_ids.remove(id);
        }
        Ok(())
    }

    /// `POST /roles/{id}/users`: one unknown user (or one user at the role limit) fails the
    /// whole call and assigns nothing.
    pub(crate) fn assign_role_to_users(
        &mut self,
        role_id: &str,
        user_ids: &[String],
        accept_any: bool,
    ) -> Result<Assigned, ApiError> {
        if !self.roles.contains_key(role_id) {
            return Err(ApiError::role_not_found(StatusCode::NOT_FOUND));
        }
        let requested: BTreeSet<&String> = user_ids.iter().collect();
        if !accept_any && requested.iter().any(|id| !self.users.contains_key(*id)) {
            return Err(ApiError::users_not_found());
        }
        let at_limit = requested.iter().any(|id| {
            self.users.get(*id).is_some_and(|u| {
                !u.role_ids.contains(role_id) && u.role_ids.len() >= MAX_ROLES_PER_USER
            })
        });
        if at_limit {
            return Err(too_many_roles());
        }
        let mut outcome = Assigned::default();
        for id in requested {
            let user = self.user_mut(id, accept_any)?;
            if user.role_ids.insert(role_id.to_owned()) {
                outcome.added += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        Ok(outcome)
    }
}

/// What `reconcile` needs of the tenant: members of a role, every user, the export's lines.
impl Tenant {
    /// The ids of the users holding `role_id`, sorted; `None` for an unknown role.
    pub(crate) fn member_ids(&self, role_id: &str) -> Option<Vec<String>> {
        if !self.roles.contains_key(role_id) {
            return None;
        }
        let mut ids: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.role_ids.contains(role_id))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// Every user id, sorted.
    pub(crate) fn user_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.users.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// A member as `GET /roles/{id}/users` lists it (`user_id`, `email`, `name`, `picture`);
    /// `None` once the user was deleted.
    pub(crate) fn member_json(&self, user_id: &str) -> Option<Value> {
        let user = self.users.get(user_id)?;
        let mut member = Map::new();
        member.insert("user_id".into(), json!(user_id));
        if let Some(email) = &user.profile.email {
            member.insert("email".into(), json!(email));
            member.insert("name".into(), json!(email));
        }
        member.insert(
            "picture".into(),
            json!("https://cdn.auth0.com/avatars/default.png"),
        );
        Some(Value::Object(member))
    }

    /// The full user object (`GET /api/v2/users/{id}`) of an existing user, for listings and
    /// exports; `None` for an unknown user.
    pub(crate) fn existing_user_json(&self, user_id: &str) -> Option<Value> {
        self.users.get(user_id).map(User::to_json)
    }

    /// Gives an existing user the roles named `names` (unknown names are ignored), as a seed's
    /// `roles` does.
    /// The user holds these roles through a group (by name; unknown names are ignored).
    pub(crate) fn grant_through_group(&mut self, user_id: &str, names: &[String]) {
        let held: Vec<String> = names.iter().filter_map(|n| self.role_id(n)).collect();
        if let Some(user) = self.users.get_mut(user_id) {
            user.group_role_ids.extend(held);
        }
    }

    pub(crate) fn grant_named(&mut self, user_id: &str, names: &[String]) {
        let held: Vec<String> = names.iter().filter_map(|n| self.role_id(n)).collect();
        if let Some(user) = self.users.get_mut(user_id) {
            user.role_ids.extend(held);
        }
    }
}

fn too_many_roles() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("A user cannot have more than {MAX_ROLES_PER_USER} roles."),
    )
    .with_code("too_many_roles")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant::from_seed(Seed {
            roles: vec![
                SeedRole {
                    id: Some("rol_member".into()),
                    name: "member".into(),
                    description: None,
                    owner_id: None,
                },
                SeedRole::named("Admin"),
            ],
            users: vec![SeedUser::new("auth0|a"), SeedUser::new("auth0|b")],
            ..Seed::default()
        })
    }

    #[test]
    fn assignment_is_a_set() {
        let mut t = tenant();
        let ids = vec!["rol_member".to_owned(), "rol_member".to_owned()];
        let first = t.assign_roles_to_user("auth0|a", &ids, false, StatusCode::NOT_FOUND);
        assert_eq!(
            first,
            Ok(Assigned {
                added: 1,
                duplicates: 0
            })
        );
        let again = t.assign_roles_to_user("auth0|a", &ids, false, StatusCode::NOT_FOUND);
        assert_eq!(
            again,
            Ok(Assigned {
                added: 0,
                duplicates: 1
            })
        );
        assert_eq!(t.role_names_of("auth0|a"), vec!["member".to_owned()]);
    }

    #[test]
    fn fifty_roles_per_user() {
        let mut t = tenant();
        let ids: Vec<String> = (0..51)
            .map(|i| t.add_role(SeedRole::named(format!("r{i:02}"))))
            .collect();
        let err = t.assign_roles_to_user("auth0|a", &ids, false, StatusCode::NOT_FOUND);
        assert_eq!(err.map_err(|e| e.status), Err(StatusCode::BAD_REQUEST));
        assert!(t.role_names_of("auth0|a").is_empty());
        assert!(t
            .assign_roles_to_user("auth0|a", &ids[..50], false, StatusCode::NOT_FOUND)
            .is_ok());
        let bulk = t.assign_role_to_users(&ids[50], &["auth0|a".to_owned()], false);
        assert_eq!(bulk.map_err(|e| e.status), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn generated_role_ids_look_real() {
        let t = tenant();
        let id = t.role_id("Admin").unwrap_or_default();
        assert!(id.starts_with("rol_") && id.len() == 20, "{id}");
        assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn user_json_shape() {
        let mut t = tenant();
        t.upsert_user(SeedUser {
            user_id: "samlp|corp/alice".into(),
            email: Some("alice@corp.example".into()),
            email_verified: Some(true),
            connection: Some("corp".into()),
            app_metadata: Some(json!({})),
            roles: Vec::new(),
            group_roles: Vec::new(),
            created_at: None,
        });
        let user = t.user_json("samlp|corp/alice", false).unwrap_or_default();
        assert_eq!(user["identities"][0]["provider"], "samlp");
        assert_eq!(user["identities"][0]["user_id"], "corp/alice");
        assert_eq!(user["identities"][0]["connection"], "corp");
        assert_eq!(user["identities"][0]["isSocial"], false);
        assert!(user.get("app_metadata").is_none());
        assert!(user.get("logins_count").is_none());
    }
}
