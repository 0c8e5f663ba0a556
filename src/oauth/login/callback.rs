//! The loopback callback server of the authorization-code logins: a tiny HTTP server on
//! 127.0.0.1 that waits for the browser to come back to `/oauth2callback?code=...&state=...`
//! and answers it with a small HTML page.
//!
//! Anything on the machine can connect to it, so every connection is treated as hostile: its
//! request head must arrive within `HEAD_TIMEOUT` and fit in `MAX_HEAD_BYTES`, only a few
//! connections are served at once (each on its own thread, so a browser's idle pre-connection
//! cannot hold up the real callback), and only a callback carrying the login's own `state`
//! counts; any other is answered with an error page and ignored, and the login keeps waiting.

use super::{LoginError, LoginResult, Options};
use crossbeam_channel::{Sender, bounded};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The path the redirect URI names.
pub const PATH: &str = "/oauth2callback";
/// A request head is one short line and a few headers; browsers send well under this.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;

/// What the authorization server sent back through the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Code(String),
    Error(String),
}

/// The bound listener, so the port is taken before the authorization URL is printed.
pub struct CallbackServer {
    listener: TcpListener,
}

impl CallbackServer {
    pub fn bind(port: u16) -> LoginResult<CallbackServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| LoginError::Failed(format!("cannot listen on 127.0.0.1:{port} for the callback: {e}")))?;
        Ok(CallbackServer { listener })
    }

    /// Waits for the callback with `state` and returns its `code`. The accept thread is left
    /// blocked when this returns: the command ends soon after, and with it the thread.
    pub fn wait(self, state: &str, options: &Options) -> LoginResult<String> {
        let (tx, rx) = bounded::<Outcome>(1);
        let state: Arc<str> = Arc::from(state);
        let listener = self.listener;
        std::thread::spawn(move || accept_loop(listener, state, tx));
        match rx.recv_timeout(options.remaining()?) {
            Ok(Outcome::Code(code)) => Ok(code),
            Ok(Outcome::Error(error)) if error == "access_denied" => {
                Err(LoginError::Denied("access was denied in the browser".into()))
            }
            Ok(Outcome::Error(error)) => {
                Err(LoginError::Failed(format!("the authorization server sent back the error {error}")))
            }
            Err(_) => Err(LoginError::TimedOut),
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<str>, tx: Sender<Outcome>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of file descriptors, say: wait a little instead of spinning on the error.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (state, tx, active) = (state.clone(), tx.clone(), active.clone());
        std::thread::spawn(move || {
            serve(stream, &state, &tx);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Answers one connection; a callback with the right `state` is passed on once its page is
/// written (so the browser gets its page before the command can end).
fn serve(mut stream: TcpStream, state: &str, tx: &Sender<Outcome>) {
    let Some(target) = read_target(&mut stream) else {
        answer(&mut stream, 400, "Bad request", "keyrelay could not read this request.");
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != PATH {
        answer(&mut stream, 404, "Not found", "This is keyrelay's login callback; nothing else is here.");
        return;
    }
    let params = parse_query(query);
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if param("state") != Some(state) {
        let text = "This answer does not belong to the login keyrelay is waiting for, so it was ignored.";
        answer(&mut stream, 400, "Login not recognised", text);
        return;
    }
    let outcome = match (param("error"), param("code")) {
        (Some(error), _) => Outcome::Error(error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()),
        (None, Some(code)) if !code.is_empty() => Outcome::Code(code.to_string()),
        _ => {
            answer(&mut stream, 400, "Bad callback", "The answer carried neither a code nor an error.");
            return;
        }
    };
    match &outcome {
        Outcome::Code(_) => {
            answer(&mut stream, 200, "Login complete", "keyrelay received the login. You can close this window.")
        }
        Outcome::Error(error) => {
            answer(&mut stream, 200, "Login failed", &format!("The login ended with the error {error}."))
        }
    }
    let _ = tx.try_send(outcome);
}

/// The request target of a GET, read within `HEAD_TIMEOUT` and `MAX_HEAD_BYTES`.
fn read_target(stream: &mut TcpStream) -> Option<String> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        stream.set_read_timeout(Some(left)).ok()?;
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                return (request.method? == "GET").then(|| request.path.map(String::from)).flatten();
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD_BYTES => continue,
            _ => return None,
        }
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A small HTML page; `text` is escaped.
fn answer(stream: &mut TcpStream, status: u16, title: &str, text: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>keyrelay: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>\n",
        escape(text)
    );
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.write_all(format!("{head}{body}").as_bytes());
    let _ = stream.flush();
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let q = parse_query("code=4%2F0Ab-x&state=s+1&error&bad=%zz%4");
        assert_eq!(q[0], ("code".to_string(), "4/0Ab-x".to_string()));
        assert_eq!(q[1], ("state".to_string(), "s 1".to_string()));
        assert_eq!(q[2], ("error".to_string(), String::new()));
        assert_eq!(q[3], ("bad".to_string(), "%zz%4".to_string()));
    }

    #[test]
    fn pages_escape_what_they_quote() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
