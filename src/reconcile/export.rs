//! Who exists: a users-export job (`POST /api/v2/jobs/users-exports`, `GET /api/v2/jobs/{id}`
//! until `completed`), its file downloaded from the pre-signed `location` to disk, and the
//! reading of an export file (gzipped or plain NDJSON) one user at a time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::Identity;
use crate::mgmt::{encode_path_segment, MgmtClient, MgmtError, Operation};
use crate::policy::Profile;

/// The fields the policy can test, and what the summary reports.
pub const EXPORT_FIELDS: &[&str] = &[
    "user_id",
    "email",
    "email_verified",
    "identities",
    "app_metadata",
    "created_at",
    "logins_count",
];

/// Why the users could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Mgmt(#[from] MgmtError),
    /// The job ended `failed`: Auth0's reason.
    #[error("the users-export job {id} failed: {reason}")]
    JobFailed { id: String, reason: String },
    #[error("the users-export job answered without {0}")]
    Protocol(&'static str),
    #[error("cannot build the HTTP client for the export's download")]
    DownloadClient(#[source] reqwest::Error),
    /// Transient failures (connection errors, 408, 429, 5xx) every attempt met: the last one
    /// is the source.
    #[error("cannot download the export from its location: gave up after {attempts} attempts")]
    Download {
        attempts: u32,
        #[source]
        last: DownloadFailure,
    },
    /// An answer that is no file and that no retry changes.
    #[error("cannot download the export from its location: HTTP {0}")]
    DownloadRefused(reqwest::StatusCode),
    /// The location refused the download (403, 404, 410: the pre-signed URL expired, it lasts
    /// about a minute): the job, readable for a day, gives a fresh one.
    #[error("the export's location refused the download (HTTP {0}): its pre-signed URL expired")]
    LocationExpired(u16),
    /// The file system's words are the `source`, printed by the reporter at the edge.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the export to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why one download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadFailure {
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The request or the body's transfer; the URL stripped (a pre-signed URL is a credential
    /// while it lasts: never in a log or an error), the transport's causes kept.
    #[error(transparent)]
    Transport(reqwest::Error),
}

/// How the job's status is awaited: the first wait, doubled up to the cap.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            first: Duration::from_millis(250),
            cap: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Job {
    id: Option<String>,
    status: Option<String>,
    location: Option<String>,
    status_details: Option<String>,
    percentage_done: Option<u64>,
}

/// Creates the export job (`format: json`, the fields the policy can test); returns its id.
pub async fn create_job(client: &MgmtClient) -> Result<String, ExportError> {
    let fields: Vec<Value> = EXPORT_FIELDS.iter().map(|f| json!({ "name": f })).collect();
    let body = json!({ "format": "json", "fields": fields });
    let answer = client
        .request(
            Operation::CreateExportJob,
            Method::POST,
            "/api/v2/jobs/users-exports",
            Some(&body),
        )
        .await?;
    let job: Job = serde_json::from_slice(&answer.body).unwrap_or_default();
    let id = job.id.ok_or(ExportError::Protocol("an id"))?;
    tracing::info!(job = %id, "users-export job created");
    Ok(id)
}

/// Polls the job with backoff until `completed` (its `location`) or `failed` (its reason).
/// `on_status` sees each status and percentage.
pub async fn await_job(
    client: &MgmtClient,
    polling: Polling,
    id: &str,
    mut on_status: impl FnMut(&str, Option<u64>),
) -> Result<String, ExportError> {
    let path = format!("/api/v2/jobs/{}", encode_path_segment(id));
    let mut wait = polling.first;
    let mut warned = std::collections::BTreeSet::new();
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(polling.cap);
        let answer = client
            .request(Operation::GetJob, Method::GET, &path, None)
            .await?;
        let job: Job = match serde_json::from_slice(&answer.body) {
            Ok(job) => job,
            Err(e) => {
                // A 2xx that is not a job (a proxy's page): asked again, not trusted.
                tracing::warn!(job = %id, error = %e, "the job's status is not a job; asking again");
                continue;
            }
        };
        let status = job.status.as_deref().unwrap_or("");
        on_status(status, job.percentage_done);
        match status {
            "completed" => return job.location.ok_or(ExportError::Protocol("a location")),
            "failed" => {
                return Err(ExportError::JobFailed {
                    id: id.to_owned(),
                    reason: job
                        .status_details
                        .unwrap_or_else(|| "(Auth0 gave no reason)".to_owned()),
                })
            }
            "pending" | "processing" => {}
            other => {
                if warned.insert(other.to_owned()) {
                    tracing::warn!(job = %id, status = other, "the users-export job reports a status this version does not know; still waiting for completed or failed");
                }
            }
        }
    }
}

/// Downloads `location` (a pre-signed URL: no `Authorization` header) to `to`, retrying
/// transient failures (connection errors, 408, 429, 5xx) up to `attempts` times from the start.
pub async fn download(
    location: &str,
    to: &Path,
    attempts: u32,
    mut on_bytes: impl FnMut(u64),
) -> Result<u64, ExportError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("auth0-default-roles/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(ExportError::DownloadClient)?;
    let attempts = attempts.max(1);
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match download_once(&http, location, to, &mut on_bytes).await {
            Ok(bytes) => return Ok(bytes),
            Err(Attempt::Fatal(err)) => return Err(err),
            Err(Attempt::Transient(last)) if attempt >= attempts => {
                return Err(ExportError::Download { attempts, last });
            }
            Err(Attempt::Transient(why)) => {
                let reason = crate::exit::cause_chain(&why);
                tracing::warn!(attempt, %reason, "export download failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
        }
    }
}

enum Attempt {
    Transient(DownloadFailure),
    Fatal(ExportError),
}

async fn download_once(
    http: &reqwest::Client,
    location: &str,
    to: &Path,
    on_bytes: &mut impl FnMut(u64),
) -> Result<u64, Attempt> {
    let mut response = http
        .get(location)
        .send()
        .await
        // The pre-signed URL is a credential while it lasts: never in a log or an error.
        .map_err(|e| Attempt::Transient(DownloadFailure::Transport(e.without_url())))?;
    let status = response.status();
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        return Err(Attempt::Transient(DownloadFailure::Status(status)));
    }
    if matches!(status.as_u16(), 403 | 404 | 410) {
        return Err(Attempt::Fatal(ExportError::LocationExpired(
            status.as_u16(),
        )));
    }
    if !status.is_success() {
        return Err(Attempt::Fatal(ExportError::DownloadRefused(status)));
    }
    let write_error = |source| {
        Attempt::Fatal(ExportError::Write {
            path: to.to_owned(),
            source,
        })
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(to).map_err(write_error)?);
    let mut total = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Attempt::Transient(DownloadFailure::Transport(e.without_url())))?
    {
        file.write_all(&chunk).map_err(write_error)?;
        total += chunk.len() as u64;
        on_bytes(total);
    }
    file.flush().map_err(write_error)?;
    file.get_ref().sync_all().map_err(write_error)?;
    Ok(total)
}

/// Opens an export file, gzipped (detected by its magic bytes) or plain NDJSON.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, ExportError> {
    let read_error = |source| ExportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file =
        BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(read_error)?);
    let gzipped = file
        .fill_buf()
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(file)
    })
}

/// One user of the export, as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportUser {
    pub user_id: String,
    pub profile: Profile,
}

/// Decodes one export line leniently: every field but `user_id` may be absent or of another
/// type (it then reads as absent). `None` for a line that is not a JSON object with a
/// `user_id` string.
pub fn decode_line(line: &[u8]) -> Option<ExportUser> {
    let Value::Object(mut user) = serde_json::from_slice::<Value>(line).ok()? else {
        return None;
    };
    let user_id = match user.remove("user_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return None,
    };
    let email = match user.remove("email") {
        Some(Value::String(email)) => Some(email),
        _ => None,
    };
    let email_verified = match user.remove("email_verified") {
        Some(Value::Bool(v)) => Some(v),
        Some(Value::String(v)) if v == "true" || v == "false" => Some(v == "true"),
        _ => None,
    };
    let identities = match user.remove("identities") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| serde_json::from_value::<Identity>(item).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    let app_metadata = match user.remove("app_metadata") {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    Some(ExportUser {
        user_id,
        profile: Profile {
            email,
            email_verified,
            identities,
            app_metadata,
            roles: None,
            client_metadata: None,
            created_at: None,
        },
    })
}

/// An export's users, one line at a time; blank lines are skipped, a bad line gives its number.
pub struct Users {
    reader: Box<dyn BufRead>,
    line: Vec<u8>,
    number: usize,
}

impl Users {
    pub fn new(reader: Box<dyn BufRead>) -> Users {
        Users {
            reader,
            line: Vec::with_capacity(1024),
            number: 0,
        }
    }

    /// The next user (or the number of a line that is not one); `None` at the end.
    pub fn next_user(&mut self) -> std::io::Result<Option<Result<ExportUser, usize>>> {
        loop {
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            self.number += 1;
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(decode_line(&self.line).ok_or(self.number)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_leniently() {
        let user = decode_line(br#"{"user_id":"auth0|1","email":"a@x.io","email_verified":true,"identities":[{"connection":"db","provider":"auth0","isSocial":false,"user_id":7}],"app_metadata":{"plan":"pro"},"logins_count":3}"#)
            .unwrap_or_else(|| panic!("decodes"));
        assert_eq!(user.user_id, "auth0|1");
        assert_eq!(user.profile.email.as_deref(), Some("a@x.io"));
        assert_eq!(user.profile.email_verified, Some(true));
        assert_eq!(user.profile.identities[0].connection.as_deref(), Some("db"));
        let odd = decode_line(br#"{"user_id":"x","email":5,"identities":"no","app_metadata":[]}"#)
            .unwrap_or_else(|| panic!("decodes"));
        assert_eq!(odd.profile.email, None);
        assert!(odd.profile.identities.is_empty());
        assert_eq!(decode_line(b"not json"), None);
        assert_eq!(decode_line(br#"{"email":"no id"}"#), None);
        assert_eq!(decode_line(br#"["user_id"]"#), None);
    }

    #[tokio::test]
    async fn the_download_retries_transient_failures_sends_no_authorization_and_reports_an_expired_url(
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new()
            .route(
                "/file",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    let counter = Arc::clone(&counter);
                    async move {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        if headers.contains_key("authorization") {
                            (
                                axum::http::StatusCode::BAD_REQUEST,
                                "signed URLs refuse Authorization",
                            )
                        } else if n < 2 {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "later")
                        } else {
                            (axum::http::StatusCode::OK, "{\"user_id\":\"a\"}\n")
                        }
                    }
                }),
            )
            .route(
                "/expired",
                axum::routing::get(|| async { (axum::http::StatusCode::FORBIDDEN, "expired") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let to = dir.join("export.json");
        let bytes = download(&format!("http://{addr}/file"), &to, 5, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes, 16);
        assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s retried");
        assert_eq!(
            std::fs::read_to_string(&to).unwrap_or_default(),
            "{\"user_id\":\"a\"}\n"
        );
        let expired = download(&format!("http://{addr}/expired"), &to, 5, |_| {}).await;
        assert!(
            matches!(&expired, Err(ExportError::LocationExpired(403))),
            "{expired:?}"
        );
        // Nothing listens there: the error names the failure, never the signed URL.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("{e}"));
        let unreachable = download(
            &format!("http://{closed}/export.json.gz?X-Amz-Signature=SECRET"),
            &to,
            2,
            |_| {},
        )
        .await;
        match unreachable {
            Err(err @ ExportError::Download { .. }) => {
                let why = crate::exit::cause_chain(&err);
                assert!(!why.contains("SECRET") && !why.contains("X-Amz"), "{why}");
            }
            other => panic!("expected a download error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_download_that_cannot_connect_keeps_the_transports_cause_chain() {
        // The reporter at the edge prints the chain: reqwest's own words ("error sending
        // request") say nothing of why; the connection's refusal is in its sources.
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("{e}"));
        let result = download(
            &format!("http://{closed}/users.json.gz?X-Amz-Signature=SECRET"),
            &dir.join("users.json.gz"),
            1,
            |_| {},
        )
        .await;
        let Err(err) = result else {
            panic!("nothing listens there, yet: {result:?}");
        };
        let chain = crate::exit::cause_chain(&err);
        assert!(
            chain.starts_with(
                "cannot download the export from its location: gave up after 1 attempts: "
            ),
            "{chain}"
        );
        assert!(
            chain.to_lowercase().contains("connection refused"),
            "{chain}"
        );
        assert!(!chain.contains("SECRET"), "{chain}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plain_and_gzipped_files_read_alike_and_bad_lines_are_numbered() {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let text = "{\"user_id\":\"a\"}\n\ngarbage\n{\"user_id\":\"b\"}\n";
        let plain = dir.join("users.json");
        let gz = dir.join("users.json.gz");
        std::fs::write(&plain, text).unwrap_or_else(|e| panic!("{e}"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&gz, encoder.finish().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        for path in [&plain, &gz] {
            let mut users = Users::new(open(path).unwrap_or_else(|e| panic!("{e}")));
            let mut seen = Vec::new();
            while let Some(user) = users.next_user().unwrap_or_else(|e| panic!("{e}")) {
                seen.push(user.map(|u| u.user_id));
            }
            assert_eq!(seen, vec![Ok("a".to_owned()), Err(3), Ok("b".to_owned())]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
