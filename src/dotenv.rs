//! `.env` parsing with python-dotenv's rules, so the files of the Python proxy read the same:
//! `KEY=value`, optional `export `, `#` comments (whole lines, or after whitespace in an
//! unquoted value), single quotes literal, double quotes with escapes, quoted values spanning
//! lines, and `${NAME}` expanded from earlier lines or the environment. An unquoted value is
//! taken as written, so `OPENAI_MODELS=["gpt-4o"]` keeps its quotes.

use std::collections::BTreeMap;

/// Parses one file's text. `outer` answers `${NAME}` for names the file has not set.
/// Errors name the line, never its content (it may hold a key).
pub fn parse(text: &str, outer: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
            return Err(format!("line {}: not a KEY=value line", index + 1));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let mut body = rest[1..].to_string();
                let close = loop {
                    if let Some(end) = closing_quote(&body, q) {
                        break end;
                    }
                    match lines.next() {
                        Some((_, next)) => {
                            body.push('\n');
                            body.push_str(next);
                        }
                        None => return Err(format!("line {}: unterminated {q} quote", index + 1)),
                    }
                };
                let inner = &body[..close];
                if q == '\'' { inner.to_string() } else { expand(&unescape(inner), &out, outer) }
            }
            _ => expand(strip_comment(rest).trim_end(), &out, outer),
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('\\' | '"' | '\'' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value ends where ` #` starts a comment.
fn strip_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    (1..bytes.len()).find(|&i| bytes[i] == b'#' && bytes[i - 1].is_ascii_whitespace()).map_or(s, |i| &s[..i])
}

/// `${NAME}` and `${NAME:-default}`; anything else with `$` stays as written.
fn expand(value: &str, earlier: &[(String, String)], outer: &dyn Fn(&str) -> Option<String>) -> String {
    if !value.contains("${") {
        return value.to_string();
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let found = outer(name).or_else(|| earlier.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        out.push_str(found.as_deref().unwrap_or(default));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// `value` quoted so that `parse` and python-dotenv both read it back unchanged. Single quotes
/// when they can carry it (nothing is special inside them for `parse`); python-dotenv decodes
/// `\\` and `\'` even there, so a value with a backslash or a single quote is double-quoted
/// with escapes instead. Double quotes expand `${NAME}` in both readers and no escape stops
/// that in python-dotenv, so such a value cannot be carried and is refused (the error names
/// no part of it).
pub fn quote(value: &str) -> Result<String, &'static str> {
    if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err("the value has a control character no .env quoting carries");
    }
    let plain = !value.contains(['\'', '\\', '\n', '\r', '\t']);
    if plain {
        return Ok(format!("'{value}'"));
    }
    if value.contains("${") {
        return Err("the value holds both ${ and a quote or backslash, which no .env quoting carries");
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// Merges parsed files in order: an earlier file wins over a later one.
pub fn merge_first_wins(target: &mut BTreeMap<String, String>, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        target.entry(k).or_insert(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_plain(text: &str) -> Vec<(String, String)> {
        parse(text, &|name| (name == "HOME_X").then(|| "/h".to_string())).unwrap()
    }

    #[test]
    fn python_dotenv_rules() {
        let text = "# comment\n\nexport A=1\nB = two words  # note\nC='lit ${HOME_X} \\n'\nD=\"esc\\n\\\"q\\\"\"\nE=[\"gpt-4o\",\"o3\"]\nF=${HOME_X}/x\nG=\"multi\nline\"\nH=a#b\nI=${A}${MISSING:-dflt}\n";
        let got = parse_plain(text);
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit ${HOME_X} \\n"),
            ("D", "esc\n\"q\""),
            ("E", "[\"gpt-4o\",\"o3\"]"),
            ("F", "/h/x"),
            ("G", "multi\nline"),
            ("H", "a#b"),
            ("I", "1dflt"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn quoted_values_parse_back_unchanged() {
        let values = [
            "plain-token_1//0g.x",
            "with space # and hash",
            "dollar ${HOME_X} in single quotes",
            "it's",
            "back\\slash",
            "quote \" and 'single'",
            "multi\nline\r\tend",
            "",
        ];
        for value in values {
            let line = format!("K={}\n", quote(value).unwrap());
            assert_eq!(parse_plain(&line), [("K".to_string(), value.to_string())], "{line}");
        }
        assert!(quote("it's ${HOME_X}").is_err());
        assert!(quote("bell\u{7}").is_err());
    }

    #[test]
    fn errors_name_the_line_not_the_content() {
        let e = parse("A=1\nB=\"sk-secret\n", &|_| None).unwrap_err();
        assert_eq!(e, "line 2: unterminated \" quote");
        assert!(parse("bad key=1", &|_| None).is_err());
    }
}
