//! An incremental Server-Sent Events parser that follows the WHATWG rules: lines end in CRLF,
//! LF or CR (a CR at the end of one read and an LF at the start of the next are one line
//! end); `:` lines are comments; `data:` may lack its space; several `data:` lines join with
//! `\n`; a blank line dispatches. It works on bytes, so events and UTF-8 characters split
//! across reads come out whole.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when one was given.
    pub name: Option<String>,
    pub data: String,
}

/// Refuse a single line longer than this (a stuck upstream must not grow memory forever).
const MAX_LINE_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous read ended in CR: an LF at the start of the next read belongs to it.
    skip_lf: bool,
    name: Option<String>,
    data: String,
    has_data: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), LineTooLong> {
        if self.skip_lf && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.skip_lf = false;
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        Ok(())
    }

    /// End of input: a last event that lacks its blank line is still delivered (upstreams
    /// that close right after `data: [DONE]\n` are common).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
        }
        self.dispatch(out);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.has_data {
            out.push(Event { name: self.name.take(), data: std::mem::take(&mut self.data) });
        }
        self.name = None;
        self.has_data = false;
    }
}

/// `data: <payload>\n\n`
pub fn data_event(payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            p.feed(chunk, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    #[track_caller]
    fn check(input: &str, expected: &[(&str, Option<&str>)]) {
        for piece in [1, 2, 3, 7, input.len().max(1)] {
            let got = parse_in_pieces(input.as_bytes(), piece);
            let got: Vec<(&str, Option<&str>)> = got.iter().map(|e| (e.data.as_str(), e.name.as_deref())).collect();
            assert_eq!(got, expected, "piece size {piece}");
        }
    }

    #[test]
    fn line_endings_comments_and_fields() {
        check("data: a\n\ndata: b\n\n", &[("a", None), ("b", None)]);
        check("data: a\r\n\r\ndata:b\r\n\r\n", &[("a", None), ("b", None)]);
        check("data: a\r\rdata: b\r\r", &[("a", None), ("b", None)]);
        check(": OPENROUTER PROCESSING\n\ndata: x\n\n", &[("x", None)]);
        check("event: ping\ndata: {}\n\n", &[("{}", Some("ping"))]);
        check("data: one\ndata: two\n\n", &[("one\ntwo", None)]);
        check("id: 1\nretry: 5\n\n", &[]);
        check("data: [DONE]\n", &[("[DONE]", None)]);
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let input = "data: {\"c\":\"héllo 世界 🎉\"}\n\n";
        check(input, &[("{\"c\":\"héllo 世界 🎉\"}", None)]);
    }
}
