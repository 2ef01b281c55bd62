//! The in-memory store: the objects by key, resourceVersions, the watch history (and its
//! oldest resourceVersion), create / replace / delete with finalizers and garbage collection,
//! and the bookkeeping of server-side apply (each manager's last applied configuration,
//! conflicts, removal of fields no longer applied).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::faults::{Chaos, Fault, Injection, log_call};
use super::schema::{normalise, validate_metadata};
use super::{Call, Failure, KINDS, Key, Kind, Matcher, OAUTHCLIENTS, Shared};

// === state ===

pub(super) struct LogEntry {
    pub(super) rv: u64,
    pub(super) group: &'static str,
    pub(super) plural: &'static str,
    pub(super) event: &'static str,
    pub(super) object: Arc<Value>,
    pub(super) previous: Option<Arc<Value>>,
}

pub(super) struct Store {
    pub(super) rv: u64,
    /// Shared with the watch history and the answers: a write copies nothing it does not change.
    pub(super) objects: BTreeMap<Key, Arc<Value>>,
    pub(super) history: VecDeque<Arc<LogEntry>>,
    pub(super) history_limit: usize,
    /// Watches from a resourceVersion below this one get 410 Gone.
    pub(super) oldest_rv: u64,
    pub(super) applied: HashMap<(Key, String, bool), Value>,
    pub(super) calls: Vec<Call>,
    /// Every request path as received (before any parsing).
    pub(super) paths: Vec<String>,
    pub(super) counts: HashMap<String, u64>,
    pub(super) faults: Vec<Fault>,
    /// Rights RBAC would not grant: matching requests get 403, and access reviews say no.
    pub(super) denied: Vec<Matcher>,
    pub(super) injections: Vec<Injection>,
    pub(super) chaos: Option<Chaos>,
    pub(super) chaos_faults: u64,
    pub(super) violations: Vec<String>,
    pub(super) crd_installed: bool,
    pub(super) schema: Value,
    pub(super) first_ready: HashMap<(String, String), std::time::Instant>,
    pub(super) refresh_lateness: Vec<f64>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    pub(super) fn record(&mut self, call: Call, log: Option<&'static str>) {
        if let Some(profile) = log {
            log_call(&call, profile);
        }
        *self.counts.entry(call.label()).or_default() += 1;
        self.calls.push(call);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn publish(
        &mut self,
        shared: &Shared,
        kind: Kind,
        event: &'static str,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let entry = Arc::new(LogEntry {
            rv: self.rv,
            group: kind.group,
            plural: kind.plural,
            event,
            object,
            previous,
        });
        self.history.push_back(entry.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_rv = old.rv;
            }
        }
        let _ = shared.events.send(entry);
    }

    pub(super) fn create(
        &mut self,
        shared: &Shared,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, Failure> {
        let name = object["metadata"]["name"].as_str().map(str::to_owned);
        let name = match name {
            Some(n) if !n.is_empty() => n,
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05x}", rand::random::<u32>() & 0xfffff),
                None => return Err((422, "metadata.name: Required value".into())),
            },
        };
        let key = (kind.group, kind.plural, namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err((409, format!("{} \"{name}\" already exists", kind.plural)));
        }
        if kind.status_subresource {
            if let Some(o) = object.as_object_mut() {
                o.remove("status");
            }
        }
        normalise(kind, &mut object);
        self.check_schema(kind, &mut object, "spec")?;
        validate_metadata(kind, &name, &object, None)?;
        let rv = self.next_rv();
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), json!(name));
        if kind.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert(
            "uid".into(),
            json!(format!("{:032x}", rand::random::<u128>())),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("managedFields");
        if kind.tracks_generation {
            meta.insert("generation".into(), json!(1));
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        let object = Arc::new(object);
        self.objects.insert(key, object.clone());
        self.publish(shared, kind, "ADDED", object.clone(), None);
        Ok(object)
    }

    /// Records `manager` as the updater owning every data key, label and annotation of
    /// `object` (just created), in its `managedFields`; returns the object as stored.
    pub(super) fn own_as_updater(
        &mut self,
        kind: Kind,
        object: &Arc<Value>,
        manager: &str,
    ) -> Arc<Value> {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let key = (kind.group, kind.plural, namespace, name);
        let fields = |map: &Value| -> Value {
            let mut set = serde_json::Map::new();
            set.insert(".".into(), json!({}));
            for k in map.as_object().into_iter().flat_map(|m| m.keys()) {
                set.insert(format!("f:{k}"), json!({}));
            }
            Value::Object(set)
        };
        let entry = json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": kind.api_version(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:data": fields(&object["data"]),
                "f:metadata": {
                    "f:labels": fields(&object["metadata"]["labels"]),
                    "f:annotations": fields(&object["metadata"]["annotations"]),
                },
            },
        });
        match self.objects.get_mut(&key) {
            Some(stored) => {
                Arc::make_mut(stored)["metadata"]["managedFields"] = json!([entry]);
                stored.clone()
            }
            None => object.clone(),
        }
    }

    /// Replaces an object (update, patch, apply): checks the resourceVersion when asked,
    /// keeps status or spec apart, bumps generation, handles finalizers.
    pub(super) fn replace(
        &mut self,
        shared: &Shared,
        kind: Kind,
        key: Key,
        mut object: Value,
        status_only: bool,
    ) -> Result<Arc<Value>, Failure> {
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return Err((
                    409,
                    format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                        kind.plural, key.3
                    ),
                ));
            }
        }
        // The uid is immutable (an apply that carries another one is refused).
        if let Some(uid) = object["metadata"]["uid"].as_str()
            && Some(uid) != old["metadata"]["uid"].as_str()
        {
            return Err((
                422,
                format!(
                    "{} \"{}\" is invalid: metadata.uid: Invalid value: \"{uid}\": field is immutable",
                    kind.kind, key.3
                ),
            ));
        }
        normalise(kind, &mut object);
        if kind.status_subresource {
            if status_only {
                let status = object.as_object_mut().and_then(|o| o.remove("status"));
                object = (*old).clone();
                match status {
                    Some(s) => object["status"] = s,
                    None => {
                        object.as_object_mut().unwrap().remove("status");
                    }
                }
                self.check_schema(kind, &mut object, "status")?;
            } else {
                match old.get("status") {
                    Some(s) => object["status"] = s.clone(),
                    None => {
                        object.as_object_mut().unwrap().remove("status");
                    }
                }
                self.check_schema(kind, &mut object, "spec")?;
            }
        }
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
        ] {
            match old["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        // managedFields: kept when the request has none, replaced when it has a list, cleared
        // by a list of one empty entry (as the real server does).
        let reset = object["metadata"]["managedFields"] == json!([{}]);
        if let Some(m) = object["metadata"].as_object_mut() {
            if reset {
                m.remove("managedFields");
            } else if !m.contains_key("managedFields")
                && let Some(old_fields) = old["metadata"].get("managedFields")
            {
                m.insert("managedFields".into(), old_fields.clone());
            }
        }
        validate_metadata(kind, &key.3, &object, Some(&old))?;
        if kind.tracks_generation {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let bumped = if old.get("spec") != object.get("spec") {
                generation + 1
            } else {
                generation
            };
            object["metadata"]["generation"] = json!(bumped);
        }
        // Nothing changed: no new resourceVersion, no event (as the real server does).
        object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if object == *old {
            return Ok(old);
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let finalizers_empty = object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        let object = Arc::new(object);
        if old["metadata"].get("deletionTimestamp").is_some() && finalizers_empty {
            self.objects.remove(&key);
            self.publish(shared, kind, "DELETED", object.clone(), Some(old));
            self.collect_garbage(shared, &object);
            return Ok(object);
        }
        if kind == OAUTHCLIENTS && status_only {
            self.observe_status(&key, &old, &object);
        }
        self.objects.insert(key, object.clone());
        self.publish(shared, kind, "MODIFIED", object.clone(), Some(old));
        Ok(object)
    }

    /// Records, for benchmarks, when each OAuthClient first turned Ready and how late each
    /// planned refresh came (a new issuedAt compared with the previous nextRefreshAt).
    fn observe_status(&mut self, key: &Key, old: &Value, new: &Value) {
        let ready = |v: &Value| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        let id = (key.2.clone(), key.3.clone());
        if ready(new) && !self.first_ready.contains_key(&id) {
            self.first_ready.insert(id, std::time::Instant::now());
        }
        let issued = |v: &Value| v["status"]["issuedAt"].as_str().map(str::to_owned);
        let planned = old["status"]["nextRefreshAt"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let forced = new["metadata"]["annotations"]
            .get("oauth.token-operator.dev/refresh-requested-at")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .zip(issued(old).and_then(|t| t.parse::<jiff::Timestamp>().ok()))
            .is_some_and(|(requested, issued)| requested > issued);
        let was_healthy = old["status"]["consecutiveFailures"].as_i64() == Some(0);
        if let (Some(planned), true, false, true) = (
            planned,
            issued(old) != issued(new) && issued(old).is_some(),
            forced,
            was_healthy,
        ) {
            let late = jiff::Timestamp::now().duration_since(planned).as_secs_f64();
            self.refresh_lateness.push(late);
        }
    }

    pub(super) fn delete(&mut self, shared: &Shared, key: Key) -> Result<Arc<Value>, Failure> {
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.group == key.0 && k.plural == key.1)
            .unwrap();
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))?;
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut object = (*old).clone();
            let rv = self.next_rv();
            object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let object = Arc::new(object);
            self.objects.insert(key, object.clone());
            self.publish(shared, kind, "MODIFIED", object.clone(), Some(old));
            return Ok(object);
        }
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut object = (*old).clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        self.publish(shared, kind, "DELETED", object.clone(), Some(old));
        self.collect_garbage(shared, &object);
        Ok(object)
    }

    /// Deletes the objects owned by a deleted object (background cascading deletion).
    fn collect_garbage(&mut self, shared: &Shared, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, v)| {
                v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            let _ = self.delete(shared, key);
        }
    }
}

// === server-side apply ===

/// Server-side apply without `force`: a field that another manager applied, and that still has
/// that manager's value, may not be set to a different value (409 Conflict).
pub(super) fn check_apply_conflicts(
    store: &Store,
    key: &Key,
    manager: &str,
    status_only: bool,
    config: &Value,
    object: &Value,
) -> Result<(), Failure> {
    for ((other_key, other_manager, other_status), other_config) in &store.applied {
        if other_key != key || other_manager == manager || *other_status != status_only {
            continue;
        }
        let mut conflicts = Vec::new();
        find_conflicts(config, other_config, object, "", &mut conflicts);
        if let Some(path) = conflicts.first() {
            return Err((
                409,
                format!("Apply failed with 1 conflict: conflict with \"{other_manager}\": {path}"),
            ));
        }
    }
    Ok(())
}

fn find_conflicts(mine: &Value, theirs: &Value, live: &Value, path: &str, out: &mut Vec<String>) {
    let Some(mine) = mine.as_object() else { return };
    for (name, value) in mine {
        if path.is_empty() && (name == "apiVersion" || name == "kind") {
            continue;
        }
        if path == ".metadata" && (name == "name" || name == "namespace") {
            continue;
        }
        let (Some(their), Some(current)) = (theirs.get(name), live.get(name)) else {
            continue;
        };
        let child = format!("{path}.{name}");
        if value.is_object() && their.is_object() {
            find_conflicts(value, their, current, &child, out);
        } else if their == current && value != current {
            out.push(child);
        }
    }
}

/// Removes from `object` the fields a manager applied before but no longer applies.
pub(super) fn remove_unapplied(object: &mut Value, previous: &Value, current: &Value) {
    let (Some(prev), Some(obj)) = (previous.as_object(), object.as_object_mut()) else {
        return;
    };
    for (name, prev_value) in prev {
        match current.get(name) {
            None => {
                obj.remove(name);
            }
            Some(cur) if prev_value.is_object() && cur.is_object() => {
                if let Some(child) = obj.get_mut(name) {
                    remove_unapplied(child, prev_value, cur);
                }
            }
            _ => {}
        }
    }
}

/// Sets every field of an applied configuration (maps merge, lists and scalars replace).
pub(super) fn merge_applied(object: &mut Value, config: &Value) {
    match (object.as_object_mut(), config.as_object()) {
        (Some(obj), Some(cfg)) => {
            for (name, value) in cfg {
                if value.is_object() && obj.get(name).is_some_and(Value::is_object) {
                    merge_applied(obj.get_mut(name).unwrap(), value);
                } else if !value.is_null() {
                    obj.insert(name.clone(), value.clone());
                }
            }
        }
        _ => *object = config.clone(),
    }
}
