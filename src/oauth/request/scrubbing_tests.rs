//! The scrubber, attacked with a secret in every encoding an endpoint might echo. The forms are
//! derived here with the encoders themselves (serde_json, form_urlencoded, base64) and by hand
//! for the conventions of other languages, independently of the scrubber's own matching.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::base::Scrubber;
use crate::base::scrub::MIN_PARTIAL;
use crate::oauth::credentials::Credentials;

/// A secret with every character that encoders treat differently, ending in a newline.
pub(crate) const NASTY: &str = "s3cr3t ~+/=&<x>\"'\n";
/// A client_id that form-encoding changes.
pub(crate) const NASTY_ID: &str = "client id/1";

pub(crate) fn credentials(id: &str, secret: &str) -> Credentials {
    Credentials::with_secret(id, secret)
}

/// Percent-encoding that leaves letters, digits and `keep` alone.
fn percent(value: &str, keep: &str, space_plus: bool, lower: bool) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || keep.contains(c) {
            out.push(c);
        } else if c == ' ' && space_plus {
            out.push('+');
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                if lower {
                    out.push_str(&format!("%{b:02x}"));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

fn json(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

/// HTML-escaping with the given spellings of `"` and `'` (`None`: left alone).
fn html(value: &str, quot: Option<&str>, apos: Option<&str>) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if quot.is_some() => out.push_str(quot.unwrap()),
            '\'' if apos.is_some() => out.push_str(apos.unwrap()),
            c => out.push(c),
        }
    }
    out
}

/// Every form in which an endpoint that echoes the request may carry the secret (or a value
/// like it): raw, trimmed, percent-encoded as WHATWG forms, RFC 3986, Python, Go and
/// JavaScript do it (`+` or `%20`, upper- or lower-case hex), JSON-escaped as serde_json,
/// PHP (`\/`), Python (`ensure_ascii`) and Go (`\u003c`) do it, HTML-escaped as the common
/// libraries do it, nested (JSON in HTML, JSON in a URL), and base64.
pub(crate) fn value_forms(value: &str) -> Vec<String> {
    let mut out = text_forms(value);
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(value));
    }
    out.sort();
    out.dedup();
    out
}

/// The forms of [`value_forms`] but base64 (the forms of an access token).
pub(crate) fn text_forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned(), value.trim().to_owned()];
    for keep in ["", "*-._", "-._~", "-_.!~*'()"] {
        for space_plus in [true, false] {
            for lower in [false, true] {
                out.push(percent(value, keep, space_plus, lower));
            }
        }
    }
    out.push(form_urlencoded::byte_serialize(value.as_bytes()).collect());
    let j = json(value);
    out.push(j.replace('/', "\\/"));
    let ascii: String = j
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect();
    out.push(ascii);
    out.push(
        j.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026"),
    );
    out.push(html(value, Some("&quot;"), Some("&#39;")));
    out.push(html(value, Some("&quot;"), Some("&#x27;")));
    out.push(html(value, Some("&quot;"), Some("&#039;")));
    out.push(html(value, Some("&#34;"), Some("&#39;")));
    out.push(html(value, None, None));
    out.push(html(&j, Some("&quot;"), Some("&#39;")));
    out.push(percent(&j, "-._~", true, false));
    out.push(j);
    out.retain(|f| !f.is_empty());
    out.sort();
    out.dedup();
    out
}

/// The forms of the secret and of both Basic header values for `id` and `secret`.
pub(crate) fn echo_forms(id: &str, secret: &str) -> Vec<String> {
    let mut out = value_forms(secret);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for pair in [
        format!("{id}:{secret}"),
        format!("{}:{}", enc(id), enc(secret)),
    ] {
        for engine in [STANDARD, STANDARD_NO_PAD] {
            let b64 = engine.encode(&pair);
            out.push(percent(&b64, "", true, false));
            out.push(b64.replace('/', "\\/"));
            out.push(b64);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn scrubber(id: &str, secret: &str) -> Scrubber<'static> {
    Scrubber::for_credentials(&credentials(id, secret))
}

/// Replaces the test of the former `scrub(text, &[needles])`: the same input and output, with
/// an empty value ignored.
#[test]
fn scrub_replaces_every_occurrence() {
    let out = scrubber("id", "abcd1234").scrub("id abcd1234 and abcd1234 again");
    assert_eq!(out.as_deref(), Some("id [redacted] and [redacted] again"));
    let none = Scrubber::none().with_token("");
    assert_eq!(none.needle_count(), 0);
    assert_eq!(none.scrub("id abcd1234").as_deref(), Some("id abcd1234"));
}

#[test]
fn every_form_of_a_nasty_secret_is_scrubbed() {
    let s = scrubber(NASTY_ID, NASTY);
    let forms = echo_forms(NASTY_ID, NASTY);
    assert!(forms.len() > 30, "{}", forms.len());
    for form in &forms {
        let text = format!("before {form} after");
        let out = s.scrub(&text).unwrap();
        assert_eq!(out, "before [redacted] after", "form {form:?}");
    }
    // Several forms in one text, and forms glued to other text.
    let text = forms.join("|");
    let out = s.scrub(&text).unwrap();
    for form in &forms {
        assert!(!out.contains(form.as_str()), "{form:?} in {out}");
    }
    assert!(!out.contains("s3cr3t"), "{out}");
}

#[test]
fn a_secret_with_a_tag_is_scrubbed_before_and_after_tags_are_stripped() {
    let secret = "abcd<efgh>ijkl";
    let s = scrubber("id", secret);
    for form in value_forms(secret) {
        let out = s.scrub(&format!("x {form} y")).unwrap();
        assert_eq!(out, "x [redacted] y", "{form:?}");
    }
    // What the message pipeline would make of it is scrubbed too.
    assert_eq!(
        s.scrub("seen abcd ijkl here").as_deref(),
        Some("seen [redacted] here")
    );
}

#[test]
fn every_prefix_of_every_form_at_the_end_is_a_partial_match() {
    let s = scrubber(NASTY_ID, NASTY);
    for form in echo_forms(NASTY_ID, NASTY) {
        for cut in (MIN_PARTIAL..form.len()).filter(|&i| form.is_char_boundary(i)) {
            let text = format!("error: {}", &form[..cut]);
            assert!(s.partial_at_end(&text), "{text:?}");
        }
    }
    for ordinary in [
        "HTTP 400 Bad Request: invalid_client: Client authentication failed",
        "the client was refused…",
        "",
        "s3c",
    ] {
        assert!(!s.partial_at_end(ordinary), "{ordinary:?}");
    }
}

#[test]
fn short_secrets_and_tokens_turn_excerpts_off() {
    for secret in [
        "abc",
        "abcdefg",
        "abcdefg\n",
        "  abcdefg  ",
        "秘密秘密秘密秘",
    ] {
        assert!(!scrubber("id", secret).allows_excerpts(), "{secret:?}");
    }
    for secret in ["abcdefgh", "秘密秘密秘密秘密", NASTY] {
        assert!(scrubber("id", secret).allows_excerpts(), "{secret:?}");
    }
    let long = scrubber("id", NASTY);
    assert!(!long.with_token("tok123").allows_excerpts());
    assert!(long.with_token("tok12345").allows_excerpts());
}

#[test]
fn the_access_token_is_scrubbed_in_every_form() {
    let token = "eyJhbGciOi/J+IUzI1NiJ9.payload=";
    let base = scrubber(NASTY_ID, NASTY);
    let s = base.with_token(token);
    assert!(s.needle_count() > base.needle_count());
    for form in text_forms(token) {
        assert_eq!(
            s.scrub(&format!("got {form}.")).as_deref(),
            Some("got [redacted]."),
            "{form:?}"
        );
    }
    // The credentials are still scrubbed.
    assert_eq!(
        s.scrub(&format!("<{NASTY}>")).as_deref(),
        Some("<[redacted]>")
    );
}

#[test]
fn non_ascii_secrets_in_every_form() {
    let secret = "ünïcødé-秘密/😀 x";
    let s = scrubber("ïd", secret);
    for form in echo_forms("ïd", secret) {
        assert_eq!(
            s.scrub(&format!("[{form}]")).as_deref(),
            Some("[[redacted]]"),
            "{form:?}"
        );
    }
}

#[test]
fn work_is_bounded_and_running_out_refuses() {
    let started = std::time::Instant::now();
    // A needle of one character repeated, against a text of the same character: every start
    // matches a long way.
    let secret = format!("{}b", "a".repeat(2000));
    let s = scrubber("id", &secret);
    let text = "a".repeat(4096);
    assert_eq!(s.scrub(&text), None);
    assert!(s.partial_at_end(&text));
    let token = "a".repeat(60_000);
    assert!(
        scrubber("id", NASTY)
            .with_token(&token)
            .partial_at_end(&text)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn debug_shows_no_needle() {
    let s = scrubber(NASTY_ID, "debug-secret-value").with_token("debug-token-value");
    let shown = format!("{s:?}");
    assert!(!shown.contains("debug-"), "{shown}");
    assert!(shown.contains("needles"), "{shown}");
}

/// HTML numeric references in every spelling (upper-case `X`, leading zeros), the HTML5 names,
/// and `\xHH` are scrubbed too (found by the review of the security issue).
#[test]
fn every_html_numeric_reference_spelling_is_scrubbed() {
    let secret = "Ab+/=Cd+ef";
    let s = scrubber("client", secret);
    for form in [
        secret.replace('+', "&#X2B;"),
        secret.replace('+', "&#0043;"),
        secret.replace('+', "&#x002B;"),
        secret.replace('+', "&#000000000043;"),
        secret.replace('/', "&#X2F;"),
        secret
            .replace('+', "&plus;")
            .replace('/', "&sol;")
            .replace('=', "&equals;"),
        secret.replace('+', "\\x2b").replace('/', "\\x2F"),
    ] {
        let out = s.scrub(&format!("echo: {form} end")).unwrap();
        assert_eq!(out, "echo: [redacted] end", "{form}");
    }
    // A reference cut at the end of a text is a partial match.
    assert!(s.partial_at_end("echo: Ab&#x2"));
}
