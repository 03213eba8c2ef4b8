//! Auth0 tenant-log events: the lenient `LogEvent` model, envelope detection for every delivery
//! shape (bare log, `{log_id, data}` record, EventBridge event, array, `{"logs": [...]}`, JSON
//! Lines) and trigger selection (`ss`, first `s`, `sv`). Pure: no I/O, no async.
//!
//! - `model`: `LogEvent`, `Profile`, `Trigger` and `Selection` (what an event is and whether it
//!   can trigger), the email helpers;
//! - `envelope`: `decode` and the layouts of a delivery (JSON Lines, documents, arrays), the id
//!   checks;
//! - `raw`: the one-pass reader of any object of a delivery (bare log, record, EventBridge,
//!   `{"logs"}`) and the `LogEvent` it becomes;
//! - `cloudevents`: Event Streams CloudEvents (`user.*`, `organization.member.*`);
//! - `lenient`: readers that take a value of an unexpected type as absent.

mod cloudevents;
mod envelope;
mod lenient;
mod model;
mod raw;

pub use envelope::{
    decode, decode_json_lines, first_line_stands_alone, DecodeError, Decoded, MAX_ID_BYTES,
    MAX_ORGANIZATION_ID_CHARS,
};
pub use model::{
    email_domain, looks_like_email, unix_millis, Identity, LogEvent, MemberRole, Profile,
    Selection, Trigger, TEST_EVENT,
};

#[cfg(test)]
mod tests;
