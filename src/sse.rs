//! An incremental Server-Sent Events parser that follows the WHATWG rules: lines end in CRLF,
//! LF or CR (a CR at the end of one read and an LF at the start of the next are one line
//! end); `:` lines are comments; `data:` may lack its space; several `data:` lines join with
//! `\n`; a blank line dispatches. It works on bytes, so events and UTF-8 characters split
//! across reads come out whole.
//! Why each rule matters: docs/upstream-protocols.md, pitfalls 1, 3 and 4.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when one was given.
    pub name: Option<String>,
    pub data: String,
}

/// Refuse a line, or an event's data, longer than this when a read ends (a stuck upstream
/// must not grow memory forever, whether by one endless line or by endless `data:` lines that
/// never reach their blank line).
const MAX_LINE_BYTES: usize = 64 << 20;

#[derive(Debug)]
pub struct Parser {
    /// `MAX_LINE_BYTES`, smaller in tests.
    limit: usize,
    line: Vec<u8>,
    /// The previous read ended in CR: an LF at the start of the next read belongs to it.
    skip_lf: bool,
    name: Option<String>,
    data: String,
    has_data: bool,
}

/// The pending line, or the pending event's data, is over `MAX_LINE_BYTES`.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl Default for Parser {
    fn default() -> Parser {
        Parser::with_limit(MAX_LINE_BYTES)
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    fn with_limit(limit: usize) -> Parser {
        Parser { limit, line: Vec::new(), skip_lf: false, name: None, data: String::new(), has_data: false }
    }

    /// Feeds bytes; complete events are appended to `out`. What is still pending when the
    /// bytes are used up (the unfinished line and the undispatched event's data) is at most
    /// `MAX_LINE_BYTES`, else this is an error and the stream should be dropped.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), LineTooLong> {
        // An empty read leaves a pending CR's LF pending.
        if self.skip_lf && !bytes.is_empty() {
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.skip_lf = false;
        }
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
        if self.line.len() > self.limit || self.data.len() > self.limit {
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

/// Property tests over arbitrary bytes (`scripts/fuzz.sh` runs them with more cases).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Bytes rich in what the parser cares about: line ends, colons, field names, UTF-8.
    fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            Just(b"data".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"event:".to_vec()),
            Just("é世🎉".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    fn feed_at(input: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut p = Parser::new();
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            p.feed(&input[at..cut], &mut out).unwrap();
            at = cut;
        }
        p.finish(&mut out);
        out
    }

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        /// Any input cut at any points (empty reads included) gives the events of one whole read.
        #[test]
        fn splits_change_nothing(input in sse_bytes(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            prop_assert_eq!(feed_at(&input, &cuts), feed_at(&input, &[]));
        }

        /// Arbitrary bytes in one-byte reads: the same events, and each event's data holds no
        /// more than the input's bytes (lossy UTF-8 at most triples a byte into U+FFFD).
        #[test]
        fn byte_by_byte(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let whole = feed_at(&input, &[]);
            let cuts: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&feed_at(&input, &cuts), &whole);
            let data: usize = whole.iter().map(|e| e.data.len()).sum();
            prop_assert!(data <= 3 * input.len());
        }

        /// What a parser holds between reads never exceeds its limit (scaled down here from
        /// 64 MiB): once the unfinished line or the undispatched event's data is over it, the
        /// feed is an error, not growth; under it, never an error.
        #[test]
        fn pending_bytes_are_bounded(
            input in sse_bytes(),
            lines in proptest::collection::vec(0usize..64, 0..32),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            const LIMIT: usize = 48;
            // Arbitrary input, then endless-looking `data:` lines with no blank line between.
            let mut input = input;
            for n in lines {
                input.extend_from_slice(b"data:");
                input.extend(std::iter::repeat_n(b'x', n));
                input.push(b'\n');
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = Parser::with_limit(LIMIT);
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                let result = p.feed(&input[at..cut], &mut out);
                let over = p.line.len() > LIMIT || p.data.len() > LIMIT;
                prop_assert_eq!(result.is_err(), over);
                if over {
                    break;
                }
                at = cut;
            }
        }

        /// One endless line: refused once the bytes pending pass the limit, whatever the reads.
        #[test]
        fn endless_line_is_refused(piece in 1usize..40) {
            const LIMIT: usize = 1000;
            let mut p = Parser::with_limit(LIMIT);
            let mut out = Vec::new();
            let mut fed = 0;
            loop {
                let result = p.feed(&[b'x'; 40][..piece], &mut out);
                fed += piece;
                prop_assert!(p.line.len() <= LIMIT + piece);
                if result.is_err() {
                    prop_assert!(fed > LIMIT && fed <= LIMIT + piece);
                    break;
                }
            }
        }
    }

    /// Regression: an empty read between a CR and its LF made the LF a second line end (a
    /// blank line, dispatching an event too early).
    #[test]
    fn empty_read_between_cr_and_lf() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for piece in [&b"data: a\r"[..], b"", b"\ndata: b\n\n"] {
            p.feed(piece, &mut out).unwrap();
        }
        assert_eq!(out, [Event { name: None, data: "a\nb".into() }]);
    }

    /// Regression: `data:` lines without their blank line used to grow the event forever,
    /// since only the unfinished line was checked against the limit.
    #[test]
    fn endless_event_is_refused() {
        let mut p = Parser::with_limit(100);
        let mut out = Vec::new();
        let refused = (0..100).any(|_| p.feed(b"data: xxxxxxxx\n", &mut out).is_err());
        assert!(refused && out.is_empty());
    }
}
