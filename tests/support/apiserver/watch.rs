//! List and watch: `limit` / `continue` pages; watches from a resourceVersion (the kept
//! history, then live events), bookmarks, `410 Gone` for a resourceVersion older than the
//! history, and the metadata-only forms (`PartialObjectMetadata`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::SinkExt;
use serde_json::{Value, json};

use super::Shared;
use super::requests::Target;
use super::selectors::matches_target;
use super::store::LogEntry;

// === list and watch ===

/// An object as `PartialObjectMetadata` (its metadata only), written without copying it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetadataOnly<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: &'a Value,
}

impl<'a> MetadataOnly<'a> {
    fn of(object: &'a Value) -> Self {
        Self {
            kind: "PartialObjectMetadata",
            api_version: "meta.k8s.io/v1",
            metadata: &object["metadata"],
        }
    }
}

/// An item of a list, the object of a watch event or of an answer: whole, or its metadata only.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub(super) enum Item<'a> {
    Whole(&'a Value),
    Metadata(MetadataOnly<'a>),
}

impl<'a> Item<'a> {
    pub(super) fn of(object: &'a Value, metadata: bool) -> Self {
        if metadata {
            Item::Metadata(MetadataOnly::of(object))
        } else {
            Item::Whole(object)
        }
    }
}

pub(super) fn list(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
    metadata: bool,
) -> Response {
    let store = shared.store.lock().unwrap();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // continue = "<list rv>:<last key>"
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .unwrap_or_default(),
            )
            .unwrap_or_default();
            let (rv, last) = decoded.split_once(':').unwrap_or(("0", ""));
            (rv.parse().unwrap_or(store.rv), Some(last.to_owned()))
        }
        None => (store.rv, None),
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for ((group, plural, ns, name), object) in &store.objects {
        if !matches_target(target, query, group, plural, object) {
            continue;
        }
        let flat = format!("{ns}/{name}");
        if after.as_ref().is_some_and(|a| flat.as_str() <= a.as_str()) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(Item::of(object, metadata));
        last_key = Some(flat);
    }
    let continue_token = match (more, last_key) {
        (true, Some(last)) => {
            base64::engine::general_purpose::STANDARD.encode(format!("{list_rv}:{last}"))
        }
        _ => String::new(),
    };
    let (api_version, kind) = if metadata {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (
            target.kind.api_version(),
            format!("{}List", target.kind.kind),
        )
    };
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a> {
        api_version: String,
        kind: String,
        metadata: Value,
        items: Vec<Item<'a>>,
    }
    let response = (
        StatusCode::OK,
        axum::Json(List {
            api_version,
            kind,
            metadata: json!({"resourceVersion": list_rv.to_string(), "continue": continue_token}),
            items,
        }),
    )
        .into_response();
    drop(store);
    response
}

fn watch_event_line(event: &str, object: Item<'_>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        event: &'a str,
        object: Item<'a>,
    }
    let mut line = serde_json::to_vec(&Line { event, object }).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

pub(super) fn watch_stream(
    shared: Arc<Shared>,
    target: Target,
    query: HashMap<String, String>,
    metadata: bool,
) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    let (backlog, mut live, expired, start_rv) = {
        let store = shared.store.lock().unwrap();
        let expired = since != 0 && since < store.oldest_rv;
        let backlog: Vec<Arc<LogEntry>> = if since == 0 {
            Vec::new()
        } else {
            store
                .history
                .iter()
                .filter(|e| e.rv > since)
                .cloned()
                .collect()
        };
        (
            backlog,
            shared.events.subscribe(),
            expired,
            since.max(if since == 0 { store.rv } else { 0 }),
        )
    };
    let mut drop_signal = shared.drop_watches.subscribe();
    let bookmark_every = Duration::from_millis(shared.bookmark_ms.load(Ordering::SeqCst));
    let kind = target.kind;

    tokio::spawn(async move {
        if expired {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410});
            let _ = tx
                .send(Ok(watch_event_line("ERROR", Item::Whole(&status))))
                .await;
            return;
        }
        let mut last_rv = start_rv;
        let emit = |entry: &LogEntry, last_rv: &mut u64| -> Option<Bytes> {
            if entry.rv <= *last_rv {
                return None;
            }
            *last_rv = entry.rv;
            let now = matches_target(&target, &query, entry.group, entry.plural, &entry.object);
            let before = entry
                .previous
                .as_ref()
                .is_some_and(|p| matches_target(&target, &query, entry.group, entry.plural, p));
            let event = match (entry.event, before, now) {
                ("DELETED", true, _) => "DELETED",
                ("DELETED", false, _) => return None,
                (_, false, true) => "ADDED",
                (_, true, true) => entry.event,
                (_, true, false) => "DELETED",
                (_, false, false) => return None,
            };
            Some(watch_event_line(event, Item::of(&entry.object, metadata)))
        };
        for entry in &backlog {
            if let Some(line) = emit(entry, &mut last_rv) {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(entry) => {
                        if let Some(line) = emit(&entry, &mut last_rv) {
                            if tx.send(Ok(line)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow a reader, or shut down: end the watch; the client re-lists.
                    Err(_) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(Ok(watch_event_line("BOOKMARK", Item::Whole(&bookmark)))).await.is_err() {
                        return;
                    }
                }
                _ = drop_signal.changed() => return,
                _ = &mut deadline => return,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(rx));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
