//! `[auth0]` read into [`Auth0Settings`]: the tenant, the client's credentials (the secret
//! only from the environment or a file), the request rate, batching and the options of reads.

use std::time::Duration;

use super::sections::{Auth0Section, RequestRate};
use super::{
    invalid, Auth0Settings, ConfigError, Env, ResolvedSecret, SecretKind, BASE_URL_ENV,
    CLIENT_ID_ENV, DOMAIN_ENV, SECRET_ENV,
};

pub(super) fn auth0_settings(
    section: Option<Auth0Section>,
    env: Env<'_>,
) -> Result<Option<Auth0Settings>, ConfigError> {
    let env_domain = env(DOMAIN_ENV).filter(|s| !s.is_empty());
    let env_client = env(CLIENT_ID_ENV).filter(|s| !s.is_empty());
    let env_base = env(BASE_URL_ENV).filter(|s| !s.is_empty());
    let section = match section {
        Some(s) => s,
        None if env_domain.is_some() || env_client.is_some() => Auth0Section::default(),
        None => return Ok(None),
    };
    if section.client_secret.is_some() {
        return Err(invalid(
            "auth0.client_secret",
            format!(
                "secrets never go in the config file: set {SECRET_ENV} or auth0.client_secret_file"
            ),
        ));
    }
    let domain = env_domain
        .or(section.domain)
        .ok_or_else(|| invalid("auth0.domain", format!("missing (or set {DOMAIN_ENV})")))?;
    let domain = domain.trim().trim_end_matches('/').to_owned();
    let is_host = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && reqwest::Url::parse(&format!("https://{domain}/")).is_ok_and(|u| {
            u.host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&domain))
        });
    if !is_host {
        return Err(invalid(
            "auth0.domain",
            format!("`{domain}` is not a host name: write the tenant host only, e.g. example.eu.auth0.com"),
        ));
    }
    let client_id = env_client
        .or(section.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "auth0.client_id",
                format!("missing (or set {CLIENT_ID_ENV})"),
            )
        })?;
    let base_url = match env_base.or(section.base_url) {
        None => format!("https://{domain}"),
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_owned();
            let usable = reqwest::Url::parse(&url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !url.contains(char::is_whitespace)
            });
            if !usable {
                return Err(invalid(
                    "auth0.base_url",
                    format!("`{url}` is not an http(s) URL, e.g. http://127.0.0.1:8080"),
                ));
            }
            url
        }
    };
    let (requests_per_second, auto_share) = match section.requests_per_second {
        None => (crate::mgmt::AUTO_INITIAL_RATE, Some(1.0)),
        Some(RequestRate::Word(word)) if word == "auto" => {
            (crate::mgmt::AUTO_INITIAL_RATE, Some(1.0))
        }
        Some(RequestRate::Word(_)) => {
            return Err(invalid(
                "auth0.requests_per_second",
                "must be \"auto\" (learned from the tenant) or a positive number (the most this service sends per second)",
            ))
        }
        Some(RequestRate::Number(rate)) => (rate, None),
    };
    if !(requests_per_second.is_finite() && requests_per_second > 0.0) {
        return Err(invalid(
            "auth0.requests_per_second",
            "must be \"auto\" or a positive number (the most this service sends per second)",
        ));
    }
    let auto_share =
        match (auto_share, section.auto_share) {
            (_, Some(share)) if !(share > 0.0 && share <= 1.0) => return Err(invalid(
                "auth0.auto_share",
                "must be above 0 and at most 1 (the share of the learned rate this service uses)",
            )),
            (Some(_), Some(share)) => Some(share),
            (auto, _) => auto,
        };
    let burst = section.burst.unwrap_or(2);
    if burst == 0 {
        return Err(invalid("auth0.burst", "must be at least 1"));
    }
    let timeout = section.timeout_seconds.unwrap_or(10.0);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 300.0) {
        return Err(invalid(
            "auth0.timeout_seconds",
            "must be between 0 and 300",
        ));
    }
    let batch_window_ms = section.batch_window_ms.unwrap_or(100);
    if batch_window_ms > 10_000 {
        return Err(invalid("auth0.batch_window_ms", "must be at most 10000"));
    }
    let batch_max_users = section.batch_max_users.unwrap_or(50);
    if !(1..=1000).contains(&batch_max_users) {
        return Err(invalid(
            "auth0.batch_max_users",
            "must be between 1 and 1000 (the bulk endpoint's limit)",
        ));
    }
    let log_stream = match section.log_stream.map(|n| n.trim().to_owned()) {
        Some(name) if name.is_empty() => {
            return Err(invalid(
                "auth0.log_stream",
                "must name the tenant's log stream (or leave the key out)",
            ))
        }
        other => other,
    };
    let organization_roles_per_minute = section
        .organization_roles_per_minute
        .unwrap_or(crate::mgmt::organizations::DEFAULT_ORGANIZATION_ROLES_PER_MINUTE);
    if organization_roles_per_minute == 0 {
        return Err(invalid(
            "auth0.organization_roles_per_minute",
            "must be at least 1 (Auth0's published limit is 200 organization member role writes per minute)",
        ));
    }
    let organization_roles_burst = section
        .organization_roles_burst
        .unwrap_or(crate::mgmt::organizations::DEFAULT_ORGANIZATION_ROLES_BURST);
    if organization_roles_burst == 0 {
        return Err(invalid(
            "auth0.organization_roles_burst",
            "must be at least 1 (Auth0's published burst is 20)",
        ));
    }
    Ok(Some(Auth0Settings {
        domain,
        client_id,
        secret: ResolvedSecret::resolve(
            SecretKind::ClientSecret,
            env,
            section.client_secret_file.as_deref(),
        ),
        base_url,
        requests_per_second,
        burst,
        auto_share,
        give_up_after: crate::mgmt::ONE_SHOT_PATIENCE,
        timeout: Duration::from_secs_f64(timeout),
        batch_window: Duration::from_millis(batch_window_ms),
        batch_max_users,
        read_user_roles: section.read_user_roles.unwrap_or(false),
        count_group_roles: section.count_group_roles.unwrap_or(false),
        log_stream,
        organization_roles_per_minute,
        organization_roles_burst,
    }))
}
