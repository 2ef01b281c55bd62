//! A URL as it may be shown in messages and output: without user information, query or
//! fragment, any of which could hold a credential.

use url::Url;

/// `url` with its user information, query and fragment removed (scheme, host, port, path).
pub fn shown(url: &Url) -> Url {
    let mut shown = url.clone();
    // Removing these cannot fail on a URL that has them.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_query_and_fragment_are_removed() {
        let url =
            Url::parse("https://user:pa55@idp.example.com:8443/oauth2/token?key=s3cret#x").unwrap();
        assert_eq!(
            shown(&url).as_str(),
            "https://idp.example.com:8443/oauth2/token"
        );
    }
}
