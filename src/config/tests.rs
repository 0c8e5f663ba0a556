//! Unit tests of `config`: loading from an explicit variable map, providers and their keys,
//! settings and their defaults, model filters.

use super::models::{ModelFilter, glob_match};
use super::*;
use crate::providers::Family;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn discovers_keys_bases_and_custom_providers() {
    let e = env(&[
        ("OPENAI_API_KEY_2", "k2"),
        ("OPENAI_API_KEY", "k0"),
        ("OPENAI_API_KEY_10", "k10"),
        ("OPENAI_API_KEY_1", "k0"),
        ("NVIDIA_NIM_API_KEY_1", "nv"),
        ("GROQ_API_KEY", " "),
        ("MYLOCAL_API_BASE", "http://127.0.0.1:9/v1/"),
        ("MYLOCAL_API_KEY", "x"),
        ("MYLOCAL_MODELS", r#"["m1","m2"]"#),
        ("PROXY_API_KEY", "proxy"),
        ("NOBASE_API_KEY", "stray"),
    ]);
    let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
    let keys: Vec<&str> = cfg.providers["openai"].keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["k0", "k2", "k10"]);
    assert_eq!(cfg.providers["nvidia_nim"].keys.len(), 1);
    assert!(cfg.providers["groq"].keys.is_empty());
    let local = &cfg.providers["mylocal"];
    assert_eq!(local.base, "http://127.0.0.1:9/v1");
    assert_eq!(local.static_models, ["m1", "m2"]);
    assert!(!cfg.providers.contains_key("nobase"));
    assert!(!cfg.providers.contains_key("proxy"));
    assert_eq!(cfg.proxy_api_key.as_ref().map(|k| k.expose()), Some("proxy"));
}

#[test]
fn azure_needs_its_base_and_a_plain_api_version() {
    let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
    let e = load(&[("AZURE_API_KEY", "k")]).unwrap_err().to_string();
    assert!(e.contains("AZURE_API_BASE"), "{e}");
    let cfg = load(&[("AZURE_API_KEY", "k"), ("AZURE_API_BASE", "https://r.openai.azure.com/")]).unwrap();
    let azure = &cfg.providers["azure"];
    assert_eq!((azure.family, azure.base.as_str()), (Family::OpenAi, "https://r.openai.azure.com"));
    assert_eq!(azure.api_version, "2024-10-21");
    let cfg = load(&[("AZURE_API_BASE", "https://r"), ("AZURE_API_VERSION", "2025-04-01-preview")]).unwrap();
    assert_eq!(cfg.providers["azure"].api_version, "2025-04-01-preview");
    assert!(load(&[("AZURE_API_VERSION", "2024&x=1")]).is_err());
    // No keys, no base: loads, and an `azure/*` request says what is missing.
    assert!(load(&[]).unwrap().providers["azure"].base.is_empty());
}

#[test]
fn vertex_bases_and_service_accounts() {
    let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
    let key_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vertex/test-service-account.json");
    let cfg = load(&[("VERTEX_API_KEY", "AIza-1")]).unwrap();
    assert_eq!(cfg.providers["vertex"].base, "https://aiplatform.googleapis.com/v1", "express mode's base");
    let cfg = load(&[("VERTEX_PROJECT", "p1"), ("VERTEX_LOCATION", "global")]).unwrap();
    assert_eq!(cfg.providers["vertex"].base, "https://aiplatform.googleapis.com/v1/projects/p1/locations/global");
    let cfg = load(&[("VERTEX_CREDENTIALS_2", key_file), ("VERTEX_CREDENTIALS", key_file)]).unwrap();
    let vertex = &cfg.providers["vertex"];
    assert_eq!((cfg.vertex.accounts.len(), vertex.oauth.len()), (1, 1), "one account once");
    assert!(vertex.oauth[0].account.starts_with("keyrelay-test@"));
    let base = cfg.vertex.account_base(&cfg.vertex.accounts[0]);
    assert_eq!(
        base,
        "https://us-central1-aiplatform.googleapis.com/v1/projects/keyrelay-test-project/locations/us-central1"
    );
    let e = load(&[("VERTEX_CREDENTIALS_1", "/nonexistent.json")]).unwrap_err().to_string();
    assert!(e.contains("VERTEX_CREDENTIALS_1"), "{e}");
    assert!(load(&[("VERTEX_LOCATION", "us/../x")]).is_err());
    assert!(load(&[("VERTEX_PROJECT", "a?b")]).is_err());
}

#[test]
fn bedrock_pairs_keys_and_region() {
    let load = |pairs: &[(&str, &str)]| Config::from_env(Path::new("."), &env(pairs), LauncherConfig::default());
    let cfg = load(&[
        ("BEDROCK_AWS_ACCESS_KEY_ID", "AKIA0000"),
        ("BEDROCK_AWS_SECRET_ACCESS_KEY", "s0"),
        ("BEDROCK_AWS_ACCESS_KEY_ID_2", "AKIA2222"),
        ("BEDROCK_AWS_SECRET_ACCESS_KEY_2", "s2"),
        ("BEDROCK_AWS_SESSION_TOKEN_2", "t2"),
        ("BEDROCK_API_KEY_1", "bedrock-api-key"),
        ("BEDROCK_AWS_REGION", "eu-west-3"),
    ])
    .unwrap();
    let bedrock = &cfg.providers["bedrock"];
    assert_eq!((bedrock.family, bedrock.region.as_str()), (Family::Bedrock, "eu-west-3"));
    assert_eq!(bedrock.base, "https://bedrock-runtime.eu-west-3.amazonaws.com");
    let keys: Vec<Vec<&str>> = bedrock.keys.iter().map(|k| k.fields().collect()).collect();
    assert_eq!(keys, [vec!["bedrock-api-key"], vec!["AKIA0000", "s0"], vec!["AKIA2222", "s2", "t2"]]);
    assert_eq!(bedrock.keys[1].masked(), "...0000");
    let e = load(&[("BEDROCK_AWS_ACCESS_KEY_ID_3", "AKIA")]).unwrap_err().to_string();
    assert!(e.contains("BEDROCK_AWS_SECRET_ACCESS_KEY_3"), "{e}");
    let e = load(&[("BEDROCK_AWS_SECRET_ACCESS_KEY", "s")]).unwrap_err().to_string();
    assert!(e.contains("BEDROCK_AWS_ACCESS_KEY_ID is not"), "{e}");
    assert!(load(&[("BEDROCK_AWS_REGION", "us-east-1.evil.com/")]).is_err());
    let cfg = load(&[("BEDROCK_API_BASE", "http://127.0.0.1:9/")]).unwrap();
    assert_eq!(
        (cfg.providers["bedrock"].base.as_str(), cfg.providers["bedrock"].region.as_str()),
        ("http://127.0.0.1:9", "us-east-1")
    );
}

#[test]
fn bad_numbers_are_config_errors() {
    let e = env(&[("GLOBAL_TIMEOUT", "soon")]);
    assert!(Config::from_env(Path::new("."), &e, LauncherConfig::default()).is_err());
    let e = env(&[("TIMEOUT_CONNECT", "0.5")]);
    let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
    assert_eq!(cfg.settings.timeout_connect, Duration::from_millis(500));
}

#[test]
fn oauth_variables_and_the_skip_flag() {
    let e = env(&[("SKIP_OAUTH_INIT_CHECK", "True"), ("QWEN_CODE_REFRESH_TOKEN", "r"), ("IFLOW_API_KEY", "k")]);
    let cfg = Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap();
    assert!(cfg.skip_oauth_init_check);
    assert_eq!(cfg.oauth.len(), 1);
    assert_eq!(cfg.providers["iflow"].keys.len(), 1, "IFLOW_API_KEY stays a plain API key");
    let e = env(&[("SKIP_OAUTH_INIT_CHECK", "maybe")]);
    assert!(Config::from_env(Path::new("."), &e, LauncherConfig::default()).is_err());
    let e = env(&[]);
    assert!(!Config::from_env(Path::new("."), &e, LauncherConfig::default()).unwrap().skip_oauth_init_check);
}

#[test]
fn globs_and_filters() {
    assert!(glob_match("gpt-*", "gpt-4o"));
    assert!(glob_match("*mini*", "gpt-4o-mini-2024"));
    assert!(glob_match("gpt-?o", "gpt-4o"));
    assert!(!glob_match("gpt-?o", "gpt-4oo"));
    assert!(glob_match("*", ""));
    let f = ModelFilter::parse(Some("*"), Some("gpt-4o, openai/o3*"));
    assert!(f.allows("openai", "gpt-4o"));
    assert!(f.allows("openai", "o3-mini"));
    assert!(!f.allows("openai", "gpt-3.5"));
    let f = ModelFilter::parse(Some("*-preview"), None);
    assert!(!f.allows("openai", "x-preview") && f.allows("openai", "x"));
}

#[test]
fn unset_settings_take_the_tables_defaults() {
    let cfg = Config::from_env(Path::new("."), &env(&[]), LauncherConfig::default()).unwrap();
    let (s, c) = (&cfg.settings, &cfg.settings.client);
    let seconds = |d: Duration| d.as_secs_f64().to_string();
    let loaded: Vec<(&str, String)> = vec![
        ("KEYRELAY_LOG", cfg.log_level.clone()),
        ("GLOBAL_TIMEOUT", seconds(s.global_timeout)),
        ("TIMEOUT_CONNECT", seconds(s.timeout_connect)),
        ("TIMEOUT_READ_NON_STREAMING", seconds(s.timeout_read_non_streaming)),
        ("TIMEOUT_READ_STREAMING", seconds(s.timeout_read_streaming)),
        ("MAX_REQUEST_BODY_BYTES", s.max_request_body_bytes.to_string()),
        ("MODELS_CACHE_SECONDS", seconds(s.models_cache)),
        ("EMBEDDING_BATCH_WINDOW_MS", s.embedding_batch_window.as_millis().to_string()),
        ("EMBEDDING_BATCH_MAX_INPUTS", s.embedding_batch_max_inputs.to_string()),
        ("MAX_CONNECTIONS", c.max_connections.to_string()),
        ("CLIENT_HEAD_TIMEOUT", seconds(c.head_timeout)),
        ("CLIENT_BODY_TIMEOUT", seconds(c.body_timeout)),
        ("CLIENT_BODY_MIN_BYTES", c.body_min_bytes.to_string()),
        ("CLIENT_IDLE_TIMEOUT", seconds(c.idle_timeout)),
        ("CLIENT_WRITE_TIMEOUT", seconds(c.write_timeout)),
        ("DAILY_RESET_HOUR_UTC", s.daily_reset_hour.to_string()),
        ("SKIP_OAUTH_INIT_CHECK", cfg.skip_oauth_init_check.to_string()),
        ("OAUTH_REFRESH_INTERVAL", seconds(cfg.oauth_refresh_interval)),
        ("STATE_BACKEND", if cfg.state.redis.is_none() { "file" } else { "redis" }.to_string()),
        ("REDIS_LEASE_TTL", seconds(cfg.state.lease_ttl)),
        ("REDIS_TIMEOUT", seconds(cfg.state.timeout)),
        ("VERTEX_LOCATION", cfg.vertex.location.clone()),
        ("AZURE_API_VERSION", cfg.providers["azure"].api_version.clone()),
        ("BEDROCK_AWS_REGION", cfg.providers["bedrock"].region.clone()),
        ("MAX_CONCURRENT_REQUESTS_PER_KEY_<PROVIDER>", cfg.providers["openai"].max_concurrent.to_string()),
        ("ROTATION_MODE_<PROVIDER>", format!("{:?}", cfg.providers["openai"].rotation).to_ascii_lowercase()),
    ];
    for (row, value) in loaded {
        assert_eq!(crate::env_vars::default_of(row).unwrap(), value, "{row}");
    }
    // The familiar figures, so a change to the table is a visible change of behaviour.
    assert_eq!((s.global_timeout, s.timeout_read_non_streaming), (Duration::from_secs(30), Duration::from_secs(600)));
    assert_eq!((s.max_request_body_bytes, c.max_connections), (33_554_432, 1024));
    assert_eq!((cfg.state.timeout, cfg.vertex.location.as_str()), (Duration::from_millis(200), "us-central1"));
}

#[test]
fn every_concrete_default_given_explicitly_loads_the_same() {
    let blank = Config::from_env(Path::new("."), &env(&[]), LauncherConfig::default()).unwrap();
    // A default that describes rather than gives a value ("unset", "built in", "-") is skipped.
    let concrete = ENV_VARS.iter().filter(|v| !["-", "unset", "hostname-pid"].contains(&v.default));
    let concrete = concrete.filter(|v| !v.default.contains([' ', '<']));
    for var in concrete {
        let name = var.name.replace("<PROVIDER>", "OPENAI");
        let cfg = Config::from_env(Path::new("."), &env(&[(&name, var.default)]), LauncherConfig::default())
            .unwrap_or_else(|e| panic!("{name}={:?}: {e}", var.default));
        assert_eq!(format!("{:?}", cfg.settings), format!("{:?}", blank.settings), "{name}");
        let (openai, before) = (&cfg.providers["openai"], &blank.providers["openai"]);
        assert_eq!((openai.max_concurrent, openai.rotation), (before.max_concurrent, before.rotation), "{name}");
    }
}

#[test]
fn a_read_of_an_undocumented_variable_is_an_error() {
    // Through a binding, so that `tests/it/man.rs`'s scan of reads does not take it for one.
    const UNDOCUMENTED: &str = "NOT_IN_THE_TABLE";
    let e = env(&[(UNDOCUMENTED, "5")]);
    let vars = Vars::new(&e);
    let why = vars.number(UNDOCUMENTED).unwrap_err().to_string();
    assert!(why.contains(UNDOCUMENTED) && why.contains("ENV_VARS"), "{why}");
    assert!(vars.optional(UNDOCUMENTED).is_err());
    let member = crate::env_vars::Var::family("NOT_A_FAMILY_<PROVIDER>", "OPENAI");
    assert!(vars.text(member).is_err());
    assert_eq!(crate::env_vars::Var::family("ROTATION_MODE_<PROVIDER>", "GROQ").name(), "ROTATION_MODE_GROQ");
}

#[test]
fn the_config_redactor_covers_every_oauth_token() {
    let vars = [
        ("IFLOW_1_REFRESH_TOKEN", "iflow-refresh-1234567"),
        ("IFLOW_1_ACCESS_TOKEN", "iflow-access-7654321"),
        ("IFLOW_1_API_KEY", "sk-iflow-api-key-000"),
        ("GEMINI_CLI_REFRESH_TOKEN", "1//0g-gemini-refresh"),
    ];
    let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = Config::from_env(Path::new("."), &env, Default::default()).unwrap();
    let r = config.redactor();
    for (_, secret) in vars {
        let out = r.text(&format!("echo {secret} back")).into_owned();
        assert_eq!(out, "echo [REDACTED] back");
    }
}
