use axum::http::{header, HeaderMap};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::bridge::refused_for_good;
use super::http::acceptable_content_type;
use super::*;

#[test]
fn only_a_record_s_own_faults_are_refused_for_good() {
    let refused = |code| refused_for_good(&KafkaError::MessageProduction(code));
    assert!(refused(RDKafkaErrorCode::MessageSizeTooLarge).is_some());
    assert!(refused(RDKafkaErrorCode::InvalidRecord).is_some());
    // Every record would be refused: the deployment's fault, answered 503 (kept by Auth0).
    for code in [
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::ClusterAuthorizationFailed,
        RDKafkaErrorCode::PolicyViolation,
        RDKafkaErrorCode::InvalidTopic,
        RDKafkaErrorCode::MessageTimedOut,
    ] {
        assert!(refused(code).is_none(), "{code:?}");
    }
}

fn ok_count(r: &[RawRecord]) -> usize {
    r.iter().filter(|x| x.is_ok()).count()
}

#[test]
fn splits_every_content_format() {
    let rec = r#"{"log_id":"1","data":{"type":"ss","user_id":"auth0|a"}}"#;
    let lines = format!("{rec}\n{rec}\n\n{rec}\n");
    assert_eq!(
        ok_count(&split_records(lines.as_bytes()).unwrap_or_default()),
        3
    );
    let array = format!("[{rec},{rec}]");
    assert_eq!(
        ok_count(&split_records(array.as_bytes()).unwrap_or_default()),
        2
    );
    let object = format!("{{\"logs\":[{rec},{rec},{rec},{rec}]}}");
    assert_eq!(
        ok_count(&split_records(object.as_bytes()).unwrap_or_default()),
        4
    );
    let single = split_records(rec.as_bytes()).unwrap_or_default();
    assert_eq!(ok_count(&single), 1);
    let eventbridge = r#"{"version":"0","detail-type":"Auth0 log","source":"aws.partner/auth0.com/t/auth0.logs","detail":{"log_id":"1","data":{"type":"ss"}}}"#;
    assert_eq!(
        ok_count(&split_records(eventbridge.as_bytes()).unwrap_or_default()),
        1
    );
}

#[test]
fn a_broken_line_costs_one_record() {
    let body = "{\"log_id\":\"1\",\"data\":{}}\n{\"log_id\": \"2\", \"da\n{\"log_id\":\"3\",\"data\":{}}\n";
    let r = split_records(body.as_bytes()).unwrap_or_default();
    assert_eq!(r.len(), 3);
    assert_eq!(ok_count(&r), 2);
    assert!(r[1]
        .as_ref()
        .err()
        .is_some_and(|e| e.reason.starts_with("line 2") && !e.bytes.is_empty()));
}

#[test]
fn not_json_is_refused() {
    assert!(split_records(b"").is_err());
    assert!(split_records(b"  \n ").is_err());
    assert!(split_records(b"hello").is_err());
}

#[test]
fn content_types() {
    let mut h = HeaderMap::new();
    assert!(acceptable_content_type(&h));
    h.insert(
        header::CONTENT_TYPE,
        "application/json; charset=utf-8"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(acceptable_content_type(&h));
    h.insert(
        header::CONTENT_TYPE,
        "multipart/form-data"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(!acceptable_content_type(&h));
}
