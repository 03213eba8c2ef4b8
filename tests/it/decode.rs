//! Decoding every delivery envelope and every trap listed in DESIGN.md.

use auth0_default_roles::event::{decode, looks_like_email, LogEvent, Selection, Trigger};
use proptest::prelude::*;

const LOG_ID: &str = "90020211103032530111223343147286033102509916061341581378";

fn events(bytes: &[u8]) -> Vec<LogEvent> {
    decode(bytes)
        .into_iter()
        .map(|item| item.unwrap_or_else(|e| panic!("unexpected decode error: {e}")))
        .collect()
}

fn one(bytes: &str) -> LogEvent {
    let mut all = events(bytes.as_bytes());
    assert_eq!(all.len(), 1, "expected one event from {bytes}");
    all.remove(0)
}

fn signup_log() -> String {
    format!(
        r#"{{"date":"2026-11-01T10:00:00.100Z","type":"ss","description":"","connection":"Username-Password-Authentication","connection_id":"con_db01","client_id":"app1","client_name":"Store","details":{{"body":{{"email":"Neo@Test.com","password":"*****"}}}},"user_id":"auth0|6182002f34f4dd006b05b5c7","user_name":"neo@test.com","strategy":"auth0","strategy_type":"database","log_id":"{LOG_ID}"}}"#
    )
}

#[test]
fn bare_log_object() {
    let event = one(&signup_log());
    assert_eq!(event.event_type, "ss");
    assert_eq!(event.log_id.as_deref(), Some(LOG_ID));
    assert_eq!(
        event.user_id.as_deref(),
        Some("auth0|6182002f34f4dd006b05b5c7")
    );
    assert_eq!(
        event.connection.as_deref(),
        Some("Username-Password-Authentication")
    );
    assert_eq!(event.strategy_type.as_deref(), Some("database"));
    assert_eq!(event.email(), Some("Neo@Test.com"));
    assert_eq!(event.provider(), Some("auth0"));
    assert_eq!(event.selection(), Selection::Eligible(Trigger::Signup));
}

#[test]
fn webhook_record_takes_log_id_from_either_level() {
    let data = signup_log().replace(&format!(r#","log_id":"{LOG_ID}""#), "");
    let event = one(&format!(r#"{{"log_id":"{LOG_ID}","data":{data}}}"#));
    assert_eq!(event.log_id.as_deref(), Some(LOG_ID));
    assert_eq!(event.event_type, "ss");
    let event = one(&format!(r#"{{"data":{}}}"#, signup_log()));
    assert_eq!(event.log_id.as_deref(), Some(LOG_ID));
}

#[test]
fn eventbridge_event_with_record_or_bare_log_and_list_detail_type() {
    let record = format!(r#"{{"log_id":"{LOG_ID}","data":{}}}"#, signup_log());
    let event = one(&format!(
        r#"{{"version":"0","id":"6f5","detail-type":"Auth0 log","source":"aws.partner/auth0.com/acme-1/auth0.logs","time":"2026-11-01T10:00:01Z","region":"eu-west-1","resources":[],"detail":{record}}}"#
    ));
    assert_eq!(event.event_type, "ss");
    assert_eq!(event.log_id.as_deref(), Some(LOG_ID));
    // Some samples carry detail-type as a list and the bare log in detail (input transformer).
    let event = one(&format!(
        r#"{{"detail-type":["Auth0 log"],"detail":{}}}"#,
        signup_log()
    ));
    assert_eq!(
        event.user_id.as_deref(),
        Some("auth0|6182002f34f4dd006b05b5c7")
    );
}

#[test]
fn eventbridge_event_of_another_kind_is_an_error() {
    let items = decode(
        br#"{"detail-type":"EC2 Instance State-change Notification","detail":{"state":"running"}}"#,
    );
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().expect_err("not an Auth0 log");
    assert!(err.reason.contains("detail-type"), "{}", err.reason);
}

#[test]
fn array_jsonl_and_logs_object_keep_input_order() {
    let a = signup_log();
    let b = signup_log().replace(r#""type":"ss""#, r#""type":"sv""#);
    let array = format!("[{a},{b}]");
    let lines = format!("{a}\n\n{b}\n");
    let object = format!(r#"{{"logs":[{{"log_id":"1","data":{a}}},{{"log_id":"2","data":{b}}}]}}"#);
    for body in [array, lines, object] {
        let types: Vec<String> = events(body.as_bytes())
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(types, ["ss", "sv"], "body {body}");
    }
}

#[test]
fn array_of_eventbridge_events() {
    let body = format!(
        r#"[{{"detail-type":"Auth0 log","detail":{{"log_id":"1","data":{}}}}}]"#,
        signup_log()
    );
    assert_eq!(events(body.as_bytes())[0].event_type, "ss");
}

#[test]
fn one_bad_line_of_json_lines_costs_one_item() {
    let good = signup_log();
    let body = format!(
        "{good}\n{{\"log_id\":\"2\",\"data\":{{\"type\":\"ss\",\"user_id\":\"auth0|tr\n{good}\n"
    );
    let items = decode(body.as_bytes());
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[0].is_ok());
    let err = items[1].as_ref().expect_err("truncated line");
    assert!(err.reason.contains("line 2"), "{}", err.reason);
    assert!(items[2].is_ok());
}

#[test]
fn non_log_values_are_errors_not_drops() {
    for (body, hint) in [
        (r#"{"hello":"world"}"#, "not an Auth0 log"),
        ("42", "a number"),
        ("[1]", "array item"),
        (r#"{"logs":[true]}"#, "logs item"),
        (r#"{"log_id":"5"}"#, "without a type"),
        ("", "empty"),
        ("   \n ", "empty"),
        ("{", "truncated"),
    ] {
        let items = decode(body.as_bytes());
        assert_eq!(items.len(), 1, "{body}");
        let err = items[0].as_ref().expect_err(body);
        assert!(err.reason.contains(hint), "{body}: {}", err.reason);
    }
    let items = decode(br#"{"log_id":"5"}"#);
    assert_eq!(
        items[0].as_ref().expect_err("no type").log_id.as_deref(),
        Some("5")
    );
}

#[test]
fn exact_type_codes_only() {
    for code in [
        "ssa",
        "sapi",
        "seacft",
        "ss_sso_success",
        "ss_sso_failure",
        "svr",
        "sce",
        "f",
        "fs",
        "slo",
        "mgmt_api_read",
        "brand_new_code",
    ] {
        let event = one(&signup_log().replace(r#""type":"ss""#, &format!(r#""type":"{code}""#)));
        assert!(
            matches!(event.selection(), Selection::NotEligible(_)),
            "{code} must not be eligible"
        );
    }
    let verified = one(&signup_log().replace(r#""type":"ss""#, r#""type":"sv""#));
    assert_eq!(
        verified.selection(),
        Selection::Eligible(Trigger::EmailVerified)
    );
}

fn login(details: &str) -> LogEvent {
    one(&format!(
        r#"{{"type":"s","user_id":"auth0|abc","user_name":"neo@test.com","connection_id":"","details":{details},"log_id":"{LOG_ID}"}}"#
    ))
}

#[test]
fn first_login_from_top_level_or_prompt_counts() {
    assert_eq!(
        login(r#"{"stats":{"loginsCount":1}}"#).selection(),
        Selection::Eligible(Trigger::FirstLogin)
    );
    assert!(matches!(
        login(r#"{"stats":{"loginsCount":4}}"#).selection(),
        Selection::NotEligible("later login")
    ));
    // Count only inside a prompt (the login right after a Universal Login signup).
    let post_signup = login(r#"{"prompts":[{"name":"prompt-signup","stats":{"loginsCount":1}}]}"#);
    assert_eq!(
        post_signup.selection(),
        Selection::Eligible(Trigger::FirstLogin)
    );
    // The top-level count wins over the prompts.
    let both = login(r#"{"stats":{"loginsCount":3},"prompts":[{"stats":{"loginsCount":1}}]}"#);
    assert!(matches!(both.selection(), Selection::NotEligible(_)));
}

#[test]
fn sso_logins_and_null_counts_are_not_first_logins() {
    let sso =
        login(r#"{"prompts":[],"completedAt":1635918834496,"elapsedTime":null,"session_id":"x"}"#);
    assert!(matches!(sso.selection(), Selection::NotEligible(_)));
    // An event that cannot trigger keeps only what identifies it.
    assert_eq!(sso.user_id.as_deref(), Some("auth0|abc"));
    assert_eq!(sso.log_id.as_deref(), Some(LOG_ID));
    assert_eq!(sso.connection_id, None);
    let null = login(
        r#"{"stats":{"loginsCount":null},"prompts":[{"stats":{"loginsCount":null},"elapsedTime":null}]}"#,
    );
    assert_eq!(null.effective_logins_count(), None);
    assert!(matches!(null.selection(), Selection::NotEligible(_)));
}

#[test]
fn lenient_field_types() {
    // client_id null, identity as a number, both isMobile spellings, $event_schema, odd shapes.
    let event = one(&format!(
        r#"{{"type":"s","client_id":null,"isMobile":false,"is_mobile":false,"$event_schema":{{"version":"1.0.0"}},"user_id":"google-oauth2|111","details":{{"prompts":[{{"identity":111025433877931430949,"stats":{{"loginsCount":1}}}}, "junk", null],"body":"not an object"}},"log_id":"{LOG_ID}","location_info":{{"country_code":"AU"}},"connection":{{"weird":true}},"strategy":["x"]}}"#
    ));
    assert_eq!(event.client_id, None);
    assert_eq!(event.connection, None);
    assert_eq!(event.strategy, None);
    assert_eq!(event.selection(), Selection::Eligible(Trigger::FirstLogin));
    assert_eq!(event.provider(), Some("google-oauth2"));
}

#[test]
fn log_id_stays_a_56_digit_string() {
    let event = one(&signup_log());
    assert_eq!(event.log_id.as_deref().map(str::len), Some(56));
    // Even written as a JSON number it is not rounded: it becomes its decimal text when it fits,
    // and a value that does not fit any integer type is not silently truncated.
    let numeric = one(r#"{"type":"ss","log_id":12345}"#);
    assert_eq!(numeric.log_id.as_deref(), Some("12345"));
    let huge = one(&format!(r#"{{"type":"ss","log_id":{LOG_ID}}}"#));
    assert_eq!(huge.log_id, None);
}

#[test]
fn email_sources_per_type() {
    let ss = one(&signup_log());
    assert_eq!(ss.email(), Some("Neo@Test.com"));
    let ss_no_body = one(r#"{"type":"ss","user_name":"a@b.example","details":{}}"#);
    assert_eq!(ss_no_body.email(), Some("a@b.example"));
    let sv =
        one(r#"{"type":"sv","user_name":"old@x.example","details":{"email":"new@y.example"}}"#);
    assert_eq!(sv.email(), Some("new@y.example"));
    let s_phone = one(r#"{"type":"s","user_name":"+14155554321"}"#);
    assert_eq!(s_phone.email(), None);
    let s_name = one(r#"{"type":"s","user_name":"system_proc"}"#);
    assert_eq!(s_name.email(), None);
}

#[test]
fn masked_or_hashed_emails_are_not_emails() {
    assert!(looks_like_email("neo@test.com"));
    assert!(looks_like_email("First.Last+tag@Sub.Example.CO.uk"));
    for text in [
        "n**@t***.com",
        "****",
        "9f86d081884c7d659a2feaa0c55ad015",
        "neo@",
        "@test.com",
        "neo@test",
        "neo @test.com",
        "a@b@c.com",
        "",
    ] {
        assert!(!looks_like_email(text), "{text}");
    }
    let masked = one(
        r#"{"type":"ss","details":{"body":{"email":"a****@p******.example"}},"user_name":"a****@p******.example"}"#,
    );
    assert_eq!(masked.email(), None);
}

#[test]
fn user_ids_with_pipes_and_slashes() {
    let event =
        one(r#"{"type":"s","user_id":"samlp|corp/alice|x","details":{"stats":{"loginsCount":1}}}"#);
    assert_eq!(event.provider(), Some("samlp"));
    assert_eq!(event.user(), Some("samlp|corp/alice|x"));
    let empty = one(r#"{"type":"f","user_id":""}"#);
    assert_eq!(empty.user(), None);
    assert_eq!(empty.provider(), None);
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let items = decode(&bytes);
        prop_assert!(!items.is_empty());
    }

    #[test]
    fn decoding_json_like_text_never_panics(text in r#"[\[\]{}",:0-9a-z_\-|@. \n]{0,300}"#) {
        let items = decode(text.as_bytes());
        prop_assert!(!items.is_empty());
    }

    #[test]
    fn every_line_of_json_lines_yields_an_item(n in 1usize..20, bad in proptest::collection::vec(any::<bool>(), 20)) {
        let mut body = String::new();
        for (i, bad_line) in bad.iter().take(n).enumerate() {
            if *bad_line {
                body.push_str("{\"type\":\"ss\",\"log_id\":\"");
            } else {
                body.push_str(&format!("{{\"type\":\"ss\",\"log_id\":\"{i}\"}}"));
            }
            body.push('\n');
        }
        let items = decode(body.as_bytes());
        let good = bad.iter().take(n).filter(|b| !**b).count();
        prop_assert_eq!(items.iter().filter(|i| i.is_ok()).count(), good);
        prop_assert!(items.len() <= n);
        prop_assert!(!items.is_empty());
    }
}
