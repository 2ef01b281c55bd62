//! The `target.template` parser and renderer on arbitrary text. Invariants: no panic; a parsed
//! template renders the access token exactly when it says it uses it; text without `{{` is
//! rendered unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_token_operator::spec::template::{Template, Values};

const TOKEN: &str = "\u{1}TOKEN\u{2}";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(text) else {
        return;
    };
    let rendered = template.render(&Values {
        access_token: TOKEN,
        token_type: "Bearer",
        expires_at: "2026-01-01T00:00:00Z",
        scope: "a b",
    });
    if !text.contains(TOKEN) {
        assert_eq!(rendered.contains(TOKEN), template.uses_access_token());
    }
    if !text.contains("{{") {
        assert_eq!(rendered, text);
    }
});
