//! TLS failures in words: what went wrong with the endpoint's certificate or the handshake, as
//! an operator reads it in `kubectl get oac` and the events.
//!
//! Every message starts with one of the contract's phrases:
//!
//! | problem | message starts with |
//! | --- | --- |
//! | no anchor of the trust signs the chain | `TLS: certificate signed by an unknown authority` |
//! | the certificate's `notAfter` has passed | `TLS: certificate expired` |
//! | the certificate does not name the host | `TLS: certificate is not valid for <host>` |
//! | anything else (a closed or refused handshake, an alert, a bad signature, ...) | `TLS: handshake failed: <detail>` |
//!
//! The problem is found by walking the error's source chain down to the rustls error (reqwest
//! and hyper wrap it, and `std::io::Error` hides it from `source()`, so each `io::Error` is
//! opened with `get_ref`). Text that comes from the endpoint's certificate (the names it
//! presents) is cut to a few short, printable names.

use std::error::Error as StdError;
use std::io;

use rustls::{CertificateError, Error as RustlsError};

/// Names presented by a certificate shown at most.
const MAX_NAMES: usize = 4;
/// Longest presented name shown.
const MAX_NAME_LEN: usize = 64;
/// Longest library detail shown.
const MAX_DETAIL_LEN: usize = 200;

/// A TLS problem, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsProblem {
    /// No trust anchor signs the endpoint's chain.
    UnknownAuthority,
    /// The certificate expired (when, if known: RFC 3339).
    Expired(Option<String>),
    /// The certificate does not name the host (the names it presents, if known).
    NotValidForName(Vec<String>),
    /// Any other failure of the handshake.
    Handshake(String),
}

impl TlsProblem {
    /// The TLS problem behind `error`, if it is one.
    pub fn find(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(problem) = classify(e) {
                return Some(problem);
            }
            current = e.source();
        }
        None
    }

    /// The message for a request to `host`; it starts with the contract's phrase.
    pub fn message(&self, host: &str) -> String {
        match self {
            TlsProblem::UnknownAuthority => {
                "TLS: certificate signed by an unknown authority".to_owned()
            }
            TlsProblem::Expired(None) => "TLS: certificate expired".to_owned(),
            TlsProblem::Expired(Some(at)) => format!("TLS: certificate expired (at {at})"),
            TlsProblem::NotValidForName(names) if names.is_empty() => {
                format!("TLS: certificate is not valid for {host}")
            }
            TlsProblem::NotValidForName(names) => format!(
                "TLS: certificate is not valid for {host} (it names {})",
                names.join(", ")
            ),
            TlsProblem::Handshake(detail) => format!("TLS: handshake failed: {detail}"),
        }
    }
}

/// One error of the chain, and the rustls error an `io::Error` carries.
fn classify(error: &(dyn StdError + 'static)) -> Option<TlsProblem> {
    if let Some(tls) = error.downcast_ref::<RustlsError>() {
        return Some(from_rustls(tls));
    }
    let io = error.downcast_ref::<io::Error>()?;
    let inner = io.get_ref()?;
    // tokio-rustls: the peer closed the connection before the handshake completed.
    if io.kind() == io::ErrorKind::UnexpectedEof && inner.to_string().contains("handshake") {
        return Some(TlsProblem::Handshake(
            "the server closed the connection during the handshake".into(),
        ));
    }
    // hyper-rustls wraps tokio-rustls's `io::Error` in another one; `source()` skips both.
    classify(inner)
}

fn from_rustls(error: &RustlsError) -> TlsProblem {
    match error {
        RustlsError::InvalidCertificate(certificate) => from_certificate(certificate),
        RustlsError::AlertReceived(alert) => TlsProblem::Handshake(format!(
            "the server refused the handshake (alert {})",
            format!("{alert:?}").to_lowercase()
        )),
        other => TlsProblem::Handshake(detail(&other.to_string())),
    }
}

fn from_certificate(error: &CertificateError) -> TlsProblem {
    match error {
        CertificateError::UnknownIssuer => TlsProblem::UnknownAuthority,
        CertificateError::Expired => TlsProblem::Expired(None),
        CertificateError::ExpiredContext { not_after, .. } => {
            let at = i64::try_from(not_after.as_secs())
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(|t| t.to_string());
            TlsProblem::Expired(at)
        }
        CertificateError::NotValidForName => TlsProblem::NotValidForName(Vec::new()),
        CertificateError::NotValidForNameContext { presented, .. } => {
            TlsProblem::NotValidForName(shown_names(presented))
        }
        other => TlsProblem::Handshake(detail(&format!("invalid peer certificate: {other}"))),
    }
}

/// The first few names, each cut short and reduced to visible ASCII.
fn shown_names(presented: &[String]) -> Vec<String> {
    let mut names: Vec<String> = presented
        .iter()
        .take(MAX_NAMES)
        .map(|name| {
            // webpki presents names as `DnsName("a.example")`, `IpAddress(10.0.0.1)`.
            let inner = name
                .split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .map_or(name.as_str(), |inner| inner.trim_matches('"'));
            let clean: String = inner
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_NAME_LEN)
                .collect();
            if clean.is_empty() {
                "?".to_owned()
            } else {
                clean
            }
        })
        .collect();
    if presented.len() > MAX_NAMES {
        names.push(format!("and {} more", presented.len() - MAX_NAMES));
    }
    names
}

fn detail(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL_LEN)
        .collect();
    clean.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;
    use rustls::pki_types::UnixTime;

    /// An error as reqwest hands it over: the rustls error inside an `io::Error` inside another
    /// `io::Error`, inside a wrapper whose `source()` is the outer `io::Error`.
    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn wrapped(error: RustlsError) -> Wrapper {
        let inner = io::Error::new(io::ErrorKind::InvalidData, error);
        Wrapper(io::Error::other(inner))
    }

    fn message(error: RustlsError) -> String {
        TlsProblem::find(&wrapped(error))
            .unwrap()
            .message("idp.corp")
    }

    #[test]
    fn each_problem_starts_with_the_contract_phrase() {
        let invalid = RustlsError::InvalidCertificate;
        assert_eq!(
            message(invalid(CertificateError::UnknownIssuer)),
            "TLS: certificate signed by an unknown authority"
        );
        assert_eq!(
            message(invalid(CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    1_600_000_000
                )),
            })),
            "TLS: certificate expired (at 2020-09-13T12:26:40Z)"
        );
        assert_eq!(
            message(invalid(CertificateError::Expired)),
            "TLS: certificate expired"
        );
        let names = (0..6)
            .map(|i| format!("DnsName(\"n{i}.example\u{7}\")"))
            .collect();
        assert_eq!(
            message(invalid(CertificateError::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("idp.corp").unwrap(),
                presented: names,
            })),
            "TLS: certificate is not valid for idp.corp (it names n0.example, n1.example, n2.example, n3.example, and 2 more)"
        );
        assert!(
            message(invalid(CertificateError::BadSignature))
                .starts_with("TLS: handshake failed: invalid peer certificate: ")
        );
        assert_eq!(
            message(RustlsError::AlertReceived(
                AlertDescription::HandshakeFailure
            )),
            "TLS: handshake failed: the server refused the handshake (alert handshakefailure)"
        );
    }

    #[test]
    fn a_closed_handshake_and_unrelated_errors() {
        let eof = Wrapper(io::Error::other(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        )));
        assert_eq!(
            TlsProblem::find(&eof).unwrap().message("h"),
            "TLS: handshake failed: the server closed the connection during the handshake"
        );
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(TlsProblem::find(&refused), None);
    }
}
