use super::*;
use proptest::prelude::*;

fn record(i: usize) -> String {
    format!(
        r#"{{"log_id":"{i:056}","data":{{"type":"ss","user_id":"auth0|u{i}","connection":"Username-Password-Authentication"}}}}"#
    )
}

fn ok_ids(items: &[Decoded]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.as_ref().ok().and_then(|e| e.log_id.clone()))
        .collect()
}

fn errors(items: &[Decoded]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.as_ref().err().map(|e| e.reason.clone()))
        .collect()
}

#[test]
fn an_indented_record_after_a_garbage_line_is_decoded() {
    let body = format!("not json at all\n   {}\n\t{}\n", record(1), record(2));
    let items = decode(body.as_bytes());
    assert_eq!(
        ok_ids(&items),
        vec![format!("{:056}", 1), format!("{:056}", 2)]
    );
    assert_eq!(errors(&items).len(), 1);
    assert!(errors(&items)[0].contains("line 1"), "{:?}", errors(&items));
}

#[test]
fn a_truncated_object_costs_only_its_own_line() {
    let body = format!(
        "{}\n{{\"log_id\": \"1\", \"data\": {{\"type\": \"ss\", \"user_id\": \n  {}\n\"a bare string\"\n42\n",
        record(1),
        record(2)
    );
    let items = decode(body.as_bytes());
    assert_eq!(
        ok_ids(&items),
        vec![format!("{:056}", 1), format!("{:056}", 2)]
    );
    let errors = errors(&items);
    assert_eq!(
        errors.len(),
        3,
        "the truncated line, the string, the number: {errors:?}"
    );
    assert!(errors[0].contains("truncated JSON") && errors[0].contains("line 2"));
    assert!(errors[1].contains("string"), "{errors:?}");
    assert!(errors[2].contains("number"), "{errors:?}");
}

#[test]
fn a_truncated_first_line_costs_only_itself() {
    let body = format!(
        "{{\"log_id\": \"1\", \"data\": {{\"type\": \"ss\", \"user_id\": \n  {}\n",
        record(2)
    );
    let items = decode(body.as_bytes());
    assert_eq!(ok_ids(&items), vec![format!("{:056}", 2)]);
    assert_eq!(errors(&items).len(), 1, "{:?}", errors(&items));
}

#[test]
fn pretty_printed_documents_and_arrays_still_decode() {
    let pretty = format!(
        "{{\n  \"logs\": [\n    {},\n    {}\n  ]\n}}\n",
        record(1),
        record(2)
    );
    let array = format!("[\n  {},\n  {}\n]\n", record(3), record(4));
    for (body, want) in [(pretty, [1, 2]), (array, [3, 4])] {
        let items = decode(body.as_bytes());
        let want: Vec<String> = want.iter().map(|i| format!("{i:056}")).collect();
        assert_eq!(ok_ids(&items), want, "{body}");
        assert!(errors(&items).is_empty(), "{:?}", errors(&items));
    }
}

#[test]
fn line_numbers_of_many_bad_lines_are_right() {
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(if i % 2 == 0 { "garbage\n" } else { "{\"a\":\n" });
    }
    let errors = errors(&decode(body.as_bytes()));
    assert_eq!(errors.len(), 1000);
    assert!(errors[999].ends_with("line 1000"), "{}", errors[999]);
}

#[test]
fn cloud_events_decode_with_their_profile_in_every_envelope_and_spelling() {
    let created = r#"{"id":"evt_1","spec_version":"1.0","type":"com.auth0.user.created","time":"2026-11-28T10:00:00Z","source":"urn:auth0:acme:users","data":{"object":{"user_id":"google-oauth2|1","email":"a@b.example","email_verified":true,"identities":[{"connection":"google-oauth2","provider":"google-oauth2"}],"app_metadata":{"plan":"pro"}}}}"#;
    let bridged = format!(
        r#"{{"version":"0","detail-type":"anything","source":"aws.partner/auth0.com/acme/auth0.events","detail":{created}}}"#
    );
    for body in [created.to_owned(), bridged, format!("[{created}]")] {
        let items = decode(body.as_bytes());
        let Some(Ok(event)) = items.first() else {
            panic!("{body}: {items:?}");
        };
        assert_eq!(
            event.log_id.as_deref(),
            Some("evt_1"),
            "the CloudEvent id dedups"
        );
        assert_eq!(event.event_type, "user.created");
        assert_eq!(
            event.user(),
            Some("google-oauth2|1"),
            "the bridge keys by it"
        );
        assert_eq!(event.connection.as_deref(), Some("google-oauth2"));
        assert_eq!(event.email(), Some("a@b.example"));
        assert_eq!(event.selection(), Selection::Eligible(Trigger::Signup));
        let profile = event.profile.as_deref().map(|p| p.email_verified);
        assert_eq!(profile, Some(Some(true)));
    }
    let update = |verified: bool| {
        format!(
            r#"{{"id":"evt_2","specversion":"1.0","type":"user.updated","data":{{"object":{{"user_id":"auth0|2","email_verified":{verified}}}}}}}"#
        )
    };
    let selection = |body: String| match decode(body.as_bytes()).first() {
        Some(Ok(event)) => event.selection(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        selection(update(true)),
        Selection::Eligible(Trigger::EmailVerified)
    );
    assert!(matches!(
        selection(update(false)),
        Selection::NotEligible(_)
    ));
    let broken = r#"{"id":"evt_3","specversion":"1.0","type":"user.created","data":{"object":{"email":"x@y.z"}}}"#;
    assert!(matches!(decode(broken.as_bytes()).first(), Some(Err(_))));
}

#[test]
fn organization_member_added_decodes_in_every_envelope_and_spelling() {
    let added = |spelling: &str, version: &str| {
        format!(
            r#"{{"id":"evt_m1","{version}":"1.0","type":"{spelling}","time":"2026-12-01T10:00:00Z","source":"urn:auth0:acme:organizations","data":{{"object":{{"organization":{{"id":"org_abc","name":"acme"}},"user":{{"user_id":"samlp|acme|7"}}}}}}}}"#
        )
    };
    let plain = added("organization.member.added", "specversion");
    let prefixed = added("com.auth0.organization.member.added", "spec_version");
    let bridged = format!(
        r#"{{"version":"0","detail-type":"organization.member.added","source":"aws.partner/auth0.com/acme/auth0.events","detail":{plain}}}"#
    );
    let lines = format!("{plain}\n{prefixed}\n");
    for body in [
        plain.clone(),
        prefixed.clone(),
        bridged,
        format!("[{plain}]"),
        lines,
    ] {
        let items = decode(body.as_bytes());
        assert!(!items.is_empty(), "{body}");
        for item in items {
            let Ok(event) = item else {
                panic!("{body}: {item:?}");
            };
            assert_eq!(event.log_id.as_deref(), Some("evt_m1"));
            assert_eq!(event.event_type, "organization.member.added");
            assert_eq!(event.user(), Some("samlp|acme|7"));
            assert_eq!(event.organization(), Some("org_abc"));
            assert_eq!(event.organization_name.as_deref(), Some("acme"));
            assert!(event.is_cloud_event());
            assert!(
                event.profile.is_none(),
                "no profile: read when a rule needs it"
            );
            assert_eq!(
                event.selection(),
                Selection::Eligible(Trigger::OrganizationMemberAdded)
            );
        }
    }
    let removed = plain.replace("member.added", "member.deleted");
    match decode(removed.as_bytes()).first() {
        Some(Ok(event)) => assert!(matches!(event.selection(), Selection::NotEligible(_))),
        other => panic!("{other:?}"),
    }
    for broken in [
        r#"{"id":"evt_m2","specversion":"1.0","type":"organization.member.added","data":{"object":{"organization":{"id":"org_abc"}}}}"#,
        r#"{"id":"evt_m3","specversion":"1.0","type":"organization.member.added","data":{"object":{"user":{"user_id":"auth0|1"}}}}"#,
        r#"{"id":"evt_m4","specversion":"1.0","type":"organization.member.added"}"#,
    ] {
        match decode(broken.as_bytes()).first() {
            Some(Err(err)) => assert!(err.log_id.is_some(), "{err:?}"),
            other => panic!("{broken}: {other:?}"),
        }
    }
}

#[test]
fn first_logins_of_every_login_success_type_and_fields_only_in_prompts() {
    let login = |code: &str, count: u64| {
        format!(
            r#"{{"log_id":"1","data":{{"type":"{code}","user_id":"auth0|1","connection_id":"","details":{{"prompts":[{{"name":"prompt-authenticate","connection":"corp-azure-ad","connection_id":"con_1","strategy":"waad","strategy_type":"enterprise","stats":{{"loginsCount":{count}}}}}]}}}}}}"#
        )
    };
    for code in ["s", "scoa", "sens"] {
        let items = decode(login(code, 1).as_bytes());
        let Some(Ok(event)) = items.first() else {
            panic!("{code}: {items:?}");
        };
        assert_eq!(
            event.selection(),
            Selection::Eligible(Trigger::FirstLogin),
            "{code}"
        );
        assert_eq!(event.connection.as_deref(), Some("corp-azure-ad"), "{code}");
        assert_eq!(event.connection_id.as_deref(), Some("con_1"));
        assert_eq!(event.strategy.as_deref(), Some("waad"));
        assert_eq!(event.strategy_type.as_deref(), Some("enterprise"));
        let later = decode(login(code, 2).as_bytes());
        assert!(
            matches!(later.first(), Some(Ok(e)) if e.selection() == Selection::NotEligible("later login"))
        );
    }
    // A top-level connection without the strategy: the strategy comes from the prompt of
    // that connection, never from a prompt naming another one.
    let partial = |connection: &str| {
        format!(
            r#"{{"log_id":"1","data":{{"type":"s","user_id":"waad|1","connection":"{connection}","details":{{"stats":{{"loginsCount":1}},"prompts":[{{"name":"prompt-authenticate","connection":"corp-azure-ad","connection_id":"con_1","strategy":"waad","strategy_type":"enterprise"}}]}}}}}}"#
        )
    };
    let Some(Ok(same)) = decode(partial("corp-azure-ad").as_bytes()).pop() else {
        panic!("no event");
    };
    assert_eq!(same.strategy.as_deref(), Some("waad"));
    assert_eq!(same.strategy_type.as_deref(), Some("enterprise"));
    let two_prompts = r#"{"log_id":"1","data":{"type":"s","user_id":"waad|1","connection":"corp-azure-ad","details":{"stats":{"loginsCount":1},"prompts":[{"name":"lock-password-authenticate","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database"},{"name":"prompt-authenticate","connection":"corp-azure-ad","strategy":"waad","strategy_type":"enterprise"}]}}}"#;
    let Some(Ok(second)) = decode(two_prompts.as_bytes()).pop() else {
        panic!("no event");
    };
    assert_eq!(
        second.strategy.as_deref(),
        Some("waad"),
        "the prompt of this connection"
    );
    assert_eq!(second.strategy_type.as_deref(), Some("enterprise"));
    let Some(Ok(other)) = decode(partial("other-idp").as_bytes()).pop() else {
        panic!("no event");
    };
    assert_eq!(other.connection.as_deref(), Some("other-idp"));
    assert_eq!(other.strategy, None);
    assert_eq!(other.strategy_type, None);
}

proptest! {
    #[test]
    fn every_valid_record_decodes_and_every_garbage_line_is_reported_once(
        lines in proptest::collection::vec(
            prop_oneof![
                (0usize..1000).prop_map(Some),
                Just(None),
            ],
            1..40,
        ),
        garbage in "#[ -~]{0,30}",
        indent in "[ \t]{0,3}",
    ) {
        let mut body = String::new();
        let mut want = Vec::new();
        let mut bad = 0;
        for line in &lines {
            match line {
                Some(i) => {
                    body.push_str(&indent);
                    body.push_str(&record(*i));
                    want.push(format!("{i:056}"));
                }
                None => {
                    body.push_str(&garbage);
                    bad += 1;
                }
            }
            body.push('\n');
        }
        let items = decode(body.as_bytes());
        prop_assert_eq!(ok_ids(&items), want);
        prop_assert_eq!(errors(&items).len(), bad);
    }
}

#[test]
fn ids_with_control_characters_or_past_their_limit_are_invalid_and_name_the_field() {
    let signup = |user: &str, org: &str| {
        serde_json::json!({"log_id": "900201", "data": {"type": "ss", "user_id": user, "organization_id": org}})
            .to_string()
    };
    let one = |text: String| decode(text.as_bytes()).remove(0);
    let nul = one(signup("auth0|a\u{0}b", "")).unwrap_err();
    assert_eq!(nul.reason, "user_id holds a control character");
    assert_eq!(nul.log_id.as_deref(), Some("900201"));
    let newline = one(signup("auth0|a\nb", "")).unwrap_err();
    assert_eq!(newline.reason, "user_id holds a control character");
    let long = one(signup(&format!("auth0|{}", "x".repeat(MAX_ID_BYTES)), "")).unwrap_err();
    assert_eq!(
        long.reason,
        format!(
            "user_id is {} bytes long, past the limit of 1024",
            MAX_ID_BYTES + 6
        )
    );
    assert!(one(signup(
        &format!("auth0|{}", "x".repeat(MAX_ID_BYTES - 6)),
        ""
    ))
    .is_ok());
    let org = one(signup("auth0|a", &format!("org_{}", "y".repeat(47)))).unwrap_err();
    assert_eq!(
        org.reason,
        "organization_id is 51 characters long, past the limit of 50"
    );
    assert!(one(signup("auth0|a", "org_W5ymkTLcdzUJqQ3c")).is_ok());
    // Unicode ids are fine; the event id is checked too, and a bad one is not repeated.
    assert!(one(signup("oidc|Ünïcødé-ユーザー", "")).is_ok());
    let bad_id = one(
        serde_json::json!({"log_id": "9002\u{0}", "data": {"type": "s", "user_id": "auth0|a"}})
            .to_string(),
    )
    .unwrap_err();
    assert_eq!(bad_id.reason, "the event id holds a control character");
    assert_eq!(bad_id.log_id, None);
    // Every layout goes through the check: JSON Lines and CloudEvents too.
    let lines = format!(
        "{}\n{}\n",
        signup("auth0|ok", ""),
        signup("auth0|\u{7}", "")
    );
    let items = decode_json_lines(lines.as_bytes(), 1);
    assert!(items[0].is_ok() && items[1].is_err(), "{items:?}");
    let cloud = serde_json::json!({"specversion": "1.0", "id": "evt_1", "type": "user.created", "source": "urn:auth0:t:users", "data": {"object": {"user_id": "auth0|\u{0}"}}});
    assert!(one(cloud.to_string()).is_err());
}

#[test]
fn test_events_are_decided_at_decode_whatever_their_object_and_signup_bodies_tell_their_origin() {
    let one = |text: String| decode(text.as_bytes()).remove(0);
    // The Dashboard's test button: a0purpose "test", the sample user; also a test of a type
    // whose object the service does not read.
    for (kind, object) in [
        (
            "user.created",
            r#"{"user_id":"auth0|507f1f77bcf86cd799439020"}"#,
        ),
        ("organization.member.added", r#"{"unexpected":true}"#),
    ] {
        let raw = format!(
            r#"{{"specversion":"1.0","id":"evt_t","type":"{kind}","source":"urn:auth0:t.sus.auth0.com","data":{{"object":{object}}},"a0purpose":"test","a0stream":"est_1","a0tenant":"t"}}"#
        );
        let event = one(raw).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(event.is_test());
        assert_eq!(event.selection(), Selection::NotEligible(TEST_EVENT));
    }
    let admin = r#"{"log_id":"1","type":"ss","user_id":"auth0|a","client_name":"Auth0 CLI","details":{"body":{"email":"a@example.com","is_signup":false,"password":"*****"}}}"#;
    let event = one(admin.to_owned()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(event.body_is_signup, Some(false));
    assert!(!event.body_signup_request);
    let form = r#"{"log_id":"2","type":"ss","user_id":"auth0|b","details":{"body":{"email":"b@example.com","transaction":{"id":"x"},"request_language":"en"}}}"#;
    let event = one(form.to_owned()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(event.body_is_signup, None);
    assert!(event.body_signup_request);
}
