//! What a ClusterOAuthClient's token distribution does (pure): which namespaces are selected,
//! what each selected namespace's Secret needs, whether a copy as read is the one to write, and
//! the `targets` status with the `Distributed` condition.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::api::cluster_crd::{MAX_LISTED_CONFLICTS, Targets};
use crate::api::conditions::{self, DISTRIBUTED};

/// A namespace as its watch shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceSeen {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// It is being deleted (nothing can be created in it).
    pub terminating: bool,
}

/// The namespaces `names` and `selector` select among `namespaces` (the union), by name;
/// namespaces being deleted are left out.
pub fn selected(
    namespaces: &[NamespaceSeen],
    names: &[String],
    selector: Option<&Selector>,
) -> BTreeSet<String> {
    let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    namespaces
        .iter()
        .filter(|ns| !ns.terminating)
        .filter(|ns| {
            names.contains(ns.name.as_str()) || selector.is_some_and(|s| s.matches(&ns.labels))
        })
        .map(|ns| ns.name.clone())
        .collect()
}

/// What is known of the Secret of the target name in one selected namespace, before any read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No Secret of that name.
    Absent,
    /// A copy this ClusterOAuthClient controls, at this resourceVersion.
    Ours {
        /// Its resourceVersion.
        resource_version: String,
    },
    /// A Secret of that name that is not a copy it controls (by the indexes), at this
    /// resourceVersion: someone else's, or a copy whose label or ownerReference was removed.
    Other {
        /// Its resourceVersion.
        resource_version: String,
    },
}

/// What one selected namespace needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the copy is the one last written or verified, of the current token and spec.
    Nothing,
    /// Create the copy.
    Create,
    /// Read the Secret, and write the copy only if it is this ClusterOAuthClient's (controlled,
    /// or sealed by the operator for it there) and not exactly the one to write.
    Verify,
    /// Left untouched: someone else's Secret, as read at this version before.
    Conflict,
}

/// What a selected namespace needs, given what was found, what this process last wrote or
/// verified there (the copy's resourceVersion and the source of its content) and the source of
/// the content to write now, and the resourceVersion at which the Secret there was last read
/// and found to be someone else's.
pub fn need(
    found: &Found,
    written: Option<(&str, &str)>,
    source: &str,
    conflict: Option<&str>,
) -> Need {
    match found {
        Found::Absent => Need::Create,
        Found::Other { resource_version } if conflict == Some(resource_version.as_str()) => {
            Need::Conflict
        }
        Found::Other { .. } => Need::Verify,
        Found::Ours { resource_version } => match written {
            Some((rv, from)) if rv == resource_version && from == source => Need::Nothing,
            _ => Need::Verify,
        },
    }
}

/// What of `current` (a copy as read, as JSON) differs from `desired` (the copy to write): the
/// data keys, and the labels, annotations and ownerReferences `desired` sets. Empty: nothing to
/// write. Keys, labels and annotations that others added are not the operator's and never
/// differ.
pub fn differences(current: &Value, desired: &Value) -> Vec<String> {
    let mut differ = Vec::new();
    let want = desired["data"].as_object();
    let have = current["data"].as_object();
    if want
        .into_iter()
        .flatten()
        .any(|(key, value)| have.and_then(|h| h.get(key)) != Some(value))
    {
        differ.push("data".to_owned());
    }
    if current.get("type") != desired.get("type") {
        differ.push("type".to_owned());
    }
    for map in ["labels", "annotations"] {
        let want = desired["metadata"][map].as_object();
        let have = current["metadata"][map].as_object();
        for (key, value) in want.into_iter().flatten() {
            if have.and_then(|h| h.get(key)) != Some(value) {
                differ.push(format!("{map}/{key}"));
            }
        }
    }
    let owner = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["uid"].clone(), r["kind"].clone(), r["controller"].clone()))
            .collect()
    };
    let have = owner(current);
    if owner(desired).iter().any(|r| !have.contains(r)) {
        differ.push("ownerReferences".to_owned());
    }
    differ
}

/// How the distribution went in one reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Selected namespaces.
    pub selected: BTreeSet<String>,
    /// Those whose Secret holds the current token.
    pub written: BTreeSet<String>,
    /// Those with someone else's Secret of the target name.
    pub conflicts: BTreeSet<String>,
    /// Those whose write failed, with the API server's message.
    pub failed: BTreeMap<String, String>,
    /// There is no token to distribute yet (or it has expired).
    pub no_token: bool,
}

/// `status.targets`.
pub fn targets(outcome: &Outcome) -> Targets {
    let written = count(outcome.written.len());
    let selected = count(outcome.selected.len());
    Targets {
        selected,
        written,
        conflicts: outcome
            .conflicts
            .iter()
            .take(MAX_LISTED_CONFLICTS)
            .cloned()
            .collect(),
        summary: format!("{written}/{selected}"),
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `Distributed` condition: `True` (`AllTargetsWritten`) when every selected namespace
/// without a conflict holds the current token; else `False`, `SecretConflict` when conflicts
/// are all that is missing, `WriteFailed` otherwise, with the counts in the message.
/// `previous` keeps its transition time while the status stays the same.
pub fn distributed(
    outcome: &Outcome,
    secret_name: &str,
    generation: Option<i64>,
    now: Time,
    previous: Option<&Condition>,
) -> Condition {
    let selected = outcome.selected.len();
    let missing = selected - outcome.written.len() - outcome.conflicts.len();
    let (status, reason, message) = if outcome.no_token {
        (
            "False",
            conditions::WRITE_FAILED,
            format!(
                "no valid token to write yet (see the Ready condition); {selected} namespaces selected"
            ),
        )
    } else if missing > 0 || !outcome.failed.is_empty() {
        let first = outcome
            .failed
            .iter()
            .next()
            .map(|(ns, why)| format!("; first: namespace {ns}: {why}"))
            .unwrap_or_default();
        let conflicts = match outcome.conflicts.len() {
            0 => String::new(),
            n => format!(", {n} with a conflicting Secret"),
        };
        (
            "False",
            conditions::WRITE_FAILED,
            format!(
                "{missing} of {selected} selected namespaces do not hold the current token in Secret {secret_name}{conflicts}{first}"
            ),
        )
    } else if !outcome.conflicts.is_empty() {
        let n = outcome.conflicts.len();
        let listed: Vec<&str> = outcome
            .conflicts
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        let more = if n > listed.len() { ", …" } else { "" };
        (
            "False",
            conditions::SECRET_CONFLICT,
            format!(
                "{n} of {selected} selected namespaces hold a Secret {secret_name} that this ClusterOAuthClient does not control, left untouched ({}{more}); the {} others hold the current token",
                listed.join(", "),
                outcome.written.len()
            ),
        )
    } else {
        (
            "True",
            conditions::ALL_TARGETS_WRITTEN,
            format!(
                "all {selected} selected namespaces hold the current token in Secret {secret_name}"
            ),
        )
    };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(crate::base::time::truncate_to_seconds(now.0)),
    };
    Condition {
        type_: DISTRIBUTED.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, labels: &[(&str, &str)], terminating: bool) -> NamespaceSeen {
        NamespaceSeen {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            terminating,
        }
    }

    #[test]
    fn names_and_a_selector_select_their_union_never_a_namespace_being_deleted() {
        let all = [
            ns("a", &[], false),
            ns("b", &[("team", "x")], false),
            ns("c", &[("team", "y")], false),
            ns("d", &[("team", "x")], true),
            ns("e", &[], true),
        ];
        let selector: Selector = [("team", "x")].into_iter().collect();
        let names = ["a".to_owned(), "e".to_owned(), "missing".to_owned()];
        let chosen = selected(&all, &names, Some(&selector));
        assert_eq!(chosen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(selected(&all, &[], None).is_empty());
    }

    #[test]
    fn a_copy_is_read_again_unless_it_is_the_one_last_written_from_the_current_source() {
        let ours = Found::Ours {
            resource_version: "7".into(),
        };
        assert_eq!(need(&ours, Some(("7", "s1")), "s1", None), Need::Nothing);
        assert_eq!(need(&ours, Some(("7", "s1")), "s2", None), Need::Verify);
        assert_eq!(need(&ours, Some(("6", "s1")), "s1", None), Need::Verify);
        assert_eq!(need(&ours, None, "s1", None), Need::Verify);
        assert_eq!(need(&Found::Absent, None, "s1", None), Need::Create);
        let other = Found::Other {
            resource_version: "9".into(),
        };
        // Someone else's Secret is read once per version, then left alone.
        assert_eq!(need(&other, None, "s1", None), Need::Verify);
        assert_eq!(need(&other, None, "s1", Some("9")), Need::Conflict);
        assert_eq!(need(&other, None, "s1", Some("8")), Need::Verify);
    }

    #[test]
    fn only_what_the_operator_writes_can_differ() {
        let desired = json!({
            "type": "Opaque",
            "data": {"access_token": "dA=="},
            "metadata": {
                "labels": {"l": "1"},
                "annotations": {"a": "1"},
                "ownerReferences": [{"uid": "u", "kind": "ClusterOAuthClient", "controller": true}]
            }
        });
        let mut current = desired.clone();
        current["metadata"]["labels"]["other"] = json!("kept");
        current["metadata"]["annotations"]["other"] = json!("kept");
        current["data"]["added-by-someone"] = json!("a2VwdA==");
        assert!(differences(&current, &desired).is_empty());
        current["data"]["access_token"] = json!("Zm9yZ2Vk");
        current["metadata"]["labels"]["l"] = json!("2");
        current["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        assert_eq!(
            differences(&current, &desired),
            ["data", "labels/l", "ownerReferences"]
        );
    }

    fn outcome(selected: &[&str], written: &[&str], conflicts: &[&str]) -> Outcome {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Outcome {
            selected: set(selected),
            written: set(written),
            conflicts: set(conflicts),
            ..Outcome::default()
        }
    }

    #[test]
    fn distributed_says_what_is_missing() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let all = outcome(&["a", "b"], &["a", "b"], &[]);
        let c = distributed(&all, "t", Some(2), now.clone(), None);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "AllTargetsWritten")
        );
        assert_eq!(targets(&all).summary, "2/2");
        let conflict = outcome(&["a", "b"], &["a"], &["b"]);
        let c = distributed(&conflict, "t", Some(2), now.clone(), None);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretConflict")
        );
        assert!(c.message.starts_with("1 of 2"), "{}", c.message);
        assert_eq!(targets(&conflict).conflicts, ["b"]);
        let mut failed = outcome(&["a", "b", "c"], &["a"], &["b"]);
        failed.failed.insert("c".into(), "forbidden".into());
        let c = distributed(&failed, "t", Some(2), now.clone(), None);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "WriteFailed")
        );
        assert!(
            c.message.contains("namespace c: forbidden"),
            "{}",
            c.message
        );
        let none = Outcome {
            no_token: true,
            ..outcome(&["a"], &[], &[])
        };
        let c = distributed(&none, "t", Some(2), now, None);
        assert_eq!(c.reason, "WriteFailed");
    }

    #[test]
    fn at_most_twenty_conflicts_are_listed() {
        let names: Vec<String> = (0..30).map(|i| format!("ns{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = targets(&outcome(&refs, &[], &refs));
        assert_eq!(t.conflicts.len(), 20);
        assert_eq!(t.conflicts[0], "ns00");
        assert_eq!(t.summary, "0/30");
    }
}
