//! What a create left behind: the managed Secret's first write is a create (so that a Secret
//! someone created meanwhile is never taken over), which makes the operator the owner of every
//! field as an *updater*; its later writes are server-side applies, and an apply removes only what
//! the *applier* owns. So when a later rendering drops a data key, a label or an annotation that
//! the create wrote, the apply leaves it. Read from the applied object's `managedFields`, this
//! finds those fields (owned by the operator's update entry, by no other manager, and not in the
//! applied body) and makes the merge patch that removes them and the update entry with them:
//! from then on the operator owns the Secret as the applier alone.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::{Map, Value, json};

/// Fields the create wrote that the applied body no longer has.
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    data: BTreeSet<String>,
    labels: BTreeSet<String>,
    annotations: BTreeSet<String>,
    /// The managedFields entries to keep (all but the operator's update entry).
    keep: Vec<ManagedFieldsEntry>,
}

/// The keys of the data, labels and annotations a field set names.
#[derive(Debug, Default)]
struct Keys {
    data: BTreeSet<String>,
    labels: BTreeSet<String>,
    annotations: BTreeSet<String>,
}

impl Keys {
    /// From a `fieldsV1` set (`{"f:data": {"f:key": {}}, "f:metadata": {"f:labels": ...}}`).
    fn of_fields(fields: &Value) -> Keys {
        let names = |set: &Value| -> BTreeSet<String> {
            set.as_object()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("f:"))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Keys {
            data: names(&fields["f:data"]),
            labels: names(&fields["f:metadata"]["f:labels"]),
            annotations: names(&fields["f:metadata"]["f:annotations"]),
        }
    }

    /// From an object (the applied body).
    fn of_object(object: &Value) -> Keys {
        let names = |map: &Value| -> BTreeSet<String> {
            map.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        Keys {
            data: names(&object["data"]),
            labels: names(&object["metadata"]["labels"]),
            annotations: names(&object["metadata"]["annotations"]),
        }
    }

    fn extend(&mut self, other: Keys) {
        self.data.extend(other.data);
        self.labels.extend(other.labels);
        self.annotations.extend(other.annotations);
    }
}

/// After an apply by `manager` of `applied`, whose result carries `entries`: the fields to
/// remove, or `None` when there are none (or no update entry of `manager`).
pub fn after_apply(
    entries: &[ManagedFieldsEntry],
    manager: &str,
    applied: &Value,
) -> Option<Stale> {
    let ours = |e: &ManagedFieldsEntry| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Update")
            && e.subresource.as_deref().unwrap_or_default().is_empty()
    };
    let update = entries.iter().find(|e| ours(e))?;
    let owned = Keys::of_fields(update.fields_v1.as_ref().map_or(&Value::Null, |f| &f.0));
    let mut kept = Keys::of_object(applied);
    for entry in entries.iter().filter(|e| !ours(e)) {
        kept.extend(Keys::of_fields(
            entry.fields_v1.as_ref().map_or(&Value::Null, |f| &f.0),
        ));
    }
    let stale = Stale {
        data: owned.data.difference(&kept.data).cloned().collect(),
        labels: owned.labels.difference(&kept.labels).cloned().collect(),
        annotations: owned
            .annotations
            .difference(&kept.annotations)
            .cloned()
            .collect(),
        keep: entries.iter().filter(|e| !ours(e)).cloned().collect(),
    };
    let empty = stale.data.is_empty() && stale.labels.is_empty() && stale.annotations.is_empty();
    (!empty).then_some(stale)
}

impl Stale {
    /// The JSON merge patch that removes the stale fields and the update entry, only if the
    /// Secret is still at `resource_version`.
    pub fn removal(&self, resource_version: &str) -> Value {
        let nulls = |keys: &BTreeSet<String>| -> Value {
            Value::Object(keys.iter().map(|k| (k.clone(), Value::Null)).collect())
        };
        // An empty list would keep the entries as they are; one empty entry clears them.
        let managed_fields = if self.keep.is_empty() {
            json!([{}])
        } else {
            serde_json::to_value(&self.keep).unwrap_or_else(|_| json!([{}]))
        };
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".into(), json!(resource_version));
        metadata.insert("managedFields".into(), managed_fields);
        if !self.labels.is_empty() {
            metadata.insert("labels".into(), nulls(&self.labels));
        }
        if !self.annotations.is_empty() {
            metadata.insert("annotations".into(), nulls(&self.annotations));
        }
        let mut patch = json!({ "metadata": metadata });
        if !self.data.is_empty() {
            patch["data"] = nulls(&self.data);
        }
        patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn created() -> ManagedFieldsEntry {
        entry(
            "op",
            "Update",
            json!({"f:data": {".": {}, "f:access_token": {}, "f:extra": {}, "f:shared": {}},
                   "f:metadata": {"f:labels": {".": {}, "f:team": {}},
                                  "f:annotations": {".": {}, "f:note": {}}},
                   "f:type": {}}),
        )
    }

    #[test]
    fn what_the_create_wrote_and_the_apply_dropped_is_removed_with_the_update_entry() {
        let applied = json!({"metadata": {"labels": {}, "annotations": {"note": "n"}},
                             "data": {"access_token": "x"}});
        let other = entry(
            "other-tool",
            "Apply",
            json!({"f:data": {"f:shared": {}, "f:mine": {}}}),
        );
        let apply = entry("op", "Apply", json!({"f:data": {"f:access_token": {}}}));
        let entries = [created(), other.clone(), apply.clone()];
        let stale = after_apply(&entries, "op", &applied).unwrap();
        // `shared` is also another manager's: it stays.
        assert_eq!(
            stale.removal("42"),
            json!({
                "metadata": {"resourceVersion": "42",
                             "managedFields": serde_json::to_value([other, apply]).unwrap(),
                             "labels": {"team": null}},
                "data": {"extra": null}
            })
        );
    }

    #[test]
    fn nothing_dropped_or_no_update_entry_means_no_patch() {
        let applied = json!({"metadata": {"labels": {"team": "a"}, "annotations": {"note": "n"}},
                             "data": {"access_token": "x", "extra": "e", "shared": "s"}});
        assert_eq!(after_apply(&[created()], "op", &applied), None);
        let applied = json!({"data": {}});
        assert_eq!(after_apply(&[], "op", &applied), None);
        let theirs = entry("someone", "Update", json!({"f:data": {"f:x": {}}}));
        assert_eq!(after_apply(&[theirs], "op", &applied), None);
    }

    #[test]
    fn the_last_entry_gone_clears_the_list_with_one_empty_entry() {
        let applied = json!({"data": {"access_token": "x"}});
        let stale = after_apply(&[created()], "op", &applied).unwrap();
        assert_eq!(stale.removal("7")["metadata"]["managedFields"], json!([{}]));
    }
}
