//! Review of security round three, item 2: origin tricks against a ServiceAccount's
//! `token-endpoints` opt-in. For every token URL the opt-in allows, the host and port the HTTP
//! client connects to must be the listed ones. (This attack holds; kept as a regression.)

use std::collections::BTreeMap;

use oauth_token_operator::api::keys::{TOKEN_AUDIENCES_ANNOTATION, TOKEN_ENDPOINTS_ANNOTATION};
use oauth_token_operator::oauth::credentials::from_service_account;

fn connects_to(url: &url::Url) -> (String, u16) {
    (
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0),
    )
}

#[test]
fn no_token_url_the_opt_in_allows_connects_anywhere_else() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "https://idp.example.com",
            &[
                "https://idp.example.com@evil.example/token",
                "https://idp.example.com:443@evil.example/token",
                "https://evil.example\\@idp.example.com/token",
                "https://evil.example#@idp.example.com/token",
                "https://evil.example?@idp.example.com/token",
                "https://idp.example.com.evil.example/token",
                "https://idp.example.com./token",
                "https://IDP.EXAMPLE.COM:443/token",
                "HTTPS://idp.example.com/token",
                "https://idp%2eexample%2ecom/token",
                "https://idp.example.com:8443/token",
                "http://idp.example.com/token",
                "http://idp.example.com:443/token",
                "https://user:pw@idp.example.com/token",
                "https://xn--idp-example-com/token",
                "https://idp.example.com%00.evil.example/token",
                "https://idp.example.com\t/token",
            ],
        ),
        (
            "https://127.0.0.1",
            &[
                "https://0x7f.1/token",
                "https://2130706433/token",
                "https://127.1/token",
                "https://[::ffff:127.0.0.1]/token",
                "https://[::1]/token",
                "https://localhost/token",
                "https://127.0.0.1:443/token",
            ],
        ),
        (
            "https://[::1]:8443",
            &[
                "https://[0:0:0:0:0:0:0:1]:8443/token",
                "https://[::1]/token",
                "https://[::0001]:8443/t",
            ],
        ),
        (
            "https://bücher.example",
            &[
                "https://xn--bcher-kva.example/t",
                "https://BÜCHER.example/t",
                "https://bucher.example/t",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (listed, urls) in cases {
        let annotations: BTreeMap<String, String> = [
            (TOKEN_AUDIENCES_ANNOTATION.to_owned(), "aud".to_owned()),
            (
                TOKEN_ENDPOINTS_ANNOTATION.to_owned(),
                format!(" {listed} , "),
            ),
        ]
        .into();
        let listed_url = url::Url::parse(listed).unwrap();
        for raw in urls {
            let Ok(url) = url::Url::parse(raw) else {
                continue;
            };
            let allowed =
                from_service_account("c", "sa", "aud", &url, "ns", Some(&annotations)).is_ok();
            println!(
                "{listed:28} {raw:50} -> {} {:?}",
                if allowed { "ALLOWED" } else { "denied " },
                connects_to(&url)
            );
            if allowed
                && (connects_to(&url) != connects_to(&listed_url)
                    || url.scheme() != listed_url.scheme())
            {
                wrong.push(format!(
                    "{raw} allowed by {listed}, connects to {:?}",
                    connects_to(&url)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}
