//! Auth0 Event Streams CloudEvents (`user.*`, `organization.member.*`): the lenient shapes of
//! their `data.object` and the `LogEvent` each becomes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::lenient;
use super::raw::RawLog;
use super::*;

/// The user of a CloudEvent's `data.object` (lenient: fields of another type read as absent).
#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudUser {
    #[serde(deserialize_with = "lenient")]
    user_id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    email: Option<String>,
    #[serde(deserialize_with = "lenient")]
    email_verified: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    identities: Vec<CloudIdentity>,
    #[serde(deserialize_with = "lenient")]
    app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(deserialize_with = "lenient")]
    created_at: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudIdentity {
    #[serde(deserialize_with = "lenient")]
    connection: Option<String>,
    #[serde(deserialize_with = "lenient")]
    provider: Option<String>,
    #[serde(rename = "isSocial", deserialize_with = "lenient")]
    is_social: Option<bool>,
}

/// The `data.object` of an `organization.member.*` CloudEvent: `{organization: {id, name},
/// user: {user_id, ...}}` (lenient: fields of another type read as absent).
#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudMembership {
    #[serde(deserialize_with = "lenient")]
    organization: CloudOrganization,
    #[serde(deserialize_with = "lenient")]
    user: CloudMember,
    /// `organization.member.role.*`: the role.
    #[serde(deserialize_with = "lenient")]
    role: CloudOrganization,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudOrganization {
    #[serde(deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudMember {
    #[serde(deserialize_with = "lenient")]
    user_id: Option<String>,
}

/// An `organization.member.added` (or `.deleted`, ...) CloudEvent: the member's user id and
/// the organization, no profile (the policy reads `GET /api/v2/users/{id}` when a rule needs it).
fn membership_event(
    kind: String,
    id: Option<String>,
    time: Option<String>,
    object: Option<&RawValue>,
) -> Decoded {
    let Some(raw) = object else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object"),
            id,
        ));
    };
    let membership = match serde_json::from_str::<CloudMembership>(raw.get()) {
        Ok(membership) => membership,
        Err(err) => {
            return Err(DecodeError::new(
                format!("CloudEvent {kind}: data.object is not a membership: {err}"),
                id,
            ))
        }
    };
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let Some(user_id) = present(membership.user.user_id) else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object.user.user_id"),
            id,
        ));
    };
    let Some(organization_id) = present(membership.organization.id) else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object.organization.id"),
            id,
        ));
    };
    let member_role = present(membership.role.id).map(|id| MemberRole {
        id,
        name: present(membership.role.name),
    });
    Ok(LogEvent {
        log_id: id,
        date: time,
        user_id: Some(user_id),
        organization_id: Some(organization_id),
        organization_name: present(membership.organization.name),
        event_type: kind,
        member_role,
        ..LogEvent::default()
    })
}

impl RawLog<'_> {
    /// An Auth0 Event Streams CloudEvent: `user.created`, `user.updated`, `user.deleted` (or
    /// `com.auth0.user.*`), its profile in `data.object`.
    pub(super) fn into_cloud_event(self) -> Decoded {
        let id = self.id.map(Cow::into_owned);
        let Some(kind) = self.event_type.filter(|t| !t.is_empty()) else {
            return Err(DecodeError::new("CloudEvent without a type", id));
        };
        let kind = kind.strip_prefix("com.auth0.").unwrap_or(&kind).to_owned();
        let object = self.data.0.and_then(|data| data.object);
        if self.purpose.as_deref() == Some("test") {
            // Decided here, whatever its object holds: the sample user is not the tenant's.
            let user_id = object
                .and_then(|raw| serde_json::from_str::<CloudUser>(raw.get()).ok())
                .and_then(|user| user.user_id);
            return Ok(LogEvent {
                log_id: id,
                date: self.time.map(Cow::into_owned),
                user_id,
                event_type: kind,
                purpose: Some("test".to_owned()),
                ..LogEvent::default()
            });
        }
        if kind.starts_with("organization.member.") {
            return membership_event(kind, id, self.time.map(Cow::into_owned), object);
        }
        let profile = match object.map(|raw| serde_json::from_str::<CloudUser>(raw.get())) {
            Some(Ok(user)) => user,
            Some(Err(err)) => {
                return Err(DecodeError::new(
                    format!("CloudEvent {kind}: data.object is not a user: {err}"),
                    id,
                ))
            }
            None if kind.starts_with("user.") => {
                return Err(DecodeError::new(
                    format!("CloudEvent {kind} without data.object"),
                    id,
                ))
            }
            None => CloudUser::default(),
        };
        if kind.starts_with("user.") && profile.user_id.as_deref().is_none_or(str::is_empty) {
            return Err(DecodeError::new(
                format!("CloudEvent {kind} without data.object.user_id"),
                id,
            ));
        }
        let primary = profile.identities.first();
        Ok(LogEvent {
            log_id: id,
            date: self.time.map(Cow::into_owned),
            user_id: profile.user_id.clone(),
            connection: primary.and_then(|i| i.connection.clone()),
            strategy: primary.and_then(|i| i.provider.clone()),
            event_type: kind,
            profile: Some(Box::new(Profile {
                email: profile.email,
                email_verified: profile.email_verified,
                identities: profile
                    .identities
                    .into_iter()
                    .map(|i| Identity {
                        connection: i.connection,
                        provider: i.provider,
                        is_social: i.is_social,
                    })
                    .collect(),
                app_metadata: profile.app_metadata,
                roles: None,
                client_metadata: None,
                created_at: profile.created_at,
            })),
            ..LogEvent::default()
        })
    }
}
