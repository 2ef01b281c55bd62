//! What the managed Secret, as read, is (pure): not ours (a conflict), ours as the operator
//! wrote it, ours with metadata or rendered templates changed (restored from its token, which is
//! intact), or ours with its token no longer trustworthy (tampered: a new token). The seal is
//! checked by [`crate::output::secret::check_seal`]; this decides what that means.
//!
//! The status is the anchor against a Secret put back from an earlier version (every item
//! genuine, sealed together, but older): the token the Secret holds must be the one the status
//! records (`issuedAt`, `expiresAt`), which only the operator writes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{SecretState, StoredToken};
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::api::keys::{
    EXPIRES_AT_ANNOTATION, FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION, MAC_ANNOTATION,
    TARGET_HASH_ANNOTATION,
};
use crate::oauth::response::Token;
use crate::output::mac::{Check, SealKeys};
use crate::output::secret;

/// What a reconcile read of the managed Secret.
#[derive(Clone, Debug)]
pub struct ReadSecret<'a> {
    /// Its name.
    pub name: &'a str,
    /// It carries this OAuthClient's controller ownerReference.
    pub controlled: bool,
    /// Its seal, checked against the items the current spec writes.
    pub check: &'a Check,
    /// It carries a seal at all.
    pub sealed: bool,
    /// The metadata the operator owns that someone changed (labels, `target.annotations`, the
    /// ownerReference), named.
    pub drift: Vec<String>,
    /// Its token as its annotations describe it (`None`: it holds none).
    pub token: Option<StoredToken>,
    /// When the status says the current token was issued and expires.
    pub status_issued_at: Option<Timestamp>,
    /// See `status_issued_at`.
    pub status_expires_at: Option<Timestamp>,
}

/// The token a managed Secret holds as its annotations describe it (not yet checked against
/// the current spec and credentials), and the fingerprint it was stored with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Described {
    /// The token (`None`: the annotations describe none).
    pub token: Option<StoredToken>,
    /// The fingerprint annotation (only with a token).
    pub fingerprint: Option<String>,
}

/// What the annotations of the managed Secret of `client` say about its token.
pub fn describe(client: &OAuthClient, annotations: &BTreeMap<String, String>) -> Described {
    let time = |key: &str| {
        annotations
            .get(key)
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let target = client.spec.target.clone().unwrap_or_default();
    let token = match (time(ISSUED_AT_ANNOTATION), time(EXPIRES_AT_ANNOTATION)) {
        (Some(issued_at), Some(expires_at)) => Some(StoredToken {
            issued_at,
            expires_at,
            current: false,
            target_current: annotations.get(TARGET_HASH_ANNOTATION)
                == Some(&secret::target_hash(&target)),
        }),
        _ => None,
    };
    Described {
        token,
        fingerprint: token.and(annotations.get(FINGERPRINT_ANNOTATION).cloned()),
    }
}

/// The Secret a reconcile of `client` should not read in full, if it is not `client`'s: only a
/// Secret it controls, or one that carries the operator's seal (its ownerReference removed), is
/// read (another owner's data never is). `cached`: the operator's label-selected cache shows it.
pub fn refuse_unread(
    name: &str,
    controlled: bool,
    sealed: bool,
    cached: bool,
) -> Option<SecretState> {
    if controlled || sealed {
        return None;
    }
    let what = if cached {
        "is controlled by another owner"
    } else {
        "exists and is not managed by this OAuthClient"
    };
    Some(Verdict::conflict(name, what).state)
}

/// A token read back from the managed Secret that may be written again as it is.
#[derive(Clone, Debug)]
pub struct IntactToken {
    /// The token.
    pub token: Token,
    /// Its fingerprint.
    pub fingerprint: String,
}

/// A managed Secret read in full, inspected.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// What it is.
    pub verdict: Verdict,
    /// Its fingerprint, when it holds a token of this client.
    pub fingerprint: Option<String>,
    /// Its token, when it may be written again as it is.
    pub intact_token: Option<IntactToken>,
    /// Its resourceVersion.
    pub resource_version: String,
}

/// Inspects the managed Secret `secret` of `client` as read: whose it is, whether what the
/// operator wrote is intact (the seal, anchored by `status`), whether the metadata it owns
/// was changed.
pub fn inspect(
    secret: &Secret,
    client: &OAuthClient,
    keys: &SealKeys,
    status: &OAuthClientStatus,
) -> Inspection {
    let refs = secret.metadata.owner_references.clone().unwrap_or_default();
    let check = secret::check_seal(secret, client, keys);
    let annotations = secret.annotations();
    let described = describe(client, annotations);
    let status_time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let verdict = classify(&ReadSecret {
        name: secret.metadata.name.as_deref().unwrap_or_default(),
        controlled: secret::controlled_by(&refs, client),
        check: &check,
        sealed: annotations.contains_key(MAC_ANNOTATION),
        drift: secret::drift(secret, client),
        token: described.token,
        status_issued_at: status_time(&status.issued_at),
        status_expires_at: status_time(&status.expires_at),
    });
    let intact_token = verdict
        .token_trusted
        .then(|| secret::stored_token(secret))
        .flatten()
        .zip(described.fingerprint.clone())
        .map(|(token, fingerprint)| IntactToken { token, fingerprint });
    let fingerprint = match verdict.state {
        SecretState::Owned(Some(_)) => described.fingerprint,
        _ => None,
    };
    Inspection {
        verdict,
        fingerprint,
        intact_token,
        resource_version: secret.resource_version().unwrap_or_default(),
    }
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The state the planner sees.
    pub state: SecretState,
    /// This version is exactly as the operator wrote it: remember it, read it no more.
    pub trusted: bool,
    /// Its token may be written again as it is (re-rendered, its metadata restored): its items
    /// are intact as sealed together and are the ones the status records.
    pub token_trusted: bool,
    /// What is restored without a new token, named (keys, never values), for the event.
    pub drift: Option<Vec<String>>,
}

impl Verdict {
    fn conflict(name: &str, what: &str) -> Verdict {
        Verdict {
            state: SecretState::Conflict(format!(
                "Secret {name} {what}; it is left untouched (choose another spec.target.name or delete it)"
            )),
            trusted: false,
            token_trusted: false,
            drift: None,
        }
    }

    fn tampered(items: Vec<String>) -> Verdict {
        Verdict {
            state: SecretState::Tampered(items),
            trusted: false,
            token_trusted: false,
            drift: None,
        }
    }
}

/// What `secret` is for its OAuthClient.
pub fn classify(secret: &ReadSecret<'_>) -> Verdict {
    let sealed_as_written = matches!(secret.check, Check::Valid | Check::ValidWithPrevious);
    if !secret.controlled && !sealed_as_written {
        return Verdict::conflict(secret.name, "exists and is not managed by this OAuthClient");
    }
    // A Secret the operator created but never filled (its write failed) holds no token yet.
    if secret.token.is_none() && !secret.sealed {
        return Verdict {
            state: SecretState::Owned(None),
            trusted: false,
            token_trusted: false,
            drift: None,
        };
    }
    let token_intact = match secret.check {
        Check::Valid | Check::ValidWithPrevious => true,
        Check::Changed { token_intact, .. } => *token_intact,
    };
    if token_intact && let Some(token) = &secret.token {
        let replaced = secret
            .status_issued_at
            .is_some_and(|t| t != token.issued_at)
            || secret
                .status_expires_at
                .is_some_and(|t| t != token.expires_at);
        if replaced {
            return Verdict::tampered(vec![
                "the token (not the one the status records: an earlier version put back)".into(),
            ]);
        }
    }
    let stale = |token: &Option<StoredToken>| {
        token.map(|token| StoredToken {
            target_current: false,
            ..token
        })
    };
    match secret.check {
        Check::Valid if secret.drift.is_empty() => Verdict {
            state: SecretState::Owned(secret.token),
            trusted: true,
            token_trusted: true,
            drift: None,
        },
        // Written again from the stored token: the metadata restored, the seal renewed.
        Check::Valid | Check::ValidWithPrevious => Verdict {
            state: SecretState::Owned(stale(&secret.token)),
            trusted: false,
            token_trusted: true,
            drift: (!secret.drift.is_empty()).then(|| secret.drift.clone()),
        },
        // Only rendered template keys (or how the items are sealed together) changed: the
        // token's items are intact, so the templates are rendered again from them.
        Check::Changed {
            items,
            token_intact: true,
        } if secret.token.is_some() && items.iter().all(|i| i == "seal" || template_key(i)) => {
            let mut drift = secret.drift.clone();
            drift.extend(
                items
                    .iter()
                    .filter(|i| template_key(i))
                    .map(|i| format!("data key {}", &i["data/".len()..])),
            );
            Verdict {
                state: SecretState::Owned(stale(&secret.token)),
                trusted: false,
                token_trusted: true,
                drift: Some(drift),
            }
        }
        Check::Changed { items, .. } => Verdict::tampered(items.clone()),
    }
}

/// A data key that is not one of the standard ones (a rendered template).
fn template_key(item: &str) -> bool {
    item.strip_prefix("data/")
        .is_some_and(|key| !crate::spec::STANDARD_KEYS.contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const TOKEN: StoredToken = StoredToken {
        issued_at: Timestamp::UNIX_EPOCH,
        expires_at: Timestamp::UNIX_EPOCH,
        current: false,
        target_current: true,
    };

    fn token() -> StoredToken {
        StoredToken {
            issued_at: at(1000),
            expires_at: at(4600),
            ..TOKEN
        }
    }

    fn read<'a>(check: &'a Check) -> ReadSecret<'a> {
        ReadSecret {
            name: "demo-token",
            controlled: true,
            check,
            sealed: true,
            drift: Vec::new(),
            token: Some(token()),
            status_issued_at: Some(at(1000)),
            status_expires_at: Some(at(4600)),
        }
    }

    fn changed(items: &[&str], token_intact: bool) -> Check {
        Check::Changed {
            items: items.iter().map(|s| (*s).to_owned()).collect(),
            token_intact,
        }
    }

    struct Case<'a> {
        what: &'a str,
        read: ReadSecret<'a>,
        state: SecretState,
        trusted: bool,
        token_trusted: bool,
    }

    fn check(cases: Vec<Case<'_>>) {
        for case in cases {
            let verdict = classify(&case.read);
            assert_eq!(verdict.state, case.state, "{}", case.what);
            assert_eq!(verdict.trusted, case.trusted, "{}", case.what);
            assert_eq!(verdict.token_trusted, case.token_trusted, "{}", case.what);
        }
    }

    fn stale() -> StoredToken {
        StoredToken {
            target_current: false,
            ..token()
        }
    }

    fn put_back() -> SecretState {
        SecretState::Tampered(vec![
            "the token (not the one the status records: an earlier version put back)".into(),
        ])
    }

    /// The table of cases, as cert-manager tests its policy checks: each read Secret and the
    /// state it must be. First, what is written again from its own token.
    #[test]
    fn a_secret_whose_token_is_intact_is_kept_or_restored_from_it() {
        let (valid, previous) = (Check::Valid, Check::ValidWithPrevious);
        let template = changed(&["data/Authorization"], true);
        let spliced_templates = changed(&["seal"], true);
        let restored = |what, read| Case {
            what,
            read,
            state: SecretState::Owned(Some(stale())),
            trusted: false,
            token_trusted: true,
        };
        check(vec![
            Case {
                what: "as written",
                read: read(&valid),
                state: SecretState::Owned(Some(token())),
                trusted: true,
                token_trusted: true,
            },
            restored("sealed with the previous key", read(&previous)),
            restored(
                "a label removed",
                ReadSecret {
                    drift: vec!["label team".into()],
                    ..read(&valid)
                },
            ),
            restored(
                "the ownerReference removed, the seal intact",
                ReadSecret {
                    controlled: false,
                    drift: vec!["ownerReference".into()],
                    ..read(&valid)
                },
            ),
            restored("a template key edited", read(&template)),
            restored(
                "template tags spliced from another seal, the token intact",
                read(&spliced_templates),
            ),
            Case {
                what: "no status yet (its first write failed): the seal alone",
                read: ReadSecret {
                    status_issued_at: None,
                    status_expires_at: None,
                    ..read(&valid)
                },
                state: SecretState::Owned(Some(token())),
                trusted: true,
                token_trusted: true,
            },
        ]);
    }

    /// What a new token replaces.
    #[test]
    fn a_secret_whose_token_cannot_be_trusted_is_tampered() {
        let valid = Check::Valid;
        let token_swapped = changed(&["data/access_token"], false);
        let template_but_token_not_intact = changed(&["data/Authorization"], false);
        let broken = changed(&["seal"], false);
        let tampered = |what, read, state| Case {
            what,
            read,
            state,
            trusted: false,
            token_trusted: false,
        };
        check(vec![
            tampered(
                "the token swapped",
                read(&token_swapped),
                SecretState::Tampered(vec!["data/access_token".into()]),
            ),
            tampered(
                "a template edited while the token's group does not verify",
                read(&template_but_token_not_intact),
                SecretState::Tampered(vec!["data/Authorization".into()]),
            ),
            tampered(
                "a seal that proves nothing",
                read(&broken),
                SecretState::Tampered(vec!["seal".into()]),
            ),
            tampered(
                "an earlier version put back (genuine, older than the status)",
                ReadSecret {
                    token: Some(StoredToken {
                        issued_at: at(900),
                        expires_at: at(4500),
                        ..TOKEN
                    }),
                    ..read(&valid)
                },
                put_back(),
            ),
            tampered(
                "an earlier, longer expiry under the current token",
                ReadSecret {
                    token: Some(StoredToken {
                        expires_at: at(1000 + 365 * 86_400),
                        ..token()
                    }),
                    ..read(&valid)
                },
                put_back(),
            ),
        ]);
    }

    /// What is not adopted, and what holds nothing yet.
    #[test]
    fn foreign_secrets_are_never_adopted_and_an_empty_one_holds_no_token() {
        let token_swapped = changed(&["data/access_token"], false);
        let broken = changed(&["seal"], false);
        let template = changed(&["data/Authorization"], true);
        check(vec![Case {
            what: "created, never filled",
            read: ReadSecret {
                token: None,
                sealed: false,
                ..read(&broken)
            },
            state: SecretState::Owned(None),
            trusted: false,
            token_trusted: false,
        }]);
        // Whatever their seal says unless it is exactly ours.
        for check in [&token_swapped, &broken, &template] {
            let verdict = classify(&ReadSecret {
                controlled: false,
                ..read(check)
            });
            assert!(
                matches!(verdict.state, SecretState::Conflict(ref m) if m.contains("demo-token")),
                "{verdict:?}"
            );
        }
        assert!(refuse_unread("demo-token", true, false, true).is_none());
        assert!(refuse_unread("demo-token", false, true, false).is_none());
        assert!(matches!(
            refuse_unread("demo-token", false, false, true),
            Some(SecretState::Conflict(m)) if m.contains("controlled by another owner")
        ));
    }
}
