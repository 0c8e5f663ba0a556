//! `man/keyrelay.1` against the program: every `--flag` that `--help` prints, every subcommand,
//! every variable of `config::ENV_VARS` (with its default), the version, and a clean groff run.
//! The checks go from the program to the page, so a flag may be documented before it lands.

use crate::support::{TempDir, run_cli};
use keyrelay::ENV_VARS;
use std::path::PathBuf;
use std::process::Command;

fn page_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man/keyrelay.1")
}

fn page() -> String {
    let path = page_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text of roff source as a reader sees it: font changes dropped, the escapes this page
/// uses turned into their characters, and for a macro line (`.B --dir`) its arguments.
fn plain(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    for line in roff.lines() {
        let text = match line.strip_prefix('.') {
            Some(macro_line) => match macro_line.split_once(char::is_whitespace) {
                Some((_, args)) => args.replace('"', ""),
                None => String::new(),
            },
            None => line.to_string(),
        };
        out.push_str(&unescape(&text));
        out.push('\n');
    }
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('e') => out.push('\\'),
            Some('&' | '%' | 'c') => {}
            Some(' ' | '~') => out.push(' '),
            // \fB, \fI, \fP, \fR, and \f(CW.
            Some('f') => {
                if chars.next() == Some('(') {
                    chars.next();
                    chars.next();
                }
            }
            // \(aq, \(dq, \(em, ...
            Some('(') => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(match name.as_str() {
                    "aq" => "'",
                    "dq" => "\"",
                    "em" => "\u{2014}",
                    "hy" => "-",
                    _ => "?",
                });
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Whether `needle` occurs in `haystack` as a whole token: not glued to a letter, digit, `_`
/// or `-` on either side (so `--port` is not found in `--port-range`, nor `30` in `300`).
fn has_token(haystack: &str, needle: &str) -> bool {
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    haystack
        .match_indices(needle)
        .any(|(i, _)| !glued(haystack[..i].chars().next_back()) && !glued(haystack[i + needle.len()..].chars().next()))
}

/// The source lines of one `.SH` section, without its heading.
fn section<'a>(roff: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines =
        roff.lines().skip_while(|l| l.strip_prefix(".SH").map(|t| t.trim().trim_matches('"')) != Some(name));
    assert!(lines.next().is_some(), "man/keyrelay.1 has no .SH {name}");
    lines.take_while(|l| !l.starts_with(".SH")).collect()
}

/// `--help` of the program (no subcommand) or of one subcommand.
fn help(subcommand: Option<&str>) -> String {
    let dir = TempDir::new();
    let args: Vec<&str> = subcommand.into_iter().chain(["--help"]).collect();
    let (code, out, err) = run_cli(dir.path(), &args, "");
    assert_eq!(code, 0, "keyrelay {args:?} failed: {err}");
    out
}

/// The `--long` flags a help text mentions.
fn long_flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .match_indices("--")
        .filter(|(i, _)| !help[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
        .map(|(i, _)| {
            let rest = &help[i + 2..];
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(rest.len());
            format!("--{}", &rest[..len])
        })
        .filter(|f| f.len() > 2)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// The names listed under `Commands:` in the top-level help.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn every_subcommand_and_flag_of_help_is_in_the_page() {
    let roff = page();
    let text = plain(&roff);
    let top = help(None);
    let subs = subcommands(&top);
    assert!(
        subs.iter().any(|s| s == "serve") && subs.iter().any(|s| s == "models"),
        "no subcommands found in --help:\n{top}"
    );
    let headings: Vec<String> =
        roff.lines().filter_map(|l| l.strip_prefix(".SS ")).map(|h| unescape(h).replace('"', "")).collect();
    let mut missing = Vec::new();
    for flag in long_flags(&top) {
        if !has_token(&text, &flag) {
            missing.push(format!("keyrelay {flag}"));
        }
    }
    for sub in &subs {
        let documented = headings.iter().any(|h| h.split_whitespace().find(|w| *w != "keyrelay") == Some(sub.as_str()));
        if !documented {
            missing.push(format!("a .SS heading for the subcommand {sub}"));
        }
        for flag in long_flags(&help(Some(sub))) {
            if !has_token(&text, &flag) {
                missing.push(format!("keyrelay {sub} {flag}"));
            }
        }
    }
    assert!(missing.is_empty(), "man/keyrelay.1 does not document:\n  {}", missing.join("\n  "));
}

#[test]
fn every_env_var_has_an_entry_with_its_default() {
    let roff = page();
    let lines = section(&roff, "ENVIRONMENT");
    // Each `.TP` entry: its tag line, and the paragraph up to the next entry or heading.
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let is_tp = lines[i].split_whitespace().next() == Some(".TP");
        if is_tp && i + 1 < lines.len() {
            let tag = plain(lines[i + 1]);
            let body_end = (i + 2..lines.len())
                .find(|&j| [".TP", ".PP", ".SS", ".SH"].iter().any(|m| lines[j].starts_with(m)))
                .unwrap_or(lines.len());
            entries.push((tag, plain(&lines[i + 2..body_end].join("\n"))));
            i = body_end;
        } else {
            i += 1;
        }
    }
    let mut problems = Vec::new();
    for var in ENV_VARS {
        let Some((_, body)) = entries.iter().find(|(tag, _)| has_token(tag, var.name)) else {
            problems.push(format!("{}: no .TP entry in ENVIRONMENT", var.name));
            continue;
        };
        let default = var.default.trim();
        let lower = body.to_ascii_lowercase();
        if default != "-" && !has_token(&lower, &default.to_ascii_lowercase()) {
            problems.push(format!("{}: its entry does not give the default {default:?}", var.name));
        }
    }
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        if !entries.iter().any(|(tag, _)| has_token(tag, name)) {
            problems.push(format!("{name}: no .TP entry in ENVIRONMENT"));
        }
    }
    assert!(problems.is_empty(), "man/keyrelay.1:\n  {}", problems.join("\n  "));
}

#[test]
fn the_title_carries_the_crate_version() {
    let roff = page();
    let th = roff.lines().find(|l| l.starts_with(".TH ")).expect("man/keyrelay.1 has a .TH line");
    // .TH KEYRELAY 1 <date> "keyrelay <version>" "User Commands"
    let quoted: Vec<&str> = th.split('"').skip(1).step_by(2).collect();
    assert_eq!(quoted.first().copied(), Some(concat!("keyrelay ", env!("CARGO_PKG_VERSION"))), "{th}");
    assert!(th.starts_with(".TH KEYRELAY 1 "), "{th}");
}

#[test]
fn groff_reads_the_page_without_a_warning() {
    let output = match Command::new("groff").args(["-man", "-ww", "-z"]).arg(page_path()).env("LC_ALL", "C").output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("groff is not installed: the man page lint is skipped (scripts/test.sh installs groff-base)");
            return;
        }
        Err(e) => panic!("running groff: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "groff -man -ww -z man/keyrelay.1 ({}):\n{stderr}",
        output.status
    );
}

#[test]
fn the_roff_reader_of_these_tests_reads_what_the_page_uses() {
    assert_eq!(
        plain(".BI \\-\\-host \" HOST\"\n\\fB<PROVIDER>_API_KEY_\\fP\\fIN\\fP, x\\(aqy\\e"),
        "--host  HOST\n<PROVIDER>_API_KEY_N, x'y\\\n"
    );
    assert!(has_token("see --port, and", "--port"));
    assert!(!has_token("--port-range", "--port"));
    assert!(!has_token("Default: 300.", "30"));
    assert_eq!(
        long_flags("  --dir   data (see --dir)\n  -V, --version  x\n  --allow-no-auth y"),
        ["--allow-no-auth", "--dir", "--version"]
    );
}

#[test]
fn every_nested_subcommand_and_its_flags_are_in_the_page() {
    let text = plain(&page());
    let mut missing = Vec::new();
    for sub in subcommands(&help(None)) {
        let sub_help = help(Some(&sub));
        for nested in subcommands(&sub_help) {
            let name = format!("{sub} {nested}");
            if !text.contains(&name) {
                missing.push(name.clone());
            }
            let dir = TempDir::new();
            let (code, out, err) = run_cli(dir.path(), &[&sub, &nested, "--help"], "");
            assert_eq!(code, 0, "keyrelay {name} --help: {err}");
            for flag in long_flags(&out) {
                if !has_token(&text, &flag) {
                    missing.push(format!("keyrelay {name} {flag}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "man/keyrelay.1 does not document:\n  {}", missing.join("\n  "));
}

/// Every environment variable the code reads by name (`get("NAME")` on the merged environment,
/// `env::var("NAME")`, `var_os("NAME")`, and `config`'s typed reads such as `seconds("NAME")`),
/// found by scanning `src/`.
fn variables_read_by_the_code() -> Vec<String> {
    fn scan(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                scan(&path, found);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let typed_reads = ["text(\"", "seconds(\"", "number(\"", "flag(\"", "optional(\""];
            for call in ["get(\"", "get, \"", "var(\"", "var_os(\""].into_iter().chain(typed_reads) {
                for (i, _) in text.match_indices(call) {
                    let rest = &text[i + call.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    if name.len() > 2
                        && rest[name.len()..].starts_with('"')
                        && name.chars().next().unwrap().is_ascii_uppercase()
                    {
                        found.push(name);
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    scan(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_environment_variable_the_code_reads_is_in_the_page() {
    let text = plain(&page());
    let read = variables_read_by_the_code();
    assert!(read.iter().any(|v| v == "GLOBAL_TIMEOUT"), "the scan found nothing: {read:?}");
    // UPDATE_EXPECT rewrites golden files in the unit tests: for developers, in ARCHITECTURE.md.
    let missing: Vec<&String> = read.iter().filter(|v| *v != "UPDATE_EXPECT" && !has_token(&text, v)).collect();
    assert!(missing.is_empty(), "read by the code but not in man/keyrelay.1: {missing:?}");
}
