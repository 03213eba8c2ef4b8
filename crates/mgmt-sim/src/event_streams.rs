//! Event Streams as the tenant shows them: `POST /event-streams` (201, the webhook token
//! write-only), `GET /event-streams`, and `POST /event-streams/{id}/test` (202 with the
//! CloudEvent it generates: `a0purpose: "test"` and a fixed sample user the tenant does not
//! hold). [`test_event`] builds that CloudEvent for tests that deliver it themselves.

use serde_json::{json, Value};

/// The sample user every test event carries (the tenant does not hold it).
pub const TEST_EVENT_USER: &str = "auth0|507f1f77bcf86cd799439020";

/// The CloudEvent `POST /event-streams/{stream_id}/test` generates for `event_type` on the tenant
/// `domain`, as the recorded exchanges show it (`specversion` 1.0, an `evt_` id, the source
/// `urn:auth0:<domain>.sus.auth0.com`, the sample user in `data.object`, `a0purpose: "test"`,
/// `a0stream`, `a0tenant`).
pub fn test_event(domain: &str, stream_id: &str, event_type: &str, id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("urn:auth0:{domain}.sus.auth0.com"),
        "type": event_type,
        "time": "2026-02-01T12:34:56.000Z",
        "data": {"object": {
            "user_id": TEST_EVENT_USER,
            "email": "john.doe@gmail.com",
            "email_verified": false,
            "username": "johndoe",
            "created_at": "2025-02-01T12:34:56Z",
            "updated_at": "2025-02-01T12:34:56Z",
            "identities": [{
                "provider": "auth0",
                "isSocial": false,
                "connection": "Username-Password-Authentication",
                "user_id": "507f1f77bcf86cd799439020",
            }],
            "app_metadata": {"plan": "pro"},
            "user_metadata": {"hobby": "skydiving"},
            "name": "John Doe",
            "logins_count": 42,
            "blocked": false,
        }},
        "a0purpose": "test",
        "a0stream": stream_id,
        "a0tenant": domain,
    })
}
