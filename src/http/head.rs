//! The request head: request line and header fields, parsed with `httparse`, and the body's
//! framing decided by RFC 9112 section 6 with no leniency. Anything two parsers could read two
//! ways (the root of request smuggling) is refused: `Content-Length` together with
//! `Transfer-Encoding`, a repeated or malformed `Content-Length`, a transfer coding other than
//! exactly `chunked`, obs-fold continuation lines, a missing or repeated `Host`.

/// The longest request head (request line and every header field) accepted; longer is 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// The most header fields accepted; more is 431.
pub const MAX_HEADERS: usize = 100;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The request target as sent: path and query, not decoded.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Names lowercased; values as sent (lossily decoded when not UTF-8).
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// Whether the client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before sending the body.
    pub expect_continue: bool,
}

impl Head {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn has_body(&self) -> bool {
        self.framing != Framing::None && self.framing != Framing::Length(0)
    }
}

/// Why a head was refused: each maps to one status and closes the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400, with what was wrong.
    Bad(&'static str),
    /// 431: the head or the number of fields is over the limit.
    TooLarge,
    /// 417: an `Expect` other than `100-continue`.
    Expectation,
    /// 413: a `Content-Length` too large to represent.
    BodyTooLarge,
}

/// Where the head ends in `buf` (the index just past its blank line), looking only at bytes
/// from `from` on, so a head that arrives one byte at a time is scanned once, not once per
/// byte. `from` may point anywhere; the scan backs up three bytes to catch a split `\r\n\r\n`.
pub fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Parses a complete head (`buf` ends at its blank line, as `find_end` found it).
pub fn parse(buf: &[u8]) -> Result<Head, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Bad("only HTTP/1.0 and HTTP/1.1 are served")),
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    }
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default().to_string();
    let minor_version = request.version.unwrap_or(1);
    if !(target.starts_with('/') || (method == "OPTIONS" && target == "*")) {
        return Err(HeadError::Bad("the request target must be a path"));
    }
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    let count = |name: &str| headers.iter().filter(|(n, _)| n == name).count();
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if count("host") > 1 || (minor_version == 1 && count("host") == 0) {
        return Err(HeadError::Bad("an HTTP/1.1 request needs exactly one Host header"));
    }
    let framing = framing(minor_version, &headers)?;
    let tokens = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let connection = tokens("connection");
    let keep_alive = minor_version == 1 && !connection.iter().any(|t| t == "close");
    let expect_continue = match value("expect") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("100-continue") => minor_version == 1,
        Some(_) => return Err(HeadError::Expectation),
    };
    Ok(Head { method, target, minor_version, headers, framing, keep_alive, expect_continue })
}

/// The body's framing (RFC 9112 section 6.3), refusing every ambiguous case.
fn framing(minor_version: u8, headers: &[(String, String)]) -> Result<Framing, HeadError> {
    let lengths: Vec<&str> = headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    let codings: Vec<&str> =
        headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Framing::None),
        ([], [coding]) if minor_version == 1 && coding.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        ([], _) => Err(HeadError::Bad("the only transfer coding accepted is a single 'chunked' (HTTP/1.1)")),
        ([length], []) => content_length(length),
        (_, []) => Err(HeadError::Bad("Content-Length is repeated")),
        (_, _) => Err(HeadError::Bad("Content-Length and Transfer-Encoding together")),
    }
}

/// `1*DIGIT` and nothing else: no sign, no spaces inside, no list, no exponent.
fn content_length(value: &str) -> Result<Framing, HeadError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Bad("Content-Length is not a whole number"));
    }
    value.parse().map(Framing::Length).map_err(|_| HeadError::BodyTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, HeadError> {
        let bytes = text.as_bytes();
        let end = find_end(bytes, 0).expect("a complete head");
        parse(&bytes[..end])
    }

    const GET: &str = "GET /v1/models HTTP/1.1\r\nHost: x\r\n";

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        let text = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(find_end(text, 0), Some(text.len() - 4));
        // Scanning resumes where the previous read ended, even inside the blank line.
        for from in 0..text.len() - 4 {
            assert_eq!(find_end(text, from), Some(text.len() - 4), "from {from}");
        }
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r", 0), None);
        assert_eq!(find_end(b"GET / HTTP/1.1\nHost: x\n\n", 0), Some(24));
    }

    #[test]
    fn an_ordinary_head() {
        let h = head(&format!("{GET}Authorization: Bearer k\r\nX-Thing:  a b \r\n\r\n")).unwrap();
        assert_eq!((h.method.as_str(), h.path(), h.minor_version), ("GET", "/v1/models", 1));
        assert_eq!(h.headers[1], ("authorization".to_string(), "Bearer k".to_string()));
        assert_eq!(h.headers[2].1, "a b");
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive && !h.expect_continue && !h.has_body());
        let h = head("POST /v1/x?y=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!((h.path(), h.framing, h.keep_alive), ("/v1/x", Framing::Length(12), false));
        let h =
            head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue);
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 connections close");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = |extra: &str| head(&format!("POST / HTTP/1.1\r\nHost: x\r\n{extra}\r\n"));
        for extra in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 1e3\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: \r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
        ] {
            assert!(matches!(bad(extra), Err(HeadError::Bad(_))), "{extra:?} must be refused");
        }
        assert!(matches!(head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(HeadError::Bad(_))));
        assert_eq!(bad("Content-Length: 99999999999999999999999\r\n").unwrap_err(), HeadError::BodyTooLarge);
    }

    #[test]
    fn obs_fold_and_other_malformed_heads_are_refused() {
        for text in [
            "POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\n Content-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "G\0T / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(matches!(head(text), Err(HeadError::Bad(_))), "{text:?} must be refused");
        }
        assert_eq!(head(&format!("{GET}Expect: something\r\n\r\n")).unwrap_err(), HeadError::Expectation);
    }

    #[test]
    fn too_many_headers_is_431() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(head(&format!("{GET}{many}\r\n")).unwrap_err(), HeadError::TooLarge);
        let enough: String = (0..MAX_HEADERS - 1).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(head(&format!("{GET}{enough}\r\n")).is_ok());
    }
}

/// Property tests over arbitrary and generated heads (`scripts/fuzz.sh` runs them with more
/// cases).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// The reference: the end of the first blank line (`\n\n` or `\n\r\n`), by brute force.
    fn first_end(buf: &[u8]) -> Option<usize> {
        (1..=buf.len()).find(|&p| buf[..p].ends_with(b"\n\n") || buf[..p].ends_with(b"\n\r\n"))
    }

    /// Bytes made mostly of line ends, so blank lines and near misses are common.
    fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':'), any::<u8>()];
        proptest::collection::vec(byte, 0..64)
    }

    fn header_name() -> impl Strategy<Value = String> {
        "x-[a-zA-Z0-9-]{0,12}"
    }

    /// A field value as `parse` keeps it: visible ASCII, inner spaces, nothing to trim.
    fn header_value() -> impl Strategy<Value = String> {
        "([!-~]+( [!-~]+)*)?"
    }

    /// Case-mixed spellings of a header name.
    fn spelled(name: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
            name.chars().zip(upper).map(|(c, u)| if u { c.to_ascii_uppercase() } else { c }).collect()
        })
    }

    fn render(request_line: &str, fields: &[(String, String)]) -> Vec<u8> {
        let mut text = format!("{request_line}\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        /// `find_end` finds the first blank line, and resuming from where a shorter read left
        /// off (any prefix that had no end) finds the same.
        #[test]
        fn find_end_resumes_anywhere(buf in line_bytes(), k in any::<usize>()) {
            let end = find_end(&buf, 0);
            prop_assert_eq!(end, first_end(&buf));
            let k = k % (buf.len() + 1);
            if find_end(&buf[..k], 0).is_none() {
                prop_assert_eq!(find_end(&buf, k), end, "resumed at {}", k);
            }
        }

        /// Arbitrary bytes never panic, and a head that parses has unambiguous framing: at
        /// most one Content-Length or one Transfer-Encoding, never both.
        #[test]
        fn arbitrary_bytes(prefix in "(GET|POST|OPTIONS) (/|\\*)[ -~]{0,20} HTTP/1\\.[01]\r\n", rest in line_bytes()) {
            for buf in [rest.clone(), [prefix.as_bytes(), &rest[..]].concat()] {
                if let Ok(head) = parse(&buf) {
                    let count = |n: &str| head.headers.iter().filter(|(h, _)| h == n).count();
                    let (lengths, codings) = (count("content-length"), count("transfer-encoding"));
                    prop_assert!(lengths + codings <= 1, "{:?}", head.headers);
                    prop_assert_eq!(head.has_body(), !matches!(head.framing, Framing::None | Framing::Length(0)));
                }
            }
        }

        /// A head built from valid parts parses back to the same method, target and fields.
        #[test]
        fn valid_heads_round_trip(
            method in "[A-Z]{1,10}",
            target in "/[a-zA-Z0-9/._~?=&%-]{0,40}",
            minor in 0u8..2,
            host in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
            fields in proptest::collection::vec((header_name(), header_value()), 0..20),
            host_at in any::<usize>(),
        ) {
            let mut fields = fields;
            fields.insert(host_at % (fields.len() + 1), ("Host".to_string(), host));
            let head = parse(&render(&format!("{method} {target} HTTP/1.{minor}"), &fields)).unwrap();
            prop_assert_eq!(&head.method, &method);
            prop_assert_eq!(&head.target, &target);
            prop_assert_eq!(head.minor_version, minor);
            let want: Vec<(String, String)> = fields.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
            prop_assert_eq!(&head.headers, &want);
            prop_assert_eq!(head.framing, Framing::None);
            prop_assert_eq!(head.keep_alive, minor == 1);
        }

        /// Content-Length with Transfer-Encoding, or Content-Length twice, in any spelling,
        /// with any values, anywhere among other fields: refused as a bad request.
        #[test]
        fn ambiguous_framing_is_refused(
            first in prop_oneof![spelled("content-length"), spelled("transfer-encoding")],
            second in spelled("content-length"),
            values in proptest::collection::vec(prop_oneof![Just("chunked".to_string()), "[0-9]{1,4}", header_value()], 2),
            others in proptest::collection::vec((header_name(), header_value()), 0..6),
            at in proptest::collection::vec(any::<usize>(), 2),
            minor in 0u8..2,
        ) {
            let mut fields = others;
            fields.push(("Host".to_string(), "x".to_string()));
            fields.insert(at[0] % (fields.len() + 1), (first, values[0].clone()));
            fields.insert(at[1] % (fields.len() + 1), (second, values[1].clone()));
            let result = parse(&render(&format!("POST /v1/chat/completions HTTP/1.{minor}"), &fields));
            prop_assert!(matches!(result, Err(HeadError::Bad(_))), "{:?}", result);
        }
    }
}
