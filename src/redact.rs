//! Secret redaction for everything that leaves the process. A `Redactor` is built from every
//! configured secret (provider keys, `PROXY_API_KEY` and OAuth tokens) and removes any run of eight or more
//! characters of any secret, ASCII case-insensitively, wherever it appears: a key echoed whole,
//! cut short, upper-cased or from its middle on is caught alike.
//!
//! How: the set of every 8-byte window of every secret (lowercased, packed in a `u64`) is a hash
//! set; the input's windows are looked up one by one, each matching window marks its 8 bytes,
//! and each marked run becomes `[REDACTED]`. One pass over the input, one lookup per window
//! whose bytes all occur in some secret: the cost does not grow with the number of keys.
//!
//! Secrets shorter than 8 characters have no window; they are redacted where they appear whole
//! (case-insensitively) as a word of their own, that is between bytes that could not continue a
//! key (see `is_word`). A key that short is hardly a secret, and redacting every occurrence of,
//! say, `abc` inside other words would mangle answers.
//!
//! Matches never cross a byte that is not a word byte, so text can be redacted in pieces cut
//! after such a byte (`RedactingReader` relies on this).
//!
//! The global instance (`install`, `current`, `text`, `bytes`) is what the logger, the upstream
//! client and the request log use; `lib::run` installs it once the config is loaded and
//! `AppState::reload` again on SIGHUP.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

/// Runs shorter than this are not redacted (except whole short secrets).
const WINDOW: usize = 8;

/// What a redacted run becomes. Keys are made of letters, digits and `-_.`, so a marked run
/// never holds a `"` or `\` and replacing it keeps JSON (and SSE framing) valid.
const REPLACEMENT: &[u8] = b"[REDACTED]";

/// Every secret's windows and whole short secrets, and the byte classes the scan needs.
#[derive(Clone)]
pub struct Redactor {
    windows: HashSet<u64, BuildHasherDefault<WindowHasher>>,
    short: HashSet<Vec<u8>>,
    /// Bytes that occur in some secret, both ASCII cases.
    in_secret: [bool; 256],
    /// Bytes that may continue a key: ASCII letters, digits, `-`, `_` and every secret byte.
    word: [bool; 256],
}

impl Redactor {
    /// A redactor for `secrets` (empty ones are ignored).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut r = Redactor {
            windows: HashSet::default(),
            short: HashSet::new(),
            in_secret: [false; 256],
            word: [false; 256],
        };
        for b in 0..=255u8 {
            r.word[b as usize] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        }
        r.add(secrets);
        r
    }

    /// Learns more secrets (empty ones are ignored).
    fn add<'a>(&mut self, secrets: impl IntoIterator<Item = &'a str>) {
        let r = self;
        for secret in secrets.into_iter().map(str::as_bytes).filter(|s| !s.is_empty()) {
            for &b in secret {
                for c in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                    r.in_secret[c as usize] = true;
                    r.word[c as usize] = true;
                }
            }
            if secret.len() < WINDOW {
                r.short.insert(secret.to_ascii_lowercase());
            }
            for w in secret.windows(WINDOW) {
                r.windows.insert(pack(w));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.short.is_empty()
    }

    /// Whether `b` could continue a key: no match crosses a byte for which this is false.
    pub fn is_word(&self, b: u8) -> bool {
        self.word[b as usize]
    }

    /// `input` with every match replaced; borrowed when nothing matched.
    pub fn bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let runs = self.marks(input);
        if runs.is_empty() {
            return Cow::Borrowed(input);
        }
        let mut out = Vec::with_capacity(input.len());
        let mut at = 0;
        for (start, end) in runs {
            out.extend_from_slice(&input[at..start]);
            out.extend_from_slice(REPLACEMENT);
            at = end;
        }
        out.extend_from_slice(&input[at..]);
        Cow::Owned(out)
    }

    /// `input` with every match replaced; borrowed when nothing matched. A secret with
    /// non-ASCII characters could be cut inside a character; that piece becomes U+FFFD.
    pub fn text<'a>(&self, input: &'a str) -> Cow<'a, str> {
        match self.bytes(input.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(input),
            Cow::Owned(out) => Cow::Owned(
                String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// The byte ranges to replace, sorted and disjoint.
    fn marks(&self, input: &[u8]) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        if self.is_empty() {
            return runs;
        }
        if !self.windows.is_empty() {
            self.mark_windows(input, &mut runs);
        }
        if !self.short.is_empty() {
            self.mark_short(input, &mut runs);
        }
        runs
    }

    /// Marks every 8-byte window found in some secret; windows come in order, so a new one
    /// either extends the last run or starts a new one.
    fn mark_windows(&self, input: &[u8], runs: &mut Vec<(usize, usize)>) {
        let mut packed = 0u64;
        let mut run = 0usize;
        for (i, &b) in input.iter().enumerate() {
            if !self.in_secret[b as usize] {
                run = 0;
                continue;
            }
            packed = (packed << 8) | u64::from(b.to_ascii_lowercase());
            run += 1;
            if run >= WINDOW && self.windows.contains(&packed) {
                let start = i + 1 - WINDOW;
                match runs.last_mut() {
                    Some(last) if last.1 >= start => last.1 = i + 1,
                    _ => runs.push((start, i + 1)),
                }
            }
        }
    }

    /// Marks whole words equal to a short secret, and merges them into `runs`.
    fn mark_short(&self, input: &[u8], runs: &mut Vec<(usize, usize)>) {
        let mut found = Vec::new();
        let mut start = 0;
        for end in 0..=input.len() {
            if end < input.len() && self.word[input[end] as usize] {
                continue;
            }
            let len = end - start;
            if len > 0 && len < WINDOW && self.short.contains(&input[start..end].to_ascii_lowercase()) {
                found.push((start, end));
            }
            start = end + 1;
        }
        if found.is_empty() {
            return;
        }
        runs.extend(found);
        runs.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
        for &(s, e) in runs.iter() {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *runs = merged;
    }
}

/// Eight bytes, lowercased, as one number.
fn pack(window: &[u8]) -> u64 {
    window.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b.to_ascii_lowercase()))
}

/// The windows are already well spread 64-bit numbers; a multiply and a fold is all the
/// hashing they need (SipHash would cost more than the rest of the scan).
#[derive(Default)]
struct WindowHasher(u64);

impl Hasher for WindowHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A reader that redacts what passes through it, without delaying complete lines: it holds
/// back only the trailing run of word bytes (a match might continue in the next read), and a
/// byte such as `\n` or `"` ends every run. A run longer than `HOLD_LIMIT` (a base64 blob) is
/// let through at that point; a secret that straddles exactly that forced cut can leave fewer
/// than 8 of its characters unredacted on each side.
pub struct RedactingReader<R> {
    inner: R,
    redactor: Arc<Redactor>,
    /// Read, not yet redacted: a trailing run of word bytes.
    held: Vec<u8>,
    /// Redacted, not yet handed out, from `at` on.
    ready: Vec<u8>,
    at: usize,
    eof: bool,
}

/// The longest run of word bytes held back while waiting for its end.
pub const HOLD_LIMIT: usize = 64 << 10;

impl<R: Read> RedactingReader<R> {
    pub fn new(inner: R, redactor: Arc<Redactor>) -> RedactingReader<R> {
        RedactingReader { inner, redactor, held: Vec::new(), ready: Vec::new(), at: 0, eof: false }
    }

    /// Moves what can be redacted now from `held` to `ready`.
    fn settle(&mut self) {
        let cut = if self.eof || self.held.len() > HOLD_LIMIT {
            self.held.len()
        } else {
            self.held.iter().rposition(|&b| !self.redactor.is_word(b)).map_or(0, |k| k + 1)
        };
        if cut > 0 {
            self.ready.clear();
            self.at = 0;
            self.ready.extend_from_slice(&self.redactor.bytes(&self.held[..cut]));
            self.held.drain(..cut);
        }
    }
}

impl<R: Read> Read for RedactingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut scratch = [0u8; 16 << 10];
        loop {
            if self.at < self.ready.len() {
                let n = buf.len().min(self.ready.len() - self.at);
                buf[..n].copy_from_slice(&self.ready[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            let n = self.inner.read(&mut scratch)?;
            self.eof = n == 0;
            self.held.extend_from_slice(&scratch[..n]);
            self.settle();
        }
    }
}

static GLOBAL: LazyLock<RwLock<Arc<Redactor>>> = LazyLock::new(|| RwLock::new(Arc::new(Redactor::new([]))));

/// Makes `redactor` (`Config::redactor`: every configured secret) the one every later
/// redaction uses.
pub fn install(redactor: Redactor) {
    *GLOBAL.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(redactor);
}

/// Adds secrets learned after start-up (the tokens a refresh brought) to the installed ones.
pub fn learn<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    let mut global = GLOBAL.write().unwrap_or_else(PoisonError::into_inner);
    let mut grown = (**global).clone();
    grown.add(secrets);
    *global = Arc::new(grown);
}

/// The redactor in force now.
pub fn current() -> Arc<Redactor> {
    GLOBAL.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// `text` with every configured secret removed.
pub fn text(text: &str) -> Cow<'_, str> {
    current().text(text)
}

/// `bytes` with every configured secret removed.
pub fn bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    current().bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "sk-live-Ab12Cd34Ef56Gh78";
    const KEY_B: &str = "AIzaSyQ9w8e7r6t5y4u3i2o1";

    fn redactor() -> Redactor {
        Redactor::new([KEY_A, KEY_B, "pxy42"])
    }

    /// Every form an upstream was seen to echo a key in.
    fn mutilations(key: &str) -> Vec<String> {
        vec![key.to_string(), key[..key.len() - 1].to_string(), key.to_ascii_uppercase(), key[5..].to_string()]
    }

    fn assert_clean(out: &str, key: &str) {
        let lower = out.to_ascii_lowercase();
        for w in key.as_bytes().windows(WINDOW) {
            let w = std::str::from_utf8(w).unwrap().to_ascii_lowercase();
            assert!(!lower.contains(&w), "{w:?} survived in {out:?}");
        }
    }

    #[test]
    fn every_mutilation_is_redacted() {
        let r = redactor();
        for key in [KEY_A, KEY_B] {
            for form in mutilations(key) {
                let text = format!(r#"{{"error":{{"message":"Incorrect API key provided: {form}. Check it."}}}}"#);
                let out = r.text(&text);
                assert_clean(&out, key);
                assert!(out.contains("Incorrect API key provided: [REDACTED]. Check it."), "{out}");
                serde_json::from_str::<serde_json::Value>(&out).expect("still JSON");
            }
        }
    }

    #[test]
    fn any_run_of_eight_but_not_seven() {
        let r = redactor();
        assert_eq!(r.text("x Cd34Ef56 y"), "x [REDACTED] y");
        assert_eq!(r.text("x Cd34Ef5 y"), "x Cd34Ef5 y");
        assert!(matches!(r.text("nothing to see here"), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_and_adjacent_secrets_make_one_run() {
        let r = Redactor::new(["abcdefghijkl", "ghijklmnopqr"]);
        assert_eq!(r.text("<abcdefghijklmnopqr>"), "<[REDACTED]>");
        assert_eq!(r.text("<abcdefghijkl ghijklmnopqr>"), "<[REDACTED] [REDACTED]>");
        assert_eq!(r.text("<ABCDEFGHIJKLabcdefghijkl>"), "<[REDACTED]>");
    }

    #[test]
    fn short_secrets_only_as_whole_words() {
        let r = redactor();
        assert_eq!(r.text("key=PXY42."), "key=[REDACTED].");
        assert_eq!(r.text("pxy42pxy42 xpxy42"), "pxy42pxy42 xpxy42");
    }

    #[test]
    fn no_secrets_no_change() {
        let r = Redactor::new(["", ""]);
        assert!(matches!(r.bytes(b"sk-live-Ab12Cd34"), Cow::Borrowed(_)));
    }

    fn read_in_pieces(input: &[u8], piece: usize) -> Vec<u8> {
        struct Pieces<'a>(&'a [u8], usize);
        impl Read for Pieces<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let mut reader = RedactingReader::new(Pieces(input, piece), Arc::new(redactor()));
        reader.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn reader_matches_whole_redaction_whatever_the_reads() {
        let mut input = String::new();
        for key in [KEY_A, KEY_B] {
            for form in mutilations(key) {
                input.push_str(&format!("data: {{\"error\":\"bad key {form}\"}}\n\n"));
            }
        }
        input.push_str("tail-without-newline Ab12Cd34Ef56");
        let whole = redactor().bytes(input.as_bytes()).into_owned();
        for piece in [1, 7, 16 << 10] {
            let out = read_in_pieces(input.as_bytes(), piece);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "{piece}-byte reads");
            assert_clean(&String::from_utf8_lossy(&out), KEY_A);
            assert_clean(&String::from_utf8_lossy(&out), KEY_B);
        }
    }

    #[test]
    fn reader_does_not_delay_a_complete_event() {
        /// Hands out one event, then fails the test if read again before the event came out.
        struct OneEvent(Option<&'static [u8]>);
        impl Read for OneEvent {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let event = self.0.take().expect("the reader asked for more before handing out the event");
                buf[..event.len()].copy_from_slice(event);
                Ok(event.len())
            }
        }
        let event: &[u8] = b"data: {\"error\":\"key sk-live-Ab12Cd34Ef56Gh78\"}\n\n";
        let mut reader = RedactingReader::new(OneEvent(Some(event)), Arc::new(redactor()));
        let mut got = Vec::new();
        while !got.ends_with(b"\n\n") {
            let mut buf = [0u8; 8];
            let n = reader.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"data: {\"error\":\"key [REDACTED]\"}\n\n");
    }

    #[test]
    fn reader_lets_a_huge_run_through_at_the_limit() {
        let blob = vec![b'A'; HOLD_LIMIT + 10];
        let out = read_in_pieces(&blob, 16 << 10);
        assert_eq!(out, blob);
    }
}

/// Property tests with generated secrets and text (`scripts/fuzz.sh` runs them with more
/// cases).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A piece of the text: filler, or a run of 8 or more characters of a secret, recased.
    #[derive(Debug, Clone)]
    enum Piece {
        Filler(String),
        Secret { which: usize, start: usize, len: usize, case: Vec<bool> },
    }

    fn filler() -> impl Strategy<Value = String> {
        prop_oneof!["[ -~]{0,12}", "[\\s\"\\\\:,{}]{0,4}", "\\PC{0,6}", "[a-zA-Z0-9_-]{0,10}"]
    }

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        let secret = (any::<usize>(), any::<usize>(), any::<usize>(), proptest::collection::vec(any::<bool>(), 64))
            .prop_map(|(which, start, len, case)| Piece::Secret { which, start, len, case });
        proptest::collection::vec(prop_oneof![filler().prop_map(Piece::Filler), secret], 0..12)
    }

    /// The text: each secret piece is a run of at least 8 of its secret's characters, from any
    /// offset, each character in either case.
    fn render(secrets: &[String], pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Filler(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Secret { which, start, len, case } => {
                    let secret = secrets[which % secrets.len()].as_bytes();
                    let start = start % (secret.len() - WINDOW + 1);
                    let len = WINDOW + len % (secret.len() - start - WINDOW + 1);
                    let run = secret[start..start + len].iter().zip(case.iter().cycle());
                    out.extend(run.map(|(&b, &up)| if up { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() }));
                }
            }
        }
        out
    }

    fn secrets(min: usize) -> impl Strategy<Value = Vec<String>> {
        let secret = proptest::string::string_regex(&format!("[a-zA-Z0-9_.-]{{{min},40}}")).unwrap();
        proptest::collection::vec(secret, 1..4)
    }

    /// A reader that hands out `input` in the given pieces.
    struct Pieces<'a> {
        input: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes.get(self.next).copied().unwrap_or(usize::MAX).max(1);
            self.next += 1;
            let n = size.min(buf.len()).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(crate::fuzz_config::config())]

        /// No 8-character window of any secret, in any case, survives.
        #[test]
        fn no_window_survives(secrets in secrets(WINDOW), pieces in pieces()) {
            let input = render(&secrets, &pieces);
            let redactor = Redactor::new(secrets.iter().map(String::as_str));
            // `[REDACTED]` itself could spell a window of a secret such as `xREDACTEDx`: take
            // each replacement out (it ends any window) before looking.
            let out = redactor.bytes(&input).to_ascii_lowercase();
            let mut out: &[u8] = &out;
            let mut parts = Vec::new();
            let replacement = REPLACEMENT.to_ascii_lowercase();
            while let Some(i) = out.windows(REPLACEMENT.len()).position(|w| w == replacement) {
                parts.push(&out[..i]);
                out = &out[i + REPLACEMENT.len()..];
            }
            parts.push(out);
            for secret in &secrets {
                for window in secret.to_ascii_lowercase().as_bytes().windows(WINDOW) {
                    for part in &parts {
                        prop_assert!(
                            !part.windows(WINDOW).any(|w| w == window),
                            "{:?} survives in {:?}", String::from_utf8_lossy(window), String::from_utf8_lossy(&input)
                        );
                    }
                }
            }
        }

        /// `RedactingReader`, fed in any pieces and read in any buffer sizes, gives what
        /// redacting the whole input gives (short secrets included; the input is far under
        /// `HOLD_LIMIT`, so no forced cut applies).
        #[test]
        fn reader_matches_whole(
            secrets in secrets(1),
            pieces in pieces(),
            sizes in proptest::collection::vec(1usize..32, 0..64),
            reads in proptest::collection::vec(1usize..32, 1..8),
        ) {
            let input = render(&secrets.iter().map(|s| s.repeat(WINDOW)).collect::<Vec<_>>(), &pieces);
            let redactor = Arc::new(Redactor::new(secrets.iter().map(String::as_str)));
            let mut reader = RedactingReader::new(Pieces { input: &input, sizes, next: 0 }, redactor.clone());
            let mut out = Vec::new();
            let mut buf = [0u8; 32];
            for size in reads.iter().cycle() {
                let n = reader.read(&mut buf[..*size]).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            prop_assert_eq!(out, redactor.bytes(&input).into_owned());
        }
    }
}
