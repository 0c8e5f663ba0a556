//! One OAuth credential and its JSON file form. The field names are the ones the official CLIs
//! and the Python proxy write, so their files are read as they are and written back in a form
//! those tools still read: `access_token`, `refresh_token`, `id_token`, `token_type`, `scope`,
//! `expiry_date` (milliseconds since the epoch, or an ISO 8601 string, which iFlow files may
//! use), Gemini's `client_id`, `client_secret`, `token_uri`, `project_id` and `email`, Qwen's
//! `resource_url`, iFlow's `apiKey` or `api_key`, and our `needs_login` flag. Every other field
//! (`universe_domain`, `_proxy_metadata`, ...) is kept as read and written back unchanged.

use super::{Provider, Source};
use crate::clock;
use crate::secret::Secret;
use serde_json::{Map, Value, json};

/// How `expiry_date` was written, so a rewrite keeps the form its reader expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryForm {
    /// A number of milliseconds since the epoch.
    Millis,
    /// An ISO 8601 / RFC 3339 string, kept as read until the time changes.
    Iso(String),
}

/// When the access token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub at_ms: u64,
    pub form: ExpiryForm,
}

impl Expiry {
    pub fn millis(at_ms: u64) -> Expiry {
        Expiry { at_ms, form: ExpiryForm::Millis }
    }

    /// Reads a number of milliseconds, a string of digits, or an ISO 8601 time.
    pub fn parse(value: &Value) -> Option<Expiry> {
        match value {
            Value::Number(n) => {
                n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).map(Expiry::millis)
            }
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok().map(Expiry::millis)
            }
            Value::String(s) => {
                clock::parse_rfc3339(s).map(|at_ms| Expiry { at_ms, form: ExpiryForm::Iso(s.trim().to_string()) })
            }
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match &self.form {
            ExpiryForm::Millis => json!(self.at_ms),
            ExpiryForm::Iso(text) => json!(text),
        }
    }
}

/// Which name iFlow's API key had in the file, so a rewrite keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyField {
    /// `apiKey`, as the iFlow CLI writes it.
    Camel,
    /// `api_key`, as the Python proxy and other tools write it.
    Snake,
}

impl ApiKeyField {
    fn name(self) -> &'static str {
        match self {
            ApiKeyField::Camel => "apiKey",
            ApiKeyField::Snake => "api_key",
        }
    }
}

/// An OAuth credential of `gemini_cli`, `qwen_code` or `iflow`. Tokens are `Secret`s, so a
/// `{:?}` of a credential shows only their masked forms.
#[derive(Debug, Clone)]
pub struct OAuthCredential {
    pub provider: Provider,
    pub source: Source,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    pub expiry: Option<Expiry>,
    /// The name the expiry was read under: `expiry_date`, or `expired` in some iFlow files.
    pub expiry_field: &'static str,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token_uri: Option<String>,
    pub project_id: Option<String>,
    /// The account's email (iFlow: email or phone; Qwen: the label chosen at login).
    pub email: Option<String>,
    pub resource_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_key_field: ApiKeyField,
    /// A refresh was refused: the user must log in again.
    pub needs_login: bool,
    /// Every field not named above, as read.
    pub extra: Map<String, Value>,
}

/// The plain string fields.
const TEXT_FIELDS: [&str; 7] =
    ["token_type", "scope", "client_id", "client_secret", "token_uri", "project_id", "email"];
const SECRET_FIELDS: [&str; 3] = ["access_token", "refresh_token", "id_token"];
const EXPIRY_DATE: &str = "expiry_date";
const EXPIRED: &str = "expired";

impl OAuthCredential {
    /// An empty credential, filled in by the readers.
    pub fn new(provider: Provider, source: Source) -> OAuthCredential {
        OAuthCredential {
            provider,
            source,
            access_token: None,
            refresh_token: None,
            id_token: None,
            token_type: None,
            scope: None,
            expiry: None,
            expiry_field: EXPIRY_DATE,
            client_id: None,
            client_secret: None,
            token_uri: None,
            project_id: None,
            email: None,
            resource_url: None,
            api_key: None,
            api_key_field: ApiKeyField::Snake,
            needs_login: false,
            extra: Map::new(),
        }
    }

    /// Reads a credential file's text. Errors name the field, never its value.
    pub fn from_json(provider: Provider, source: Source, text: &str) -> Result<OAuthCredential, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
        let Value::Object(mut map) = value else {
            return Err("not a JSON object".into());
        };
        let mut cred = OAuthCredential::new(provider, source);
        for name in SECRET_FIELDS {
            let secret = take_string(&mut map, name)?.map(|s| Secret::new(&s));
            match name {
                "access_token" => cred.access_token = secret,
                "refresh_token" => cred.refresh_token = secret,
                _ => cred.id_token = secret,
            }
        }
        for name in TEXT_FIELDS {
            let text = take_string(&mut map, name)?;
            *cred.text_field(name) = text;
        }
        if provider == Provider::QwenCode {
            cred.resource_url = take_string(&mut map, "resource_url")?;
        }
        if provider == Provider::Iflow {
            cred.read_api_key(&mut map)?;
        }
        cred.expiry = match map.remove(EXPIRY_DATE) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Expiry::parse(&v).ok_or("expiry_date is neither milliseconds nor an ISO 8601 time")?),
        };
        if cred.expiry.is_none() {
            // Another iFlow writer keeps the time as an RFC 3339 `expired`: read it, and write
            // it back under that name.
            if let Some(expiry) = map.get(EXPIRED).and_then(Expiry::parse) {
                map.remove(EXPIRED);
                cred.expiry = Some(expiry);
                cred.expiry_field = EXPIRED;
            }
        }
        cred.needs_login = match map.remove("needs_login") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err("needs_login is not true or false".into()),
        };
        cred.extra = map;
        Ok(cred)
    }

    fn read_api_key(&mut self, map: &mut Map<String, Value>) -> Result<(), String> {
        // When a file has both names, `apiKey` is used and `api_key` stays in `extra`.
        for field in [ApiKeyField::Camel, ApiKeyField::Snake] {
            if let Some(key) = take_string(map, field.name())? {
                self.api_key = Some(Secret::new(&key));
                self.api_key_field = field;
                return Ok(());
            }
        }
        Ok(())
    }

    fn text_field(&mut self, name: &str) -> &mut Option<String> {
        match name {
            "token_type" => &mut self.token_type,
            "scope" => &mut self.scope,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            "token_uri" => &mut self.token_uri,
            "project_id" => &mut self.project_id,
            _ => &mut self.email,
        }
    }

    fn text_fields(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("token_type", &self.token_type),
            ("scope", &self.scope),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("token_uri", &self.token_uri),
            ("project_id", &self.project_id),
            ("email", &self.email),
        ]
    }

    /// The file form: the kept fields, then every known field that has a value.
    pub fn to_json(&self) -> Value {
        let mut map = self.extra.clone();
        let secrets = [
            ("access_token", &self.access_token),
            ("refresh_token", &self.refresh_token),
            ("id_token", &self.id_token),
        ];
        for (name, secret) in secrets {
            if let Some(s) = secret {
                map.insert(name.into(), json!(s.expose()));
            }
        }
        for (name, text) in self.text_fields() {
            if let Some(text) = text {
                map.insert(name.into(), json!(text));
            }
        }
        if let Some(url) = &self.resource_url {
            map.insert("resource_url".into(), json!(url));
        }
        if let Some(key) = &self.api_key {
            map.insert(self.api_key_field.name().into(), json!(key.expose()));
        }
        if let Some(expiry) = &self.expiry {
            map.insert(self.expiry_field.into(), expiry.to_json());
        }
        if self.needs_login {
            map.insert("needs_login".into(), json!(true));
        }
        Value::Object(map)
    }

    /// Pretty-printed JSON with a final newline, as the official CLIs write their files.
    pub fn to_file_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_json()).expect("a JSON value serialises");
        text.push('\n');
        text
    }

    /// Every token this credential holds, for the redactor.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        [&self.access_token, &self.refresh_token, &self.id_token, &self.api_key].into_iter().flatten()
    }

    /// Seconds until the access token expires (negative once it has), if the time is known.
    pub fn expires_in_seconds(&self, now_ms: u64) -> Option<i64> {
        self.expiry.as_ref().map(|e| (e.at_ms as i64 - now_ms as i64).div_euclid(1000))
    }

    /// `needs_login`, `expired` (also when the expiry is unknown: it must be refreshed before
    /// use) or `ok`.
    pub fn state(&self, now_ms: u64) -> &'static str {
        match self.expires_in_seconds(now_ms) {
            _ if self.needs_login => "needs_login",
            Some(s) if s > 0 => "ok",
            _ => "expired",
        }
    }
}

/// Removes `name` from `map`: a string, or nothing (absent or null).
fn take_string(map: &mut Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file() -> Source {
        Source::File(PathBuf::from("x.json"))
    }

    #[test]
    fn a_gemini_cli_file_reads_and_writes_back_with_its_unknown_fields() {
        let text = r#"{"access_token":"ya29.a0Af-token","refresh_token":"1//0g-refresh","scope":"openid","token_type":"Bearer","id_token":"eyJ.x.y","expiry_date":1767225600000,"universe_domain":"googleapis.com","_proxy_metadata":{"email":"a@b.c","tier":"PRO"}}"#;
        let cred = OAuthCredential::from_json(Provider::GeminiCli, file(), text).unwrap();
        assert_eq!(cred.access_token.as_ref().unwrap().expose(), "ya29.a0Af-token");
        assert_eq!(cred.expiry, Some(Expiry::millis(1_767_225_600_000)));
        assert_eq!(cred.extra.keys().collect::<Vec<_>>(), ["_proxy_metadata", "universe_domain"]);
        let back = cred.to_json();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
        assert!(!format!("{cred:?}").contains("ya29.a0Af-token"));
    }

    #[test]
    fn iflow_keeps_the_expiry_form_and_the_api_key_name_it_was_read_with() {
        let iso = r#"{"access_token":"at-1","refresh_token":"rt-1","apiKey":"sk-iflow","email":"13800000000","expiry_date":"2026-12-01T10:00:00Z"}"#;
        let cred = OAuthCredential::from_json(Provider::Iflow, file(), iso).unwrap();
        assert_eq!(cred.expiry.as_ref().unwrap().at_ms, clock::parse_rfc3339("2026-12-01T10:00:00Z").unwrap());
        assert_eq!(cred.api_key.as_ref().unwrap().expose(), "sk-iflow");
        assert_eq!(cred.to_json(), serde_json::from_str::<Value>(iso).unwrap());

        let cpa =
            r#"{"refresh_token":"rt-1","api_key":"sk-iflow","expired":"2026-12-01T10:00:00+08:00","type":"iflow"}"#;
        let cred = OAuthCredential::from_json(Provider::Iflow, file(), cpa).unwrap();
        assert_eq!(cred.expiry.as_ref().unwrap().at_ms, clock::parse_rfc3339("2026-12-01T02:00:00Z").unwrap());
        assert_eq!(cred.to_json(), serde_json::from_str::<Value>(cpa).unwrap());

        let ms = r#"{"access_token":"at-1","refresh_token":"rt-1","api_key":"sk-iflow","expiry_date":1767225600000,"cookie":"c"}"#;
        let cred = OAuthCredential::from_json(Provider::Iflow, file(), ms).unwrap();
        assert_eq!(cred.api_key_field, ApiKeyField::Snake);
        assert_eq!(cred.to_json(), serde_json::from_str::<Value>(ms).unwrap());
    }

    #[test]
    fn a_qwen_file_keeps_its_resource_url_and_needs_login_round_trips() {
        let text = r#"{"access_token":"at","token_type":"Bearer","refresh_token":"rt","resource_url":"portal.qwen.ai","expiry_date":1770970098349}"#;
        let mut cred = OAuthCredential::from_json(Provider::QwenCode, file(), text).unwrap();
        assert_eq!(cred.resource_url.as_deref(), Some("portal.qwen.ai"));
        cred.needs_login = true;
        let again = OAuthCredential::from_json(Provider::QwenCode, file(), &cred.to_file_text()).unwrap();
        assert!(again.needs_login);
        assert_eq!(again.state(0), "needs_login");
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let err = OAuthCredential::from_json(Provider::GeminiCli, file(), r#"{"access_token": 5}"#).unwrap_err();
        assert_eq!(err, "access_token is not a string");
        let err =
            OAuthCredential::from_json(Provider::GeminiCli, file(), r#"{"expiry_date":"soon-secret"}"#).unwrap_err();
        assert!(!err.contains("soon-secret"), "{err}");
        let err =
            OAuthCredential::from_json(Provider::GeminiCli, file(), r#"{"refresh_token":"rt-secret"#).unwrap_err();
        assert!(!err.contains("rt-secret"), "{err}");
    }

    #[test]
    fn state_follows_the_expiry() {
        let mut cred = OAuthCredential::new(Provider::QwenCode, file());
        assert_eq!((cred.state(5_000), cred.expires_in_seconds(5_000)), ("expired", None));
        cred.expiry = Some(Expiry::millis(65_000));
        assert_eq!((cred.state(5_000), cred.expires_in_seconds(5_000)), ("ok", Some(60)));
        assert_eq!((cred.state(70_000), cred.expires_in_seconds(70_000)), ("expired", Some(-5)));
    }
}
