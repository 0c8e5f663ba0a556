//! AWS Signature Version 4, as AWS's "Create a signed AWS API request" describes it: the
//! canonical request, the string to sign and the signing key, then the `Authorization`
//! header. Pure: the time comes in as an argument, so the published test suite's vectors
//! (`20150830T123600Z`) check it exactly.
//!
//! The canonical URI encodes every path segment once more (a `%3A` already in the URL becomes
//! `%253A`), which AWS requires for every service but S3; the query's pairs are decoded,
//! encoded again and sorted; header values are trimmed with inner runs of spaces collapsed,
//! and a header given twice is signed as its values joined by `,`.

use ring::hmac;
use sha2::{Digest, Sha256};

/// The algorithm named in the string to sign and the header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credentials of one signature. The secret is only read here and never copied into
/// anything but the signature. A temporary pair's session token is not part of them: the
/// caller sends it as the `x-amz-security-token` header, which is signed like any other.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

/// Where and when the request is signed.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ` (`amz_date`).
    pub amz_date: &'a str,
}

/// What is signed: the method, the path and query exactly as sent (already percent-encoded),
/// the headers to sign (`host` and `x-amz-date` among them) and the body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
}

/// The parts of a signature, kept for the tests and for a mock that checks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

/// `YYYYMMDDTHHMMSSZ` in UTC for a time in ms since the epoch.
pub fn amz_date(now_ms: u64) -> String {
    let stamp = crate::clock::utc_stamp(now_ms);
    format!("{}Z", stamp.replace('-', "T"))
}

/// Signs `request` (module comment).
pub fn sign(credentials: &Credentials, scope: &Scope, request: &Request) -> Signature {
    let (canonical_headers, signed_headers) = canonical_headers(request.headers);
    let canonical_request = [
        request.method.to_string(),
        canonical_uri(request.path),
        canonical_query(request.query),
        canonical_headers,
        signed_headers.clone(),
        hex_sha256(request.payload),
    ]
    .join("\n");
    let date = &scope.amz_date[..scope.amz_date.len().min(8)];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign =
        format!("{ALGORITHM}\n{}\n{credential_scope}\n{}", scope.amz_date, hex_sha256(canonical_request.as_bytes()));
    let key = signing_key(credentials.secret_access_key, date, scope.region, scope.service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    let authorization = format!(
        "{ALGORITHM} Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );
    Signature { canonical_request, string_to_sign, signed_headers, signature, authorization }
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// Each segment of the path as sent, encoded once more; `/` when empty.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(|segment| uri_encode(segment.as_bytes())).collect::<Vec<_>>().join("/")
}

/// The query's pairs decoded, encoded the one canonical way and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(name)), uri_encode(&percent_decode(value)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&")
}

/// The canonical header block (each `name:value\n`) and the signed header list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let block: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = merged.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    (block, signed)
}

/// Percent-encodes every byte but the unreserved `A-Z a-z 0-9 - . _ ~`, upper-case hex.
pub fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published "aws-sig-v4-test-suite" (AWS General Reference, Signature Version 4 test
    // suite): its credentials, scope and time, and for each case below its request and the
    // signature of its `.authz` file.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    struct Vector {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: &'static str,
        /// Beyond `host` and `x-amz-date`, which every case has.
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        token: Option<&'static str>,
        signed_headers: &'static str,
        signature: &'static str,
    }

    /// What most cases share: a plain `GET /` with no query, headers or body, unsigned by a
    /// session token.
    const VANILLA: Vector = Vector {
        name: "",
        method: "GET",
        path: "/",
        query: "",
        headers: &[],
        body: "",
        token: None,
        signed_headers: "host;x-amz-date",
        signature: "",
    };

    const VECTORS: &[Vector] = &[
        Vector {
            name: "get-vanilla",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ..VANILLA
        },
        Vector {
            name: "get-vanilla-query-order-key",
            query: "Param1=value2&Param1=Value1",
            signature: "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
            ..VANILLA
        },
        Vector {
            name: "get-vanilla-query-order-key-case",
            query: "Param2=value2&Param1=value1",
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ..VANILLA
        },
        Vector {
            name: "get-vanilla-query-order-value",
            query: "Param1=value2&Param1=value1",
            signature: "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
            ..VANILLA
        },
        Vector {
            name: "get-vanilla-utf8-query",
            query: "%E1%88%B4=bar",
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ..VANILLA
        },
        Vector {
            name: "get-unreserved",
            path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ..VANILLA
        },
        Vector {
            name: "get-header-key-duplicate",
            headers: &[("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")],
            signed_headers: "host;my-header1;x-amz-date",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ..VANILLA
        },
        Vector {
            name: "get-header-value-trim",
            headers: &[("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")],
            signed_headers: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ..VANILLA
        },
        Vector {
            name: "post-vanilla",
            method: "POST",
            signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ..VANILLA
        },
        Vector {
            name: "post-vanilla-query",
            method: "POST",
            query: "Param1=value1",
            signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ..VANILLA
        },
        Vector {
            name: "post-header-key-sort",
            method: "POST",
            headers: &[("My-Header1", "value1")],
            signed_headers: "host;my-header1;x-amz-date",
            signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
            ..VANILLA
        },
        Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            headers: &[("Content-Type", "application/x-www-form-urlencoded")],
            body: "Param1=value1",
            signed_headers: "content-type;host;x-amz-date",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ..VANILLA
        },
        Vector {
            name: "post-sts-token/post-sts-header-before",
            method: "POST",
            token: Some(TOKEN),
            signed_headers: "host;x-amz-date;x-amz-security-token",
            signature: "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
            ..VANILLA
        },
    ];

    fn run(v: &Vector) -> Signature {
        let mut headers: Vec<(String, String)> =
            vec![("Host".into(), "example.amazonaws.com".into()), ("X-Amz-Date".into(), DATE.into())];
        headers.extend(v.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        if let Some(token) = v.token {
            headers.push(("X-Amz-Security-Token".into(), token.into()));
        }
        let credentials = Credentials { access_key_id: AKID, secret_access_key: SECRET };
        let scope = Scope { region: "us-east-1", service: "service", amz_date: DATE };
        let request =
            Request { method: v.method, path: v.path, query: v.query, headers: &headers, payload: v.body.as_bytes() };
        sign(&credentials, &scope, &request)
    }

    #[test]
    fn the_published_test_suite() {
        for v in VECTORS {
            let got = run(v);
            let expected = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={}",
                v.signed_headers, v.signature
            );
            assert_eq!(got.authorization, expected, "{}:\n{}", v.name, got.canonical_request);
        }
    }

    #[test]
    fn get_vanilla_canonical_request_and_string_to_sign() {
        let got = run(&VECTORS[0]);
        assert_eq!(
            got.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            got.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    #[test]
    fn path_segments_are_encoded_twice() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(uri_encode(b"a:b/c~"), "a%3Ab%2Fc~");
    }

    #[test]
    fn amz_dates() {
        assert_eq!(amz_date(1_440_938_160_000), DATE);
    }
}
