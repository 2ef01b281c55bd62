//! Request handling: the path of a request parsed into its [`Target`], the axum handler
//! (latency, call records, injections, denials, faults, chaos, then the verb), the writes
//! (get, create, update, patch as server-side apply / merge / JSON patch, delete, TokenRequest)
//! and the `Status` bodies of errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use serde_json::{Value, json};

use super::faults::{self_subject_access_review, self_subject_review};
use super::store::{Store, check_apply_conflicts, merge_applied, remove_unapplied};
use super::watch::{Item, list, watch_stream};
use super::{Call, Failure, KINDS, Kind, OAUTHCLIENTS, SERVICEACCOUNTS, Shared, tokens};

// === request handling ===

pub(super) struct Target {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    Some(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

pub(super) fn status_body(code: u16, message: &str) -> Response {
    let reason = match code {
        404 => "NotFound",
        409 if message.contains("already exists") => "AlreadyExists",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        400 => "BadRequest",
        405 => "MethodNotAllowed",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let mut response = (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
    if code == 429 {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    shared
        .store
        .lock()
        .unwrap()
        .paths
        .push(uri.path().to_owned());
    if uri.path() == "/.well-known/openid-configuration" && method == Method::GET {
        let call = Call {
            verb: "get".into(),
            group: String::new(),
            resource: uri.path().to_owned(),
            subresource: None,
            namespace: None,
        };
        shared
            .store
            .lock()
            .unwrap()
            .record(call, shared.log_profile());
        return (StatusCode::OK, axum::Json(tokens::discovery())).into_response();
    }
    if uri.path() == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        && method == Method::POST
    {
        return self_subject_access_review(&shared, &body);
    }
    if uri.path() == "/apis/authentication.k8s.io/v1/selfsubjectreviews" && method == Method::POST {
        return self_subject_review(&shared);
    }
    let Some(target) = parse_path(uri.path()) else {
        return status_body(
            404,
            &format!(
                "the server could not find the requested resource ({})",
                uri.path()
            ),
        );
    };
    let query = query_map(&uri);
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::POST, true) if target.subresource.as_deref() == Some("token") => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return status_body(405, "method not allowed"),
    };
    let call = Call {
        verb: verb.to_owned(),
        group: target.kind.group.to_owned(),
        resource: target.kind.plural.to_owned(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
    };
    let chaos = {
        let mut store = shared.store.lock().unwrap();
        store.record(call.clone(), shared.log_profile());
        if target.kind == OAUTHCLIENTS && !store.crd_installed {
            return status_body(404, "the server could not find the requested resource");
        }
        if let Some(i) = store
            .injections
            .iter()
            .position(|injection| injection.matcher.matches(&call))
        {
            let injection = store.injections.remove(i);
            let namespace = injection.object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let created = store.create(&shared, injection.kind, &namespace, injection.object);
            assert!(created.is_ok(), "injected object: {created:?}");
        }
        if store.denied.iter().any(|m| m.matches(&call)) {
            return status_body(
                403,
                &format!("{} is forbidden (denied by the test)", call.label()),
            );
        }
        if let Some(fault) = store
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matcher.matches(&call))
        {
            fault.remaining -= 1;
            let status = fault.status;
            store.faults.retain(|f| f.remaining > 0);
            return status_body(status, "injected fault");
        }
        store.chaos
    };
    if let Some(chaos) = chaos {
        let (fail, delay, status) = {
            let mut rng = rand::rng();
            let write = !matches!(verb, "get" | "list" | "watch");
            let statuses: &[u16] = if write { &[500, 409, 429] } else { &[500, 429] };
            (
                rng.random_bool(chaos.rate.clamp(0.0, 1.0)),
                rng.random_range(0..=chaos.max_latency.as_millis() as u64),
                statuses[rng.random_range(0..statuses.len())],
            )
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if fail {
            shared.store.lock().unwrap().chaos_faults += 1;
            let mut response = status_body(status, "injected chaos fault");
            if status == 429 {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            return response;
        }
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let metadata = accept.contains("as=PartialObjectMetadata");
    match verb {
        "watch" => watch_stream(shared, target, query, metadata),
        "list" => list(&shared, &target, &query, metadata),
        _ => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut store = shared.store.lock().unwrap();
            let result = write(
                &mut store,
                &shared,
                verb,
                &target,
                &query,
                &content_type,
                &body,
            );
            // The answer is written after the store is unlocked (it shares the stored object).
            drop(store);
            match result {
                Ok((code, object)) => (
                    StatusCode::from_u16(code).unwrap(),
                    axum::Json(Item::of(&object, metadata)),
                )
                    .into_response(),
                Err((code, message)) => status_body(code, &message),
            }
        }
    }
}

fn write(
    store: &mut Store,
    shared: &Shared,
    verb: &str,
    target: &Target,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Arc<Value>), Failure> {
    let kind = target.kind;
    let namespace = target.namespace.clone().unwrap_or_default();
    let status_only = target.subresource.as_deref() == Some("status");
    if kind == SERVICEACCOUNTS && target.subresource.as_deref() == Some("token") && verb == "create"
    {
        let name = target.name.clone().unwrap_or_default();
        let key = (kind.group, kind.plural, namespace.clone(), name.clone());
        let Some(sa) = store.objects.get(&key) else {
            return Err((404, format!("serviceaccounts \"{name}\" not found")));
        };
        let request: Value = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        return shared
            .issuer
            .token_request(&namespace, sa, &request)
            .map(|v| (201, Arc::new(v)));
    }
    if target.subresource.is_some() && !(status_only && kind.status_subresource) {
        return Err((404, "no such subresource".into()));
    }
    let parse = |body: &[u8]| -> Result<Value, Failure> {
        serde_json::from_slice(body)
            .or_else(|_| serde_yaml::from_slice(body))
            .map_err(|e| (400, format!("cannot decode body: {e}")))
    };
    match verb {
        "get" => {
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store
                .objects
                .get(&key)
                .cloned()
                .map(|v| (200, v))
                .ok_or((404, format!("{} \"{}\" not found", kind.plural, key.3)))
        }
        "create" => {
            let object = parse(body)?;
            let created = store.create(shared, kind, &namespace, object)?;
            // A create with a field manager: it owns every field as an updater.
            Ok(match query.get("fieldManager") {
                Some(manager) => (201, store.own_as_updater(kind, &created, manager)),
                None => (201, created),
            })
        }
        "update" => {
            let object = parse(body)?;
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store
                .replace(shared, kind, key, object, status_only)
                .map(|v| (200, v))
        }
        "delete" => {
            let key = (
                kind.group,
                kind.plural,
                namespace,
                target.name.clone().unwrap(),
            );
            store.delete(shared, key).map(|v| (200, v))
        }
        "patch" => {
            let name = target.name.clone().unwrap();
            let key = (kind.group, kind.plural, namespace.clone(), name.clone());
            let patch = parse(body)?;
            let existing = store.objects.get(&key).map(|o| (**o).clone());
            if content_type.starts_with("application/apply-patch") {
                let manager = query
                    .get("fieldManager")
                    .cloned()
                    .ok_or((422, "fieldManager is required for apply".to_owned()))?;
                let applied_key = (key.clone(), manager.clone(), status_only);
                let previous = store.applied.get(&applied_key).cloned();
                let force = query.get("force").is_some_and(|f| f == "true");
                let config = if status_only {
                    json!({ "status": patch.get("status").cloned().unwrap_or(Value::Null) })
                } else {
                    patch.clone()
                };
                let result = match existing {
                    None if status_only => {
                        return Err((404, format!("{} \"{name}\" not found", kind.plural)));
                    }
                    None => {
                        // The real API server also authorizes an apply that creates as `create`.
                        store.record(
                            Call {
                                verb: "create".into(),
                                group: kind.group.into(),
                                resource: kind.plural.into(),
                                subresource: None,
                                namespace: Some(namespace.clone()),
                            },
                            shared.log_profile(),
                        );
                        let mut object = config.clone();
                        object["metadata"]["name"] = json!(name);
                        store
                            .create(shared, kind, &namespace, object)
                            .map(|v| (201, v))
                    }
                    Some(mut object) => {
                        if !force {
                            check_apply_conflicts(
                                store,
                                &key,
                                &manager,
                                status_only,
                                &config,
                                &object,
                            )?;
                        }
                        if let Some(prev) = &previous {
                            remove_unapplied(&mut object, prev, &config);
                        }
                        merge_applied(&mut object, &config);
                        if let Some(m) = object["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        store
                            .replace(shared, kind, key, object, status_only)
                            .map(|v| (200, v))
                    }
                };
                if result.is_ok() {
                    store.applied.insert(applied_key, config);
                }
                result
            } else {
                let Some(mut object) = existing else {
                    return Err((404, format!("{} \"{name}\" not found", kind.plural)));
                };
                if content_type.starts_with("application/json-patch") {
                    let ops: json_patch::Patch =
                        serde_json::from_value(patch).map_err(|e| (400, e.to_string()))?;
                    json_patch::patch(&mut object, &ops).map_err(|e| (422, e.to_string()))?;
                } else {
                    // merge-patch+json and strategic-merge-patch+json
                    json_patch::merge(&mut object, &patch);
                }
                store
                    .replace(shared, kind, key, object, status_only)
                    .map(|v| (200, v))
            }
        }
        _ => Err((405, format!("{verb} is not supported by the double"))),
    }
}
