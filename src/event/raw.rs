//! The one-pass reader of any JSON object of a delivery (`RawLog`): the fields of a bare log and
//! of every wrapper (`data`, `detail`, `logs`), read as raw bytes, and the `LogEvent` it becomes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::envelope::ArrayItem;
use super::lenient::{Count, LenientMap, LenientSeq, LenientString, Text};
use super::model::{is_login_type, is_trigger_type};
use super::*;

/// Any JSON object of a delivery, read in one pass: the fields of a bare log and those of every
/// wrapper (`data`, `detail`, `detail-type`, `logs`). Every field is lenient: a value of an
/// unexpected JSON type reads as absent, so only JSON syntax errors fail a whole delivery.
#[derive(Default)]
pub(super) struct RawLog<'a> {
    log_id: Option<Text<'a>>,
    underscore_id: Option<Text<'a>>,
    pub(super) event_type: Option<Text<'a>>,
    date: Option<Text<'a>>,
    user_id: Option<Text<'a>>,
    user_name: Option<Text<'a>>,
    connection: Option<Text<'a>>,
    connection_id: Option<Text<'a>>,
    strategy: Option<Text<'a>>,
    strategy_type: Option<Text<'a>>,
    client_id: Option<Text<'a>>,
    client_name: Option<Text<'a>>,
    organization_id: Option<Text<'a>>,
    organization_name: Option<Text<'a>>,
    details: LenientMap<Details<'a>>,
    /// `{log_id, data}` record (webhook) or the record inside an EventBridge `detail`.
    pub(super) data: LenientMap<Box<RawLog<'a>>>,
    /// EventBridge: the record (or, after an input transformer, the bare log).
    detail: LenientMap<Box<RawLog<'a>>>,
    /// EventBridge: must be `"Auth0 log"` (a string or, in some samples, a one-item list).
    detail_type: Option<DetailType>,
    /// Custom Webhook "JSON Object" format: `{"logs": [...]}`.
    logs: LenientSeq<ArrayItem<'a>>,
    /// CloudEvent (Auth0 Event Streams): `id` (`evt_...`).
    pub(super) id: Option<Text<'a>>,
    /// CloudEvent: `specversion` or `spec_version` was present.
    cloud_event: bool,
    /// CloudEvent: when it happened.
    pub(super) time: Option<Text<'a>>,
    /// CloudEvent `data.object`: the user profile, kept raw until the envelope is known.
    pub(super) object: Option<&'a RawValue>,
    /// CloudEvent `a0purpose` (`"test"` for test events).
    pub(super) purpose: Option<Text<'a>>,
}

#[derive(Default)]
struct Details<'a> {
    body: LenientMap<Body<'a>>,
    email: Option<Text<'a>>,
    stats: LenientMap<Stats>,
    /// Kept raw: read only when `stats` has no count (most logins carry one at top level).
    prompts: Option<&'a RawValue>,
}

#[derive(Default)]
struct Body<'a> {
    email: Option<Text<'a>>,
    /// `is_signup`, when a boolean.
    is_signup: Option<bool>,
    /// `transaction` or `request_language` present (not null): a signup form's request.
    signup_request: bool,
}

#[derive(Default)]
struct Stats {
    logins_count: Option<u64>,
}

#[derive(Default)]
struct Prompt {
    stats: LenientMap<Stats>,
    connection: Option<String>,
    connection_id: Option<String>,
    strategy: Option<String>,
    strategy_type: Option<String>,
}

/// Reads one known field of a JSON object; `Ok(false)` means "not mine, skip the value".
/// Hand-written rather than derived so keys are matched as raw bytes (no UTF-8 pass per key)
/// and values that cannot matter are skipped unparsed.
trait Fields<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error>;
}

struct FieldsVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for FieldsVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut value = T::default();
        while let Some(key) = map.next_key::<Key>()? {
            if !value.field(&key.0, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

/// An object key as bytes (borrowed when it has no escapes).
struct Key<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        deserializer.deserialize_bytes(KeyVisitor(std::marker::PhantomData))
    }
}

macro_rules! deserialize_with_fields {
    ($($ty:ty),*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_with_fields!(RawLog<'a>, Details<'a>, Body<'a>);

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

pub(super) fn text<'de: 'a, 'a, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Option<Text<'a>>, A::Error> {
    map.next_value::<LenientString<'a>>().map(|s| s.0)
}

impl<'de: 'a, 'a> Fields<'de> for RawLog<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"log_id" => self.log_id = text(map)?,
            b"_id" => self.underscore_id = text(map)?,
            b"type" => self.event_type = text(map)?,
            b"date" => self.date = text(map)?,
            b"user_id" => self.user_id = text(map)?,
            b"user_name" => self.user_name = text(map)?,
            b"connection" => self.connection = text(map)?,
            b"connection_id" => self.connection_id = text(map)?,
            b"strategy" => self.strategy = text(map)?,
            b"strategy_type" => self.strategy_type = text(map)?,
            b"client_id" => self.client_id = text(map)?,
            b"client_name" => self.client_name = text(map)?,
            b"organization_id" => self.organization_id = text(map)?,
            b"organization_name" => self.organization_name = text(map)?,
            b"details" => {
                // `type` precedes `details` in Auth0's records: when it says the event can never
                // trigger, the details are skipped unparsed.
                if self
                    .event_type
                    .as_deref()
                    .is_some_and(|t| !is_trigger_type(t))
                {
                    return Ok(false);
                }
                self.details = map.next_value()?;
            }
            b"data" => self.data = map.next_value()?,
            b"detail" => self.detail = map.next_value()?,
            b"detail-type" => self.detail_type = map.next_value()?,
            b"logs" => self.logs = map.next_value()?,
            b"id" => self.id = text(map)?,
            b"specversion" | b"spec_version" => {
                map.next_value::<IgnoredAny>()?;
                self.cloud_event = true;
            }
            b"time" => self.time = text(map)?,
            b"object" => self.object = map.next_value::<Option<&'a RawValue>>()?,
            b"a0purpose" => self.purpose = text(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de: 'a, 'a> Fields<'de> for Details<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"body" => self.body = map.next_value()?,
            b"email" => self.email = text(map)?,
            b"stats" => self.stats = map.next_value()?,
            b"prompts" => self.prompts = map.next_value::<Option<&'a RawValue>>()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de: 'a, 'a> Fields<'de> for Body<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"email" => self.email = text(map)?,
            b"is_signup" => {
                self.is_signup = match map.next_value::<Option<&'a RawValue>>()?.map(|r| r.get()) {
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    _ => None,
                }
            }
            b"transaction" | b"request_language" => {
                let value = map.next_value::<Option<&'a RawValue>>()?;
                self.signup_request |= value.is_some_and(|r| r.get() != "null");
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Fields<'de> for Stats {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"loginsCount" => self.logins_count = map.next_value::<Count>()?.0,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Fields<'de> for Prompt {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"stats" => self.stats = map.next_value()?,
            b"connection" => self.connection = text(map)?.map(Cow::into_owned),
            b"connection_id" => self.connection_id = text(map)?.map(Cow::into_owned),
            b"strategy" => self.strategy = text(map)?.map(Cow::into_owned),
            b"strategy_type" => self.strategy_type = text(map)?.map(Cow::into_owned),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The login fields of the first prompt naming a connection: some tenants log `connection`,
/// `connection_id`, `strategy` and `strategy_type` only inside `details.prompts[]`.
///
/// `known` is what the top level already says of this login (connection, connection id,
/// strategy): the prompt must agree with each, so fields of two connections are never mixed.
fn prompt_login_fields(prompts: Option<&RawValue>, known: [Option<&str>; 3]) -> Option<Prompt> {
    let raw = prompts?;
    let agrees = |have: Option<&str>, want: Option<&str>| {
        want.is_none_or(|w| w.is_empty() || have == Some(w))
    };
    serde_json::from_str::<LenientSeq<LenientMap<Prompt>>>(raw.get())
        .ok()
        .and_then(|list| list.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.0)
        .filter(|p| p.connection.as_deref().is_some_and(|c| !c.is_empty()))
        .find(|p| {
            agrees(p.connection.as_deref(), known[0])
                && agrees(p.connection_id.as_deref(), known[1])
                && agrees(p.strategy.as_deref(), known[2])
        })
}

/// The login counts of `details.prompts[]`, in order (null and odd values skipped).
fn prompt_counts(prompts: Option<&RawValue>) -> Vec<u64> {
    let Some(raw) = prompts else {
        return Vec::new();
    };
    serde_json::from_str::<LenientSeq<LenientMap<Prompt>>>(raw.get())
        .ok()
        .and_then(|list| list.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.0.and_then(|p| p.stats.0).and_then(|s| s.logins_count))
        .collect()
}

/// `detail-type`: a string, or a list of strings.
#[derive(Default)]
struct DetailType(Vec<String>);

impl<'de> Deserialize<'de> for DetailType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DetailTypeVisitor;
        impl<'de> Visitor<'de> for DetailTypeVisitor {
            type Value = DetailType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<DetailType, E> {
                Ok(DetailType(vec![v.to_owned()]))
            }
            fn visit_bool<E>(self, _: bool) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_unit<E>(self) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DetailType, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(DetailType::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DetailType, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<LenientString>()? {
                    names.extend(name.0.map(Cow::into_owned));
                }
                Ok(DetailType(names))
            }
        }
        deserializer.deserialize_any(DetailTypeVisitor)
    }
}

impl RawLog<'_> {
    fn has_any_log_field(&self) -> bool {
        self.event_type.is_some() || self.log_id.is_some() || self.underscore_id.is_some()
    }

    /// Classifies this object and appends what it holds to `out`. `depth` bounds recursion
    /// through wrappers (a record inside an EventBridge event inside a `logs` list is depth 3).
    pub(super) fn push_items(self, out: &mut Vec<Decoded>, depth: u8) {
        if depth > 4 {
            out.push(Err(DecodeError::new("wrappers nested too deeply", None)));
            return;
        }
        if self.cloud_event {
            out.push(self.into_cloud_event());
            return;
        }
        if let Some(detail_type) = self.detail_type {
            let carries_cloud_event = self.detail.0.as_ref().is_some_and(|d| d.cloud_event);
            if !carries_cloud_event && !detail_type.0.iter().any(|t| t == "Auth0 log") {
                out.push(Err(DecodeError::new(
                    "EventBridge event whose detail-type is not \"Auth0 log\"",
                    None,
                )));
                return;
            }
            match self.detail.0 {
                Some(detail) => detail.push_items(out, depth + 1),
                None => out.push(Err(DecodeError::new(
                    "EventBridge event without a detail object",
                    None,
                ))),
            }
            return;
        }
        if let Some(data) = self.data.0 {
            let first = out.len();
            data.push_items(out, depth + 1);
            let outer_id = self.log_id.or(self.underscore_id);
            for item in &mut out[first..] {
                let log_id = match item {
                    Ok(event) => &mut event.log_id,
                    Err(err) => &mut err.log_id,
                };
                if log_id.is_none() {
                    *log_id = outer_id.as_deref().map(str::to_owned);
                }
            }
            return;
        }
        if let Some(logs) = self.logs.0 {
            for item in logs {
                match item {
                    ArrayItem::Object(raw) => raw.push_items(out, depth + 1),
                    ArrayItem::Other(kind) => out.push(Err(DecodeError::new(
                        format!("logs item is {kind}, not an object"),
                        None,
                    ))),
                }
            }
            return;
        }
        if self.detail.0.is_some() && !self.has_any_log_field() {
            out.push(Err(DecodeError::new(
                "object with a detail but no detail-type \"Auth0 log\"",
                None,
            )));
            return;
        }
        out.push(self.into_event());
    }

    fn into_event(self) -> Decoded {
        let log_id = self.log_id.or(self.underscore_id).map(Cow::into_owned);
        let Some(event_type) = self.event_type.filter(|t| !t.is_empty()) else {
            let reason = if log_id.is_some() {
                "log without a type"
            } else {
                "not an Auth0 log: no type, log_id, data, detail or logs"
            };
            return Err(DecodeError::new(reason, log_id));
        };
        let owned = |text: Option<Text<'_>>| text.map(Cow::into_owned);
        let details = self.details.0.unwrap_or_default();
        let logins_count = details.stats.0.and_then(|s| s.logins_count);
        let login = is_login_type(&event_type);
        let prompt_logins_counts = if logins_count.is_some() || !login {
            Vec::new()
        } else {
            prompt_counts(details.prompts)
        };
        let through_organization = self
            .organization_id
            .as_deref()
            .is_some_and(|o| !o.is_empty());
        let may_trigger = match event_type.as_ref() {
            "ss" | "sv" => true,
            // A later login through an organization may be a membership the ledger has not seen
            // (`LogEvent::organization_login`): it keeps its fields.
            code if is_login_type(code) => {
                through_organization
                    || logins_count.or(prompt_logins_counts.first().copied()) == Some(1)
            }
            _ => false,
        };
        if !may_trigger {
            // Events that cannot trigger (most of a stream) keep only what identifies them and
            // decides their selection: no policy reads the rest.
            return Ok(LogEvent {
                log_id,
                event_type: event_type.into_owned(),
                date: owned(self.date),
                user_id: owned(self.user_id),
                logins_count,
                prompt_logins_counts,
                ..LogEvent::default()
            });
        }
        let present = |text: &Option<Text<'_>>| text.as_deref().is_some_and(|t| !t.is_empty());
        // Each field the top level lacks comes from the first prompt naming a connection that
        // agrees with what the top level says (its connection, connection id, strategy).
        let lacks_any = [
            &self.connection,
            &self.connection_id,
            &self.strategy,
            &self.strategy_type,
        ]
        .into_iter()
        .any(|t| !present(t));
        let from_prompt = if login && lacks_any {
            prompt_login_fields(
                details.prompts,
                [
                    self.connection.as_deref(),
                    self.connection_id.as_deref(),
                    self.strategy.as_deref(),
                ],
            )
            .unwrap_or_default()
        } else {
            Prompt::default()
        };
        let or_prompt = |top: Option<Text<'_>>, prompt: Option<String>| {
            top.filter(|t| !t.is_empty())
                .map(Cow::into_owned)
                .or(prompt)
        };
        Ok(LogEvent {
            log_id,
            event_type: event_type.into_owned(),
            date: owned(self.date),
            user_id: owned(self.user_id),
            user_name: owned(self.user_name),
            connection: or_prompt(self.connection, from_prompt.connection),
            connection_id: or_prompt(self.connection_id, from_prompt.connection_id),
            strategy: or_prompt(self.strategy, from_prompt.strategy),
            strategy_type: or_prompt(self.strategy_type, from_prompt.strategy_type),
            client_id: owned(self.client_id),
            client_name: owned(self.client_name),
            organization_id: owned(self.organization_id),
            organization_name: owned(self.organization_name),
            body_is_signup: details.body.0.as_ref().and_then(|b| b.is_signup),
            body_signup_request: details.body.0.as_ref().is_some_and(|b| b.signup_request),
            body_email: owned(details.body.0.and_then(|b| b.email)),
            details_email: owned(details.email),
            logins_count,
            prompt_logins_counts,
            profile: None,
            member_role: None,
            purpose: None,
        })
    }
}
