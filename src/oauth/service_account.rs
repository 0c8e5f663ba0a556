//! Google service accounts, Vertex AI's credentials: a key file (`VERTEX_CREDENTIALS_N`, a
//! path or the JSON itself) exchanged for an access token at the account's own `token_uri`
//! with the JWT bearer grant (RFC 7523; Google's "Using OAuth 2.0 for Server to Server
//! Applications"): a JWT signed RS256 with the account's private key, claims `iss` (the
//! account's email), `scope` (`cloud-platform`), `aud` (the token URI), `iat` and `exp` an
//! hour later, posted as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=`.
//!
//! At run time each account's token lives behind a lock of its own (never the pool's), the
//! same rules as `oauth::refresh`, tested here with time passed in:
//! - a token is used until 5 minutes before its expiry, then exchanged again;
//! - one exchange at a time per account: callers that find one under way wait for it;
//! - a refused exchange (400, 401, 403, `invalid_grant`: a deleted or disabled key, a wrong
//!   clock, an unknown account) marks the account refused: it leaves the rotation and `status`
//!   says why, until the configuration changes; a network error or 5xx is transient.

use super::single_flight::{self, Settled, SingleFlight};
use crate::clock::{MINUTE, SECOND};
use crate::secret::Secret;
use crate::upstream::{self, Client, Method, UpstreamRequest};
use base64::Engine;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The scope of every Vertex AI call.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_SECONDS: u64 = 3600;
/// A token is exchanged again this long before it expires.
pub const REFRESH_MARGIN: u64 = 5 * MINUTE;

/// A service account key, as read from its variable. The private key is a `Secret`; the rest
/// names the account and is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The variable it came from (`VERTEX_CREDENTIALS_1`), for messages.
    pub var: String,
    pub client_email: String,
    pub private_key_id: String,
    /// The PEM text (PKCS#8), as the key file holds it.
    pub private_key: Secret,
    pub token_uri: String,
    pub project_id: Option<String>,
}

impl ServiceAccount {
    /// Reads a variable's value: the key file's JSON itself when it starts with `{`, else a
    /// path to it. Every failure names the variable and never quotes the key.
    pub fn load(var: &str, value: &str) -> Result<ServiceAccount, String> {
        let value = value.trim();
        let text = if value.starts_with('{') {
            value.to_string()
        } else {
            std::fs::read_to_string(value).map_err(|e| format!("{var}: cannot read the key file {value}: {e}"))?
        };
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{var} is not a service account key file: not JSON (line {})", e.line()))?;
        let field = |name: &str| json.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        if field("type") != Some("service_account") {
            return Err(format!("{var} is not a service account key file: its \"type\" is not \"service_account\""));
        }
        let need = |name: &str| field(name).ok_or_else(|| format!("{var}: the key file has no \"{name}\""));
        let account = ServiceAccount {
            var: var.to_string(),
            client_email: need("client_email")?.to_string(),
            private_key_id: need("private_key_id")?.to_string(),
            private_key: Secret::new(need("private_key")?),
            token_uri: need("token_uri")?.to_string(),
            project_id: field("project_id").map(str::to_string),
        };
        signing_key(&account.private_key).map_err(|why| format!("{var}: {why}"))?;
        Ok(account)
    }

    /// The pool id: stable, from the account and its key id, never from the key.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(format!("{}\n{}", self.client_email, self.private_key_id).as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("vertex:sa-{hex}")
    }

    /// What people see: the account and the start of its key id.
    pub fn masked(&self) -> String {
        let kid: String = self.private_key_id.chars().take(8).collect();
        format!("{} (key {kid})", self.client_email)
    }

    /// The private key's base64 body, for the redactor: the PEM's armour lines are public
    /// text that must not be redacted everywhere.
    pub fn key_body(&self) -> String {
        pem_body(self.private_key.expose())
    }
}

fn pem_body(pem: &str) -> String {
    pem.lines().map(str::trim).filter(|l| !l.starts_with("-----")).collect()
}

/// The RSA key of a PEM `PRIVATE KEY` (PKCS#8), as key files hold it.
pub fn signing_key(pem: &Secret) -> Result<RsaKeyPair, String> {
    let text = pem.expose();
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err("\"private_key\" is not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)".into());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem_body(text))
        .map_err(|_| "\"private_key\" is not valid PEM (bad base64)".to_string())?;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("\"private_key\" is not a usable RSA key ({e})"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed JWT that asks `account.token_uri` for a token, issued at `now_s` (seconds).
pub fn assertion(account: &ServiceAccount, key: &RsaKeyPair, now_s: u64) -> Result<String, String> {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id});
    let claims = json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": now_s,
        "exp": now_s + ASSERTION_SECONDS,
    });
    let signed = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut signature = vec![0; key.public().modulus_len()];
    let rng = ring::rand::SystemRandom::new();
    key.sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut signature)
        .map_err(|_| "signing the token request failed".to_string())?;
    Ok(format!("{signed}.{}", b64url(&signature)))
}

/// A token and when it expires (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: Secret,
    pub expires_at: u64,
}

/// Why an exchange brought no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The token endpoint refused the assertion: only a new key (or clock) helps.
    Refused(String),
    /// Anything else (network, 5xx, 429, an answer without a token): try again later.
    Failed(String),
}

/// The call that turns an assertion into a token (seconds to live); a trait so the caching
/// and single-flight rules are tested without a network.
pub trait Exchange: Sync {
    fn exchange(&self, token_uri: &str, assertion: &str) -> Result<(Secret, u64), ExchangeError>;
}

/// The real token endpoint, over the upstream client.
pub struct Http<'a> {
    pub client: &'a Client,
}

impl Exchange for Http<'_> {
    fn exchange(&self, token_uri: &str, assertion: &str) -> Result<(Secret, u64), ExchangeError> {
        let form = super::endpoint::form_encode(&[("grant_type", GRANT_TYPE), ("assertion", assertion)]);
        let request = UpstreamRequest {
            method: Method::Post,
            url: token_uri.to_string(),
            headers: vec![
                ("content-type".into(), "application/x-www-form-urlencoded".into()),
                ("accept".into(), "application/json".into()),
            ],
            body: Some(form.into_bytes()),
            stream: false,
        };
        // Read unredacted: the answer is the new token, which the redactor learns next.
        let mut response = self
            .client
            .send_unredacted(&request)
            .map_err(|e| ExchangeError::Failed(format!("token endpoint unreachable: {e}")))?;
        let bytes = upstream::read_all(&mut response.body)
            .map_err(|e| ExchangeError::Failed(format!("token endpoint answer cut off: {e}")))?;
        read_answer(response.status, &bytes)
    }
}

/// A token endpoint's answer: the token and its lifetime, or why not. Only the error code is
/// quoted: a description may echo what was sent.
fn read_answer(status: u16, bytes: &[u8]) -> Result<(Secret, u64), ExchangeError> {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let error = body.get("error").and_then(Value::as_str);
    let code = error.map(|e| format!(" ({})", e.chars().take(60).collect::<String>())).unwrap_or_default();
    if matches!(status, 400 | 401 | 403) || error == Some("invalid_grant") {
        return Err(ExchangeError::Refused(format!("the token endpoint refused the service account: {status}{code}")));
    }
    if !(200..300).contains(&status) {
        return Err(ExchangeError::Failed(format!("the token endpoint answered {status}{code}")));
    }
    let token = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
    let token = token.ok_or_else(|| ExchangeError::Failed("the token answer has no access_token".into()))?;
    let expires_in = body.get("expires_in").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    Ok((Secret::new(token), expires_in.unwrap_or(3600)))
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessError {
    /// Refused, now or earlier: the account is out of rotation until the configuration changes.
    Refused(String),
    /// The exchange failed for a reason that may pass.
    Failed(String),
}

/// An account's token and, once an exchange was refused, why.
#[derive(Clone, Default)]
struct Slot {
    token: Option<Token>,
    refused: Option<String>,
}

/// One account's token, shared by every request.
pub struct AccountState {
    pub id: String,
    pub masked: String,
    pub account: ServiceAccount,
    key: RsaKeyPair,
    inner: SingleFlight<Slot>,
}

impl AccountState {
    /// The account with no token yet; its key was checked when it was loaded.
    pub fn new(account: ServiceAccount) -> Result<AccountState, String> {
        let key = signing_key(&account.private_key)?;
        Ok(AccountState {
            id: account.id(),
            masked: account.masked(),
            account,
            key,
            inner: SingleFlight::new(Slot::default()),
        })
    }

    /// Why the account's exchange was refused, when it was.
    pub fn refused(&self) -> Option<String> {
        self.inner.read(|slot| slot.refused.clone())
    }

    /// The token to use now, exchanged first when none is held or expiry is near. `failed` is
    /// a token the API just refused (401): unless an exchange has replaced it meanwhile, one
    /// is forced.
    pub fn access(
        &self,
        endpoint: &dyn Exchange,
        now: &dyn Fn() -> u64,
        failed: Option<&Secret>,
    ) -> Result<Secret, AccessError> {
        let usable = |slot: &Slot| {
            if let Some(why) = &slot.refused {
                return Some(Err(AccessError::Refused(why.clone())));
            }
            let usable = slot.token.as_ref().filter(|t| match failed {
                Some(bad) => &t.token != bad,
                None => t.expires_at > now().saturating_add(REFRESH_MARGIN),
            });
            usable.map(|token| Ok(token.token.clone()))
        };
        let settle = |slot: &mut Slot, result: Result<Token, ExchangeError>| match result {
            Ok(token) => {
                let secret = token.token.clone();
                slot.token = Some(token);
                Settled::Ready(secret)
            }
            Err(ExchangeError::Refused(why)) => {
                slot.refused = Some(why.clone());
                slot.token = None;
                Settled::Final(AccessError::Refused(why))
            }
            Err(ExchangeError::Failed(why)) => Settled::Transient(why),
        };
        self.inner.get(usable, |_| self.exchange(endpoint, now()), settle, AccessError::Failed)
    }

    /// One exchange, outside every lock; the new token is taught to the redactor first.
    fn exchange(&self, endpoint: &dyn Exchange, now: u64) -> Result<Token, ExchangeError> {
        let jwt = assertion(&self.account, &self.key, now / SECOND).map_err(ExchangeError::Failed)?;
        match endpoint.exchange(&self.account.token_uri, &jwt) {
            Ok((token, seconds)) => {
                crate::redact::learn([token.expose()]);
                log::info!("vertex {}: access token obtained", self.masked);
                Ok(Token { token, expires_at: now.saturating_add(seconds.saturating_mul(SECOND)) })
            }
            Err(e) => {
                match &e {
                    ExchangeError::Refused(why) => log::error!(
                        "vertex {} ({}): {why}; check that the key is enabled and replace {} if not",
                        self.masked,
                        self.account.var,
                        self.account.var
                    ),
                    ExchangeError::Failed(why) => log::warn!("vertex {}: token exchange failed: {why}", self.masked),
                }
                Err(e)
            }
        }
    }

    /// What `status` and `/v1/quota-stats` show: never a token.
    pub fn describe(&self, now: u64) -> Value {
        self.inner.read(|slot| {
            let expires = slot.token.as_ref().map(|t| (t.expires_at as i64 - now as i64) / SECOND as i64);
            match &slot.refused {
                Some(why) => json!({"account": self.masked, "state": "refused", "why": why}),
                None => json!({"account": self.masked, "state": "ok", "expires_in_seconds": expires}),
            }
        })
    }
}

/// Every service account's state, by pool id.
pub type Registry = single_flight::Registry<AccountState>;

impl Registry {
    pub fn new(accounts: &[ServiceAccount]) -> Registry {
        let registry = Registry::default();
        registry.sync(accounts);
        registry
    }

    /// Takes a reloaded list: an account that is still there, unchanged, keeps its token and
    /// its refusal; a changed or new one starts afresh; gone ones are dropped.
    pub fn sync(&self, accounts: &[ServiceAccount]) {
        let make = |account: &ServiceAccount| match AccountState::new(account.clone()) {
            Ok(state) => Some(state),
            Err(why) => {
                log::error!("vertex {}: {why}", account.var);
                None
            }
        };
        self.replace(accounts, ServiceAccount::id, |state, account| state.account == *account, make);
    }

    /// The tokens held now, for the redactor after a reload.
    pub fn tokens(&self) -> Vec<Secret> {
        self.all().iter().filter_map(|s| s.inner.read(|slot| slot.token.as_ref().map(|t| t.token.clone()))).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::single_flight::tests::four_callers;
    use crate::sync::lock;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    const NOW: u64 = 1_800_000_000_000;

    /// The committed test-only key pair (tests/data/vertex/), never a real account's.
    pub fn test_account() -> ServiceAccount {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("tests/data/vertex/test-service-account.json");
        ServiceAccount::load("VERTEX_CREDENTIALS_1", path.to_str().unwrap()).unwrap()
    }

    /// Answers every exchange with `tok-<n>`, counting calls and keeping the assertions;
    /// optionally holds each call until the test lets it go.
    struct Fake {
        calls: AtomicUsize,
        answer: Result<u64, ExchangeError>,
        seen: Mutex<Vec<(String, String)>>,
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        entered: Option<Mutex<mpsc::Sender<()>>>,
    }

    impl Fake {
        fn answering(answer: Result<u64, ExchangeError>) -> Fake {
            Fake { calls: AtomicUsize::new(0), answer, seen: Mutex::new(Vec::new()), gate: None, entered: None }
        }
    }

    impl Exchange for Fake {
        fn exchange(&self, token_uri: &str, assertion: &str) -> Result<(Secret, u64), ExchangeError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            lock(&self.seen).push((token_uri.to_string(), assertion.to_string()));
            if let Some(entered) = &self.entered {
                lock(entered).send(()).unwrap();
            }
            if let Some(gate) = &self.gate {
                lock(gate).recv().unwrap();
            }
            let seconds = self.answer.clone()?;
            Ok((Secret::new(&format!("tok-{n}")), seconds))
        }
    }

    fn public_key() -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read_to_string(root.join("tests/data/vertex/test-service-account.pub.pem")).unwrap();
        base64::engine::general_purpose::STANDARD.decode(pem_body(&pem)).unwrap()
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_a_jwt_signed_with_the_accounts_key() {
        let account = test_account();
        let key = signing_key(&account.private_key).unwrap();
        let jwt = assertion(&account, &key, 1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode(parts[0]), json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}));
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], account.client_email);
        assert_eq!((claims["aud"].as_str(), claims["scope"].as_str()), (Some(account.token_uri.as_str()), Some(SCOPE)));
        assert_eq!((claims["iat"].as_u64(), claims["exp"].as_u64()), (Some(1_800_000_000), Some(1_800_003_600)));
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let verifier =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key());
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &signature).expect("the signature verifies with the public key");
        assert!(verifier.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn a_token_is_cached_until_five_minutes_before_expiry() {
        let fake = Fake::answering(Ok(3600));
        let state = AccountState::new(test_account()).unwrap();
        assert_eq!(state.access(&fake, &|| NOW, None).unwrap().expose(), "tok-1");
        assert_eq!(state.access(&fake, &|| NOW + 54 * MINUTE, None).unwrap().expose(), "tok-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(state.access(&fake, &|| NOW + 55 * MINUTE, None).unwrap().expose(), "tok-2");
        assert_eq!(lock(&fake.seen)[0].0, test_account().token_uri, "exchanged at the account's own token_uri");
        assert_eq!(state.describe(NOW + 55 * MINUTE)["expires_in_seconds"], 3600);
    }

    #[test]
    fn a_401_forces_one_exchange_and_a_second_caller_gets_its_token() {
        let fake = Fake::answering(Ok(3600));
        let state = AccountState::new(test_account()).unwrap();
        let first = state.access(&fake, &|| NOW, None).unwrap();
        assert_eq!(state.access(&fake, &|| NOW, Some(&first)).unwrap().expose(), "tok-2");
        assert_eq!(state.access(&fake, &|| NOW, Some(&first)).unwrap().expose(), "tok-2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn one_exchange_at_a_time_and_the_others_wait_for_it() {
        let (gate_tx, gate_rx) = mpsc::channel();
        let (entered_tx, entered_rx) = mpsc::channel();
        let fake = Fake {
            gate: Some(Mutex::new(gate_rx)),
            entered: Some(Mutex::new(entered_tx)),
            ..Fake::answering(Ok(3600))
        };
        let state = AccountState::new(test_account()).unwrap();
        let access = || state.access(&fake, &|| NOW, None);
        let (first, others) = four_callers(access, || state.inner.waiting(), entered_rx, gate_tx);
        assert_eq!(first.unwrap().expose(), "tok-1");
        for other in others {
            assert_eq!(other.unwrap().expose(), "tok-1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_exchange_marks_the_account_and_a_failed_one_does_not() {
        let refused = Fake::answering(Err(ExchangeError::Refused("400 (invalid_grant)".into())));
        let state = AccountState::new(test_account()).unwrap();
        assert!(matches!(state.access(&refused, &|| NOW, None), Err(AccessError::Refused(_))));
        assert!(matches!(state.access(&refused, &|| NOW, None), Err(AccessError::Refused(_))));
        assert_eq!(refused.calls.load(Ordering::SeqCst), 1, "a refused account is not tried again");
        assert_eq!(state.describe(NOW)["state"], "refused");
        let failed = Fake::answering(Err(ExchangeError::Failed("503".into())));
        let state = AccountState::new(test_account()).unwrap();
        assert!(matches!(state.access(&failed, &|| NOW, None), Err(AccessError::Failed(_))));
        assert_eq!(state.access(&Fake::answering(Ok(60)), &|| NOW, None).unwrap().expose(), "tok-1");
        assert_eq!(state.refused(), None);
    }

    #[test]
    fn token_answers_are_classified() {
        assert_eq!(read_answer(200, br#"{"access_token":"ya29.x","expires_in":3599}"#).unwrap().1, 3599);
        for (status, body) in
            [(400, r#"{"error":"invalid_grant"}"#), (401, "{}"), (403, "{}"), (200, r#"{"error":"invalid_grant"}"#)]
        {
            assert!(matches!(read_answer(status, body.as_bytes()), Err(ExchangeError::Refused(_))), "{status} {body}");
        }
        for (status, body) in [(500, "{}"), (429, "{}"), (200, "{}"), (200, "not json")] {
            assert!(matches!(read_answer(status, body.as_bytes()), Err(ExchangeError::Failed(_))), "{status} {body}");
        }
        let Err(ExchangeError::Refused(why)) =
            read_answer(400, br#"{"error":"invalid_grant","error_description":"secret"}"#)
        else {
            panic!()
        };
        assert!(!why.contains("secret"), "{why}");
    }

    #[test]
    fn bad_credentials_name_their_variable() {
        let account = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vertex/test-service-account.json"),
        )
        .unwrap();
        let mut json: Value = serde_json::from_str(&account).unwrap();
        let load = |v: &str| ServiceAccount::load("VERTEX_CREDENTIALS_3", v).unwrap_err();
        assert!(load("/nonexistent/key.json").contains("VERTEX_CREDENTIALS_3: cannot read"));
        assert!(load("{not json").contains("not JSON"));
        json["type"] = json!("authorized_user");
        assert!(load(&json.to_string()).contains("service_account"));
        json["type"] = json!("service_account");
        let pem = json["private_key"].as_str().unwrap().to_string();
        json["private_key"] = json!(pem.replace("MII", "!!!"));
        let why = load(&json.to_string());
        assert!(why.starts_with("VERTEX_CREDENTIALS_3:") && !why.contains(&pem[40..60]), "{why}");
        json["private_key"] = json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(load(&json.to_string()).contains("not a usable RSA key"));
        json.as_object_mut().unwrap().remove("client_email");
        assert!(load(&json.to_string()).contains("client_email"));
        let good = test_account();
        assert!(good.masked().starts_with("keyrelay-test@") && !good.masked().contains("PRIVATE"));
        assert!(good.id().starts_with("vertex:sa-"));
    }
}
