//! `Secret`, the newtype for keys and tokens that cannot be printed by accident, with the key
//! ids and masks made from it.

use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// Joins the fields of a credential made of several (`Secret::fields`): a newline, which no
/// key read from a variable can hold (values are single lines).
pub const FIELD_SEPARATOR: char = '\n';

/// A provider key or the proxy key. `Debug` and `Display` show only the masked form, so a
/// secret cannot reach a log line through `{:?}` or `{}`; `expose()` is the one way out (an
/// outgoing header, the `redact::Redactor` that learns what to remove, and handing an OAuth
/// credential to its owner: its file and `export-env`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(Arc::from(value))
    }

    /// The raw value, for an outgoing header, the redactor, and a credential's own file or export.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `...` + the last 4 characters: what people see. A credential of several fields (an AWS
    /// access-key pair, `fields`) is shown by its first, the access key id.
    pub fn masked(&self) -> String {
        let first = self.fields().next().unwrap_or("");
        let chars: Vec<char> = first.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
        format!("...{tail}")
    }

    /// The fields of a credential made of several (an AWS access key id, its secret access key
    /// and optional session token, joined by `FIELD_SEPARATOR`); a plain key is one field.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.split(FIELD_SEPARATOR)
    }

    /// `<provider>:<first 12 hex digits of SHA-256 of the key>`: stable, safe to store.
    pub fn id(&self, provider: &str) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{provider}:{hex}")
    }

    /// Compares in time independent of where the inputs differ (and of their lengths, since
    /// both sides are hashed first).
    pub fn matches(&self, candidate: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate.as_bytes());
        a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_mask_and_match() {
        let s = Secret::new("sk-test-abcdef123456");
        assert_eq!(s.masked(), "...3456");
        let id = s.id("openai");
        assert!(id.starts_with("openai:") && id.len() == "openai:".len() + 12, "{id}");
        assert!(s.matches("sk-test-abcdef123456"));
        assert!(!s.matches("sk-test-abcdef123457"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "Secret(...3456)");
        assert_eq!(Secret::new("ab").masked(), "...ab");
        let pair = Secret::new("AKIDEXAMPLE1234\nsecret/key+ZZZZ\ntoken9999");
        assert_eq!(pair.masked(), "...1234");
        assert_eq!(format!("{pair} {pair:?}"), "...1234 Secret(...1234)");
        assert_eq!(pair.fields().collect::<Vec<_>>(), ["AKIDEXAMPLE1234", "secret/key+ZZZZ", "token9999"]);
    }
}
