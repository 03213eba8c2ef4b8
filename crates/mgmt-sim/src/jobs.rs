//! Users-export jobs: `POST /api/v2/jobs/users-exports` snapshots the tenant into gzipped
//! NDJSON, `GET /api/v2/jobs/{id}` reports `pending` → `processing` → `completed` (or `failed`
//! with `status_details`) after the configured time, and the file is served at the job's
//! `location`, a URL with a random token and no authentication, like a pre-signed URL.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{RawPathParams, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{decode_path_segment, json_response, rfc3339_millis};

/// The fields exported when the request names none.
const DEFAULT_FIELDS: &[&str] = &[
    "user_id",
    "email",
    "email_verified",
    "identities",
    "app_metadata",
    "created_at",
];

/// Jobs by id, export files by their job's token, and the locations handed out: each job read
/// signs a new one (its own token), valid for `export_location_ttl_millis`.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    jobs: HashMap<String, Job>,
    files: HashMap<String, Bytes>,
    locations: HashMap<String, (String, Instant)>,
}

#[derive(Debug)]
struct Job {
    id: String,
    created: Instant,
    created_at: String,
    duration: Duration,
    failure: Option<String>,
    fields: Vec<String>,
    token: String,
    users: usize,
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// `POST /api/v2/jobs/users-exports` (`format` `json`, `fields` `[{name}]`) → 200 the job,
/// `pending`.
pub(crate) async fn create_export(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_body(format!("Invalid JSON ({e})")))?;
    match request.get("format").and_then(Value::as_str) {
        None | Some("json") => {}
        Some("csv") => {
            return Err(ApiError::invalid_body(
                "the simulator exports only format \"json\"",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid_body(format!(
                "'No enum match for: \"{other}\"' on property format"
            )))
        }
    }
    let fields: Vec<String> = match request.get("fields") {
        None => DEFAULT_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid_body("Missing required property: name on fields[]")
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid_body("'fields' must be an array")),
    };
    let (duration, failure) = {
        let config = lock(&shared.config);
        (
            Duration::from_millis(config.export_job_millis),
            config.export_job_failure.clone(),
        )
    };
    let file = export_file(&shared, &fields);
    let job = Job {
        id: format!("job_{}", random(16)),
        created: Instant::now(),
        created_at: rfc3339_millis(SystemTime::now()),
        duration,
        failure,
        fields,
        token: random(32),
        users: file.1,
    };
    let answer = job_json(&job, None, "pending");
    let mut jobs = lock(&shared.jobs);
    jobs.files.insert(job.token.clone(), file.0);
    jobs.jobs.insert(job.id.clone(), job);
    Ok(json_response(StatusCode::OK, &answer))
}

/// Every user's line (only `fields`), gzipped, and the number of users.
fn export_file(shared: &Shared, fields: &[String]) -> (Bytes, usize) {
    let tenant = lock(&shared.tenant);
    let ids = tenant.user_ids();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for id in &ids {
        let Some(Value::Object(user)) = tenant.existing_user_json(id) else {
            continue;
        };
        let line: Map<String, Value> = user
            .into_iter()
            .filter(|(k, _)| fields.iter().any(|f| f == k))
            .collect();
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut gz, &line);
        let _ = gz.write_all(b"\n");
    }
    (Bytes::from(gz.finish().unwrap_or_default()), ids.len())
}

/// The job as `GET /api/v2/jobs/{id}` answers it.
fn job_json(job: &Job, location: Option<String>, status: &str) -> Value {
    let mut answer = json!({
        "type": "users_export",
        "status": status,
        "id": job.id,
        "created_at": job.created_at,
        "format": "json",
        "fields": job.fields.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
    });
    if let Value::Object(map) = &mut answer {
        let elapsed = job.created.elapsed();
        match status {
            "processing" => {
                let done = (elapsed.as_secs_f64() / job.duration.as_secs_f64().max(0.001) * 100.0)
                    .min(99.0) as u64;
                map.insert("percentage_done".into(), json!(done));
                let left = job.duration.saturating_sub(elapsed).as_secs();
                map.insert("time_left_seconds".into(), json!(left));
            }
            "completed" => {
                map.insert("percentage_done".into(), json!(100));
                map.insert("time_left_seconds".into(), json!(0));
                map.insert("summary".into(), json!({"total": job.users}));
                if let Some(location) = location {
                    map.insert("location".into(), json!(location));
                }
            }
            "failed" => {
                if let Some(reason) = &job.failure {
                    map.insert("status_details".into(), json!(reason));
                }
            }
            _ => {}
        }
    }
    answer
}

/// `GET /api/v2/jobs/{id}`.
pub(crate) async fn get_job(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .unwrap_or("");
    let id = decode_path_segment(raw)?;
    let mut jobs = lock(&shared.jobs);
    let job = jobs.jobs.get(&id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "The job does not exist.").with_code("inexistent_job")
    })?;
    let elapsed = job.created.elapsed();
    let status = if elapsed < job.duration / 4 {
        "pending"
    } else if elapsed < job.duration {
        "processing"
    } else if job.failure.is_some() {
        "failed"
    } else {
        "completed"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let signature = random(32);
    let location = format!("http://{host}/exports/{signature}/users.json.gz");
    let body = job_json(job, Some(location), status);
    if status == "completed" {
        let file = job.token.clone();
        jobs.locations.insert(signature, (file, Instant::now()));
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /exports/{token}/{file}`: the gzipped NDJSON; no authentication, no rate limit (a
/// pre-signed storage URL). Unknown and expired tokens answer 403, as expired pre-signed URLs
/// do.
pub(crate) async fn download(State(shared): State<Arc<Shared>>, params: RawPathParams) -> Response {
    let token = params
        .iter()
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| value)
        .unwrap_or("");
    if shared.is_down() {
        return ApiError::unavailable().into_response();
    }
    let (ttl, expire) = {
        let mut config = lock(&shared.config);
        let expire = config.export_expired_downloads > 0;
        config.export_expired_downloads = config.export_expired_downloads.saturating_sub(1);
        (
            Duration::from_millis(config.export_location_ttl_millis),
            expire,
        )
    };
    let file = if expire {
        None
    } else {
        let jobs = lock(&shared.jobs);
        jobs.locations
            .get(token)
            .filter(|(_, issued)| ttl.is_zero() || issued.elapsed() <= ttl)
            .and_then(|(file, _)| jobs.files.get(file).cloned())
    };
    match file {
        Some(bytes) => {
            shared.count(|s| s.export_downloads += 1);
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                )],
                bytes,
            )
                .into_response()
        }
        None => (StatusCode::FORBIDDEN, "AccessDenied: Request has expired").into_response(),
    }
}
