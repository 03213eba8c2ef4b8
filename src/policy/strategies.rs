//! Auth0's connection strategies and the strategy type each belongs to.

/// The strategy type of a strategy, as Auth0 classifies connections (`database`, `social`,
/// `enterprise`, `passwordless`). `is_social` is the identity's `isSocial` when known.
/// Unknown strategies without `is_social` give `None`.
pub fn strategy_type_of(strategy: &str, is_social: Option<bool>) -> Option<&'static str> {
    match strategy {
        "auth0" => return Some("database"),
        "email" | "sms" => return Some("passwordless"),
        _ => {}
    }
    match is_social {
        Some(true) => Some("social"),
        Some(false) => Some("enterprise"),
        None if ENTERPRISE_STRATEGIES.contains(&strategy) => Some("enterprise"),
        None if SOCIAL_STRATEGIES.contains(&strategy) => Some("social"),
        None => None,
    }
}

/// Enterprise connection strategies (Auth0's catalogue).
pub const ENTERPRISE_STRATEGIES: [&str; 13] = [
    "ad",
    "adfs",
    "auth0-adldap",
    "google-apps",
    "ip",
    "office365",
    "oidc",
    "okta",
    "pingfederate",
    "samlp",
    "sharepoint",
    "waad",
    "custom",
];

/// Common social connection strategies (Auth0's catalogue; custom social is `oauth2`).
pub const SOCIAL_STRATEGIES: [&str; 22] = [
    "amazon",
    "apple",
    "baidu",
    "bitbucket",
    "box",
    "dropbox",
    "dwolla",
    "evernote",
    "exact",
    "facebook",
    "github",
    "google-oauth2",
    "instagram",
    "line",
    "linkedin",
    "oauth2",
    "paypal",
    "salesforce",
    "shopify",
    "twitter",
    "windowslive",
    "yahoo",
];
