//! How a user came to exist, as far as the event tells it: the `created_by` condition's
//! decision table (self-signup, or created by an admin through the Management API or the
//! Dashboard). An `ss` is logged for both, so the event's own fields decide, and what they do not
//! decide stays undecided (a rule that tests it neither grants nor, under `reconcile --revoke`,
//! takes back on it). Pure.

use std::fmt;

use crate::event::{LogEvent, Trigger};

/// The origin a `created_by` condition names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Creation {
    /// The user signed up themselves (Universal Login's signup, a social first login).
    SelfSignup,
    /// An admin or a back end created the user (the Management API, the Dashboard).
    Admin,
}

impl Creation {
    /// The config and output name.
    pub fn as_str(self) -> &'static str {
        match self {
            Creation::SelfSignup => "self_signup",
            Creation::Admin => "admin",
        }
    }

    /// Parses `self_signup` or `admin`.
    pub fn from_name(name: &str) -> Option<Creation> {
        [Creation::SelfSignup, Creation::Admin]
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Creation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client name Auth0 logs for users created in the Dashboard (and for `sv`).
const DASHBOARD_CLIENT: &str = "All Applications";

/// The decision table (docs/policy.md repeats it), first match wins:
///
/// | event | tells |
/// |---|---|
/// | `ss` with `details.body.is_signup: false` | `admin` (Management API) |
/// | `ss` logged against `client_name` "All Applications" | `admin` (Dashboard) |
/// | `ss` whose body holds a signup form's fields (`transaction`, `request_language`) | `self_signup` |
/// | first login (`s`) of a social connection (`strategy_type` `social`) | `self_signup` (social users get no `ss`; the Management API cannot create them) |
/// | anything else (other `ss`, `user.created`, `sv`, later events, an existing user) | undecided |
///
/// `None` is undecided: no read can tell it.
pub fn creation_of(event: &LogEvent, triggers: &[Trigger], existing: bool) -> Option<Creation> {
    if existing {
        return None;
    }
    match (triggers, event.event_type.as_str()) {
        ([Trigger::Signup], "ss") => {
            if event.body_is_signup == Some(false)
                || event.client_name.as_deref() == Some(DASHBOARD_CLIENT)
            {
                Some(Creation::Admin)
            } else if event.body_signup_request {
                Some(Creation::SelfSignup)
            } else {
                None
            }
        }
        ([Trigger::FirstLogin], _) if event.strategy_type.as_deref() == Some("social") => {
            Some(Creation::SelfSignup)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signup(body_is_signup: Option<bool>, form: bool, client: Option<&str>) -> LogEvent {
        LogEvent {
            event_type: "ss".to_owned(),
            body_is_signup,
            body_signup_request: form,
            client_name: client.map(str::to_owned),
            ..LogEvent::default()
        }
    }

    #[test]
    fn the_table_tells_admin_from_self_signup_and_leaves_the_rest_undecided() {
        let s = [Trigger::Signup];
        assert_eq!(
            creation_of(&signup(Some(false), false, Some("Auth0 CLI")), &s, false),
            Some(Creation::Admin)
        );
        // is_signup: false wins over a form's fields.
        assert_eq!(
            creation_of(&signup(Some(false), true, None), &s, false),
            Some(Creation::Admin)
        );
        assert_eq!(
            creation_of(&signup(None, false, Some("All Applications")), &s, false),
            Some(Creation::Admin)
        );
        assert_eq!(
            creation_of(&signup(None, true, Some("My App")), &s, false),
            Some(Creation::SelfSignup)
        );
        assert_eq!(
            creation_of(&signup(None, false, Some("My App")), &s, false),
            None
        );
        assert_eq!(
            creation_of(&signup(Some(true), false, None), &s, false),
            None
        );
        let created = LogEvent {
            event_type: "user.created".to_owned(),
            ..LogEvent::default()
        };
        assert_eq!(creation_of(&created, &s, false), None);
        let social = LogEvent {
            event_type: "s".to_owned(),
            strategy_type: Some("social".to_owned()),
            ..LogEvent::default()
        };
        assert_eq!(
            creation_of(&social, &[Trigger::FirstLogin], false),
            Some(Creation::SelfSignup)
        );
        assert_eq!(creation_of(&social, &[Trigger::FirstLogin], true), None);
    }
}
