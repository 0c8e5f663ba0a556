//! `keyrelay status`: every key's state, asked of the running server when there is one,
//! otherwise read from `key_usage.json` and the configuration.

use crate::cli::StatusArgs;
use crate::clock;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::keys::pool::KeyPool;
use crate::keys::{report, usage_file};
use crate::oauth;
use crate::upstream::{Client, Method, UpstreamRequest};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(config: Config, args: StatusArgs) -> Result<ExitCode> {
    let report = match &args.url {
        Some(url) => ask_server(&config, url)?.ok_or_else(|| Error::Config(format!("no keyrelay answers at {url}")))?,
        None => match ask_server(&config, &default_url(&config)) {
            Ok(Some(report)) => report,
            _ => offline(&config),
        },
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        for line in report::lines(&report) {
            writeln!(out, "{}", crate::redact::text(&line.to_string())).context("writing to stdout")?;
        }
    } else {
        out.write_all(crate::redact::text(&report::table(&report)).as_bytes()).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    if args.check {
        let unusable = report::unusable_providers(&report);
        if !unusable.is_empty() {
            eprintln!("keyrelay: no usable key for: {}", unusable.join(", "));
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn default_url(config: &Config) -> String {
    let host = match config.launcher.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1".to_string(),
        "::" => "[::1]".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("http://{host}:{}", config.launcher.port)
}

/// `GET <url>/v1/quota-stats`; `Ok(None)` when nothing listens there.
fn ask_server(config: &Config, url: &str) -> Result<Option<Value>> {
    let mut settings = config.settings.clone();
    settings.timeout_connect = Duration::from_secs(2);
    settings.timeout_read_non_streaming = Duration::from_secs(10);
    let client = Client::new(settings.timeouts());
    let mut headers = Vec::new();
    if let Some(key) = &config.proxy_api_key {
        headers.push(("authorization".to_string(), format!("Bearer {}", key.expose())));
    }
    let request = UpstreamRequest {
        method: Method::Get,
        url: format!("{}/v1/quota-stats", url.trim_end_matches('/')),
        headers,
        body: None,
        stream: false,
    };
    let Ok(mut response) = client.send(&request) else { return Ok(None) };
    let body = crate::upstream::read_all(&mut response.body).context(format!("reading the answer of {url}"))?;
    if response.status != 200 {
        let why =
            serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["error"]["message"].as_str().map(String::from));
        return Err(Error::Config(format!(
            "{url} answered {}: {}",
            response.status,
            why.unwrap_or_else(|| "not a keyrelay".into())
        )));
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| Error::Config(format!("{url} is not a keyrelay: {e}")))
}

fn offline(config: &Config) -> Value {
    let now = clock::now_ms();
    let mut pool = KeyPool::new(config, now);
    if let Some(snapshot) = usage_file::read(&config.data_dir.join(usage_file::FILE_NAME)) {
        pool.restore(snapshot, now);
    }
    let oauth = config.oauth.iter().map(|c| (oauth::identity::pool_id(c), oauth::refresh::describe(c, now))).collect();
    report::build(&pool.status(now), &oauth)
}
