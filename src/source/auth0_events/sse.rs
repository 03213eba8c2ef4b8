//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` format) over the
//! chunks a response body arrives in: bytes in, complete items out, whatever the chunk
//! boundaries (a line, a CRLF, a UTF-8 character may be split anywhere).
//!
//! What it follows of the format: lines end in LF, CRLF or CR; a blank line ends a message; a
//! line starting with `:` is a comment; `field: value` with one leading space of the value
//! dropped; `data` lines are joined with `\n`; an `id` containing NUL is ignored; `retry` takes
//! only digits; a BOM at the very start is skipped; unknown fields are ignored. Where it differs
//! from a browser: a message with an `id` or an `event` but no `data` is still handed out (so
//! an offset is never dropped). A message the stream ends inside (no blank line after it) is
//! dropped, as a browser does: the reader reconnects from the offset before it and the server
//! sends it again.
//!
//! A line longer than [`MAX_LINE`] is not kept: the message it belongs to is handed out with
//! `oversized` set (its data is incomplete), so one bad message costs its own place only.

/// The longest line kept (1 MiB): a CloudEvent with a full profile is a few kilobytes.
pub const MAX_LINE: usize = 1 << 20;

/// One complete message of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event` field (`None`: the default type, "message").
    pub event: Option<String>,
    /// The `id` field of this message, when it had one.
    pub id: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// A line of this message was longer than [`MAX_LINE`] and was dropped.
    pub oversized: bool,
}

/// What the parser hands out, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Message(SseMessage),
    /// `retry: <ms>`: the reconnection delay the server asks for.
    Retry(u64),
    /// A comment line (`:connected`, `: heartbeat`), without its colon.
    Comment(String),
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line being read (no terminator).
    line: Vec<u8>,
    /// The last chunk ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    /// The current line went past [`MAX_LINE`]: its bytes are dropped until its end.
    discarding: bool,
    /// The first line has ended (a BOM is skipped only before it).
    past_first_line: bool,
    /// The message being built.
    message: SseMessage,
    /// Its `data` lines so far.
    data_lines: usize,
    /// Whether it has any field yet.
    has_fields: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Parses `chunk`, returning the items it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            self.push_bytes(&rest[..at]);
            let ended_by_cr = rest[at] == b'\r';
            rest = &rest[at + 1..];
            if ended_by_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(&mut out);
        }
        self.push_bytes(rest);
        out
    }

    /// The stream ended: a message it ended inside is dropped (see the module's doc).
    pub fn finish(&mut self) {
        *self = SseParser::default();
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.discarding || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.discarding = true;
            self.line = Vec::new();
            self.message.oversized = true;
            self.has_fields = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let first = !std::mem::replace(&mut self.past_first_line, true);
        if std::mem::take(&mut self.discarding) {
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        if first && line.starts_with(b"\xEF\xBB\xBF") {
            line.drain(..3);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if let Some(comment) = text.strip_prefix(':') {
            out.push(SseItem::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => {
                self.message.event = Some(value.to_owned());
                self.has_fields = true;
            }
            "data" => {
                if self.data_lines > 0 {
                    self.message.data.push('\n');
                }
                self.message.data.push_str(value);
                self.data_lines += 1;
                self.has_fields = true;
            }
            "id" if !value.contains('\0') => {
                self.message.id = Some(value.to_owned());
                self.has_fields = true;
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    out.push(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if std::mem::take(&mut self.has_fields) {
            out.push(SseItem::Message(std::mem::take(&mut self.message)));
        }
        self.message = SseMessage::default();
        self.data_lines = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.feed(c)).collect()
    }

    fn message(event: Option<&str>, id: Option<&str>, data: &str) -> SseItem {
        SseItem::Message(SseMessage {
            event: event.map(str::to_owned),
            id: id.map(str::to_owned),
            data: data.to_owned(),
            oversized: false,
        })
    }

    #[test]
    fn auth0s_documented_stream_parses_to_its_messages() {
        let stream = b":connected\n\nretry: 2000\n\nevent: user.created\nid: MTIz\ndata: {\"offset\":\"MTIz\"}\n\nevent: offset-only\nid: 4Lcu\ndata: {\"offset\":\"4Lcu\"}\n\n: heartbeat\n\n";
        assert_eq!(
            parse_all(&[stream]),
            vec![
                SseItem::Comment("connected".to_owned()),
                SseItem::Retry(2000),
                message(Some("user.created"), Some("MTIz"), "{\"offset\":\"MTIz\"}"),
                message(Some("offset-only"), Some("4Lcu"), "{\"offset\":\"4Lcu\"}"),
                SseItem::Comment("heartbeat".to_owned()),
            ]
        );
    }

    #[test]
    fn line_endings_multiline_data_bom_and_odd_fields() {
        let stream = b"\xEF\xBB\xBFdata:a\r\ndata: b\rid\r\nretry: x\nunknown: 1\n\nid: with\0nul\nevent:e\n\n";
        assert_eq!(
            parse_all(&[stream]),
            vec![
                message(None, Some(""), "a\nb"),
                message(Some("e"), None, "")
            ]
        );
    }

    #[test]
    fn a_message_the_stream_ends_inside_is_dropped() {
        let mut parser = SseParser::new();
        assert!(parser
            .feed(b"event: user.created\nid: 1\ndata: {")
            .is_empty());
        parser.finish();
        assert_eq!(
            parser.feed(b"id: 2\ndata: x\n\n"),
            vec![message(None, Some("2"), "x")]
        );
    }

    #[test]
    fn an_oversized_line_marks_its_message_and_spares_the_next() {
        let mut parser = SseParser::new();
        let big = vec![b'x'; MAX_LINE + 10];
        let mut items = parser.feed(b"id: 1\ndata: ");
        items.extend(parser.feed(&big));
        items.extend(parser.feed(b"\n\nid: 2\ndata: ok\n\n"));
        assert_eq!(
            items,
            vec![
                SseItem::Message(SseMessage {
                    event: None,
                    id: Some("1".to_owned()),
                    data: String::new(),
                    oversized: true,
                }),
                message(None, Some("2"), "ok"),
            ]
        );
    }

    /// A stream of messages, comments and retries in the many spellings the format allows.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            (
                proptest::option::of("[a-z.\\-]{1,12}"),
                proptest::option::of("[A-Za-z0-9=+/]{0,12}"),
                proptest::collection::vec("[ -~é€]{0,20}", 0..3),
            )
                .prop_map(|(event, id, data)| {
                    let mut text = String::new();
                    if let Some(event) = event {
                        text.push_str(&format!("event: {event}\n"));
                    }
                    if let Some(id) = id {
                        text.push_str(&format!("id:{id}\r\n"));
                    }
                    for line in data {
                        text.push_str(&format!("data: {line}\r"));
                    }
                    text.push_str("\n\n");
                    text
                }),
            "[ -~]{0,10}".prop_map(|c| format!(":{c}\n")),
            (0u32..100_000).prop_map(|ms| format!("retry: {ms}\n")),
            Just("\r\n".to_owned()),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| {
            let mut bytes = b"\xEF\xBB\xBF".to_vec();
            bytes.extend(pieces.concat().into_bytes());
            bytes
        })
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_parses_to_the_same_items(
            bytes in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = parse_all(&[&bytes]);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in at {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(parse_all(&chunks), whole);
        }

        #[test]
        fn byte_by_byte_parses_to_the_same_items(bytes in stream()) {
            let whole = parse_all(&[&bytes]);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(parse_all(&singles), whole);
        }
    }
}
