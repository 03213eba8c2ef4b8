//! `[ledger]`: the URL, validated without connecting (`LedgerSettings::target`), and shown
//! without its password.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// `[ledger]`: where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// `sqlite:///ABSOLUTE/PATH` (the file is created if missing) or `postgres://…`.
    pub url: String,
}

/// The URL without its password (`LEDGER_URL` may carry one).
impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// What a ledger URL names, validated (see [`LedgerSettings::target`]).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgConnectOptions>),
}

impl LedgerSettings {
    /// Checks the URL without connecting: the problem, in words, when it cannot work (the
    /// config loader turns it into an error naming `ledger.url`).
    pub fn validate(&self) -> Result<(), String> {
        self.target().map(|_| ())
    }

    pub(crate) fn target(&self) -> Result<Target, String> {
        let url = self.url.trim();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split('?').next().unwrap_or_default();
            if !path.starts_with('/') {
                return Err(format!(
                    "`{}` is not sqlite:///ABSOLUTE/PATH (three slashes: the path must be absolute)",
                    redact_url(url)
                ));
            }
            if path.len() < 2 || path.ends_with('/') {
                return Err(format!("`{}` names a folder, not a file", redact_url(url)));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgConnectOptions::from_str(url)
                .map(|o| Target::Postgres(Box::new(o)))
                .map_err(|e| format!("`{}` is not a PostgreSQL URL: {e}", redact_url(url)));
        }
        Err(format!(
            "`{}` is neither sqlite:///ABSOLUTE/PATH nor postgres://USER@HOST:PORT/DATABASE",
            redact_url(url)
        ))
    }

    /// Whether the URL carries a password anywhere: in the user info (`user:password@`) or
    /// as a query parameter (`?password=…`, `sslpassword=…`, as libpq reads them).
    pub fn has_password(&self) -> bool {
        let url = self.url.trim();
        let in_userinfo = url.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        });
        in_userinfo
            || url
                .split_once('?')
                .is_some_and(|(_, query)| query.split('&').any(is_password_parameter))
    }

    /// Whether the URL names PostgreSQL (a ledger several hosts share: readers take a lease).
    pub fn is_postgres(&self) -> bool {
        matches!(self.target(), Ok(Target::Postgres(_)))
    }

    /// The URL without its password, for messages.
    pub fn describe(&self) -> String {
        match self.target() {
            Ok(Target::Sqlite(path)) => format!("sqlite://{}", path.display()),
            Ok(Target::Postgres(o)) => describe_pg(&o),
            Err(_) => redact_url(self.url.trim()),
        }
    }
}

fn describe_pg(o: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or(o.get_username())
    )
}

/// Whether a query parameter (`key=value`) carries a password.
fn is_password_parameter(parameter: &str) -> bool {
    let key = parameter.split('=').next().unwrap_or_default().trim();
    PASSWORD_PARAMETERS
        .iter()
        .any(|p| key.eq_ignore_ascii_case(p))
}

/// The URL query parameters that carry a secret (libpq's `password`, `sslpassword`).
const PASSWORD_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A URL with any `user:password@` reduced to `user@` and any password parameter of its query
/// left out, for messages.
pub(super) fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !is_password_parameter(p))
                .collect();
            (base, kept.join("&"))
        }
        None => (url, String::new()),
    };
    let query = if query.is_empty() {
        query
    } else {
        format!("?{query}")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{tail}{query}")
        }
        None => format!("{url}{query}"),
    }
}
