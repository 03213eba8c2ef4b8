//! Envelope detection: the layout of a delivery (JSON Lines or documents), its top-level values
//! (objects, arrays) and the id checks every decoded event passes.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::raw::RawLog;
use super::*;

/// Why one value of a delivery could not become a `LogEvent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// Short, PII-free reason (safe to log and to put in a dead-letter header).
    pub reason: String,
    /// The log id, when it could be read despite the error.
    pub log_id: Option<String>,
}

impl DecodeError {
    pub fn new(reason: impl Into<String>, log_id: Option<String>) -> Self {
        DecodeError {
            reason: reason.into(),
            log_id,
        }
    }
}

/// One item of a decoded delivery.
pub type Decoded = Result<LogEvent, DecodeError>;

/// Decodes the bytes of one delivery (a Kafka record, an SQS body, a file, a webhook body) into
/// its events, in input order. Never panics and never drops a value silently: every value that
/// is not an Auth0 log becomes a `DecodeError`.
///
/// Two layouts are told apart by the first value:
/// - **JSON Lines** (the first value fits on its first line, or does not parse): every line
///   stands alone. A malformed line yields exactly one `invalid` item naming its line, whatever
///   follows it (indented records, bare strings, numbers), and every other line is decoded.
/// - **Documents** (the first value spans lines: a pretty-printed object or array): values are
///   read one after another; after a syntax error, reading resumes at the next line that opens a
///   value.
pub fn decode(bytes: &[u8]) -> Vec<Decoded> {
    // Room for one event: most deliveries (a Kafka record, an SQS body) hold one, and a
    // `Decoded` is several hundred bytes: the default first capacity of four would allocate
    // past the allocator's small-size caches for every message.
    let mut out = Vec::with_capacity(1);
    if decode_lines(bytes, 1, &mut out) == Layout::Document {
        // The first line opens a value it does not close: a pretty-printed document when
        // that value parses across lines, else a truncated first line of JSON Lines.
        out = if first_value_parses(bytes) {
            let mut documents = Vec::new();
            decode_documents(bytes, &mut documents);
            documents
        } else {
            decode_json_lines(bytes, 1)
        };
    }
    if out.is_empty() {
        out.push(Err(DecodeError::new("empty payload: no JSON value", None)));
    }
    out.into_iter().map(checked_ids).collect()
}

/// Whether the first JSON value of `bytes` parses.
fn first_value_parses(bytes: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<de::IgnoredAny>();
    matches!(values.next(), Some(Ok(_)))
}

/// The lines of `bytes` (without their `\n`), found with SIMD `memchr`: a one-record Kafka
/// message costs one fast scan, not a byte-by-byte split.
pub(super) fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', bytes);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match ends.next() {
            Some(end) => {
                let line = &bytes[start..end];
                start = end + 1;
                Some(line)
            }
            None => {
                done = true;
                Some(&bytes[start..])
            }
        }
    })
}

/// What the first non-blank line says of an input's layout.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    JsonLines,
    /// Its first value goes on past the first line: a pretty-printed document or array.
    Document,
}

/// Whether `line`, the first non-blank line of an input, stands alone: every value on it
/// parses, or it is broken beyond repair. `false` when a value starts on it and goes on past its
/// end (a pretty-printed document), which only the whole input can decode.
pub fn first_line_stands_alone(line: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(line).into_iter::<de::IgnoredAny>();
    loop {
        match values.next() {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(err)) => return !err.is_eof(),
        }
    }
}

/// Decodes complete JSON Lines (each non-blank line on its own); `first_line` is the number of
/// the first line of `bytes` in its input, for error messages. For inputs read in chunks.
pub fn decode_json_lines(bytes: &[u8], first_line: usize) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut seen_a_line = true;
    decode_lines_after(bytes, first_line, &mut out, &mut seen_a_line);
    out.into_iter().map(checked_ids).collect()
}

/// The longest user id or event id accepted, in bytes. Auth0 publishes no maximum for user
/// ids (its OpenAPI description names a `user-id-with-max-length` format without a number);
/// real ones are `provider|id`, well under 200 bytes. 1 KB is generous and keeps a record far
/// from the database's limits (PostgreSQL refuses index entries past about 2.7 KB).
pub const MAX_ID_BYTES: usize = 1024;

/// The longest organization id accepted, in characters: Auth0's OpenAPI description of
/// organizations gives ids at most 50 characters (`org_` and 16 characters in practice).
pub const MAX_ORGANIZATION_ID_CHARS: usize = 50;

/// An event whose ids the ledger or the Management API could not take is `invalid` here, at
/// decode time: a `user_id`, `organization_id` or event id with a control character (a NUL
/// makes every PostgreSQL statement naming it fail) or past its length limit
/// ([`MAX_ID_BYTES`], [`MAX_ORGANIZATION_ID_CHARS`]). The reason names the field, never the
/// value.
fn checked_ids(decoded: Decoded) -> Decoded {
    let event = decoded?;
    let problem = id_problem("user_id", event.user_id.as_deref(), MAX_ID_BYTES, false)
        .or_else(|| {
            id_problem(
                "organization_id",
                event.organization_id.as_deref(),
                MAX_ORGANIZATION_ID_CHARS,
                true,
            )
        })
        .or_else(|| id_problem("the event id", event.log_id.as_deref(), MAX_ID_BYTES, false));
    match problem {
        None => Ok(event),
        Some(reason) => {
            // The id itself may be the problem: it goes into the dead letter only when clean.
            let log_id = event
                .log_id
                .filter(|id| id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control));
            Err(DecodeError::new(reason, log_id))
        }
    }
}

/// What is wrong with an id, if anything (`chars`: the limit counts characters, else bytes).
fn id_problem(field: &str, id: Option<&str>, limit: usize, chars: bool) -> Option<String> {
    let id = id?;
    if id.chars().any(char::is_control) {
        return Some(format!("{field} holds a control character"));
    }
    let (length, unit) = if chars {
        (id.chars().count(), "characters")
    } else {
        (id.len(), "bytes")
    };
    (length > limit).then(|| format!("{field} is {length} {unit} long, past the limit of {limit}"))
}

/// JSON Lines: each non-blank line is decoded on its own (one parse per line). Stops at once
/// with `Layout::Document`, having decoded nothing, when the first non-blank line holds the
/// beginning of a value that goes on past it.
fn decode_lines(bytes: &[u8], first_line: usize, out: &mut Vec<Decoded>) -> Layout {
    let mut seen_a_line = false;
    decode_lines_after(bytes, first_line, out, &mut seen_a_line)
}

fn decode_lines_after(
    bytes: &[u8],
    first_line: usize,
    out: &mut Vec<Decoded>,
    seen_a_line: &mut bool,
) -> Layout {
    for (index, line) in lines(bytes).enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let first = !*seen_a_line;
        *seen_a_line = true;
        let mut values = serde_json::Deserializer::from_slice(line).into_iter::<TopLevel>();
        // The line's items go straight into `out` (no vector of their own per line); a line
        // that fails is taken back out whole.
        let line_start = out.len();
        let failed = loop {
            match values.next() {
                None => break None,
                Some(Ok(value)) => value.push_items(out),
                Some(Err(err)) => break Some(err),
            }
        };
        match failed {
            Some(err) if first && err.is_eof() => {
                out.truncate(line_start);
                return Layout::Document;
            }
            None => {}
            Some(err) => {
                out.truncate(line_start);
                out.push(Err(DecodeError::new(
                    syntax_reason(&err, first_line + index),
                    None,
                )));
            }
        }
    }
    Layout::JsonLines
}

/// Documents: a stream of values; after a syntax error, on from the next line opening a value.
/// Line numbers are counted incrementally (each byte is looked at once).
fn decode_documents(bytes: &[u8], out: &mut Vec<Decoded>) {
    let mut lines = LineCounter::default();
    let mut start = 0usize;
    while start < bytes.len() {
        let rest = &bytes[start..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<TopLevel>();
        loop {
            match stream.next() {
                None => {
                    start = bytes.len();
                    break;
                }
                Some(Ok(value)) => value.push_items(out),
                Some(Err(err)) => {
                    let offset = stream.byte_offset();
                    let value_start = start + skip_whitespace(rest, offset);
                    let line = lines.line_of(bytes, value_start);
                    out.push(Err(DecodeError::new(syntax_reason(&err, line), None)));
                    start += resume_point(rest, offset);
                    break;
                }
            }
        }
    }
}

/// The line of a byte position, for positions asked in increasing order.
#[derive(Default)]
struct LineCounter {
    position: usize,
    line: usize,
}

impl LineCounter {
    fn line_of(&mut self, bytes: &[u8], position: usize) -> usize {
        let position = position.min(bytes.len());
        if position >= self.position {
            self.line += bytes[self.position..position]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.position = position;
        }
        self.line + 1
    }
}

fn syntax_reason(err: &serde_json::Error, line: usize) -> String {
    let kind = match err.classify() {
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "unexpected JSON value",
        serde_json::error::Category::Io => "unreadable input",
    };
    format!("{kind} in the value starting on line {line}")
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// After a syntax error in a document stream, where to start again: the first line after the
/// start of the broken value whose first byte opens a JSON value.
fn resume_point(rest: &[u8], stream_offset: usize) -> usize {
    let mut i = skip_whitespace(rest, stream_offset);
    while i < rest.len() {
        if rest[i] == b'\n' && matches!(rest.get(i + 1), Some(b'{' | b'[')) {
            return i + 1;
        }
        i += 1;
    }
    rest.len()
}

/// A top-level JSON value of a delivery: one object or an array of values.
enum TopLevel<'a> {
    Object(Box<RawLog<'a>>),
    Array(Vec<ArrayItem<'a>>),
    Other(&'static str),
}

impl TopLevel<'_> {
    fn push_items(self, out: &mut Vec<Decoded>) {
        match self {
            TopLevel::Object(raw) => raw.push_items(out, 0),
            TopLevel::Array(items) => {
                if items.is_empty() {
                    return;
                }
                for item in items {
                    match item {
                        ArrayItem::Object(raw) => raw.push_items(out, 1),
                        ArrayItem::Other(kind) => out.push(Err(DecodeError::new(
                            format!("array item is {kind}, not an object"),
                            None,
                        ))),
                    }
                }
            }
            TopLevel::Other(kind) => out.push(Err(DecodeError::new(
                format!("JSON value is {kind}, not an Auth0 log object"),
                None,
            ))),
        }
    }
}

pub(super) enum ArrayItem<'a> {
    Object(Box<RawLog<'a>>),
    Other(&'static str),
}

fn kind_of_scalar<E>(kind: &'static str) -> Result<&'static str, E> {
    Ok(kind)
}

/// Visits any JSON value; objects are read as `RawLog`, arrays as items, scalars are named.
macro_rules! scalar_visits {
    ($wrap:path) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            kind_of_scalar("a boolean").map($wrap)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            kind_of_scalar("a string").map($wrap)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            kind_of_scalar("null").map($wrap)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            kind_of_scalar("null").map($wrap)
        }
    };
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            scalar_visits!(TopLevel::Other);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel<'de>, A::Error> {
                RawLog::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|raw| TopLevel::Object(Box::new(raw)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<ArrayItem>()? {
                    items.push(item);
                }
                Ok(TopLevel::Array(items))
            }
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ArrayItem<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
            type Value = ArrayItem<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            scalar_visits!(ArrayItem::Other);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ArrayItem<'a>, A::Error> {
                RawLog::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|raw| ArrayItem::Object(Box::new(raw)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArrayItem<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ArrayItem::Other("an array"))
            }
        }
        deserializer.deserialize_any(ItemVisitor(std::marker::PhantomData))
    }
}
