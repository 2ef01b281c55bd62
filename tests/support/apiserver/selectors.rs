//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, existence) and field selectors
//! (`metadata.name`, `metadata.namespace`, `type`, and on events `regarding.*` and `reason`),
//! and whether an object matches a request's target and selectors (for list and watch).

use std::collections::HashMap;

use serde_json::Value;

use super::requests::Target;

// === selectors ===

fn label_matches(selector: &str, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    split_requirements(selector).iter().all(|req| {
        let req = req.trim();
        if req.is_empty() {
            return true;
        }
        if let Some((k, set)) = req.split_once(" notin ") {
            let set = parse_set(set);
            return get(k.trim()).is_none_or(|v| !set.contains(&v));
        }
        if let Some((k, set)) = req.split_once(" in ") {
            let set = parse_set(set);
            return get(k.trim()).is_some_and(|v| set.contains(&v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return get(k.trim()) != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return get(k.trim()) == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return get(k.trim()).is_none();
        }
        get(req).is_some()
    })
}

fn split_requirements(selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

fn parse_set(set: &str) -> Vec<&str> {
    set.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .collect()
}

fn field_matches(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|req| {
        let (path, value, negate) = match req.split_once("!=") {
            Some((p, v)) => (p, v, true),
            None => match req.split_once("==").or_else(|| req.split_once('=')) {
                Some((p, v)) => (p, v, false),
                None => return true,
            },
        };
        let actual = match path.trim() {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            "type" => object["type"].as_str(),
            // events.k8s.io/v1 (the real server maps these to involvedObject.*).
            "regarding.kind" => object["regarding"]["kind"].as_str(),
            "regarding.name" => object["regarding"]["name"].as_str(),
            "regarding.namespace" => object["regarding"]["namespace"].as_str(),
            "regarding.uid" => object["regarding"]["uid"].as_str(),
            "reason" => object["reason"].as_str(),
            _ => None,
        };
        (actual == Some(value.trim())) != negate
    })
}

pub(super) fn matches_target(
    target: &Target,
    query: &HashMap<String, String>,
    group: &str,
    plural: &str,
    object: &Value,
) -> bool {
    group == target.kind.group
        && plural == target.kind.plural
        && target
            .namespace
            .as_ref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && query
            .get("labelSelector")
            .is_none_or(|s| label_matches(s, &object["metadata"]["labels"]))
        && query
            .get("fieldSelector")
            .is_none_or(|s| field_matches(s, object))
}
