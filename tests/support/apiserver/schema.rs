//! Defaulting and validation: OAuthClients against the OpenAPI schema of
//! `crds/oauthclient.yaml` (defaults, types, enums, bounds, with the real server's messages;
//! fields the schema would prune are refused and recorded as violations), Secrets' `stringData`
//! folded into `data`, and what the real API server checks of every object's metadata.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::store::Store;
use super::{EVENTS, Failure, Kind, OAUTHCLIENTS, SECRETS};

pub(super) fn crd_schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/oauthclient.yaml"
    ))
    .expect("crds/oauthclient.yaml");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

impl Store {
    pub(super) fn check_schema(
        &mut self,
        kind: Kind,
        object: &mut Value,
        part: &str,
    ) -> Result<(), Failure> {
        if kind != OAUTHCLIENTS {
            return Ok(());
        }
        // Borrowed, not copied: the CRD's schema is large and this runs on every write.
        let schema = &self.schema["properties"][part];
        if object.get(part).is_none_or(Value::is_null) {
            if part == "spec" {
                return Err((422, "spec: Required value".into()));
            }
            return Ok(());
        }
        apply_defaults(schema, &mut object[part]);
        let mut errors = Vec::new();
        validate(schema, &object[part], part, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            self.violations.extend(errors.iter().cloned());
            Err((
                422,
                format!("{} is invalid: {}", kind.kind, errors.join("; ")),
            ))
        }
    }
}

/// What the real API server checks of every object's metadata, and of Secrets: a DNS-subdomain
/// name, qualified label and annotation keys, label values, the annotations' total size; a
/// Secret's type is immutable and its data at most 1 MiB.
pub(super) fn validate_metadata(
    kind: Kind,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Failure> {
    let invalid = |what: String| Err((422, format!("{} \"{name}\" is invalid: {what}", kind.kind)));
    let subdomain = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    };
    let label_like = |s: &str| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
    };
    let qualified = |key: &str| match key.split_once('/') {
        Some((prefix, rest)) => subdomain(prefix) && label_like(rest),
        None => label_like(key),
    };
    if !subdomain(name) {
        return invalid(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"
        ));
    }
    let meta = &object["metadata"];
    for (key, value) in meta["labels"].as_object().into_iter().flatten() {
        if !qualified(key) {
            return invalid(format!(
                "metadata.labels: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.' (at most 63)"
            ));
        }
        let value = value.as_str().unwrap_or_default();
        if !value.is_empty() && !label_like(value) {
            return invalid(format!(
                "metadata.labels: Invalid value: \"{value}\": must be no more than 63 characters"
            ));
        }
    }
    let mut annotations_size = 0;
    for (key, value) in meta["annotations"].as_object().into_iter().flatten() {
        if !qualified(key) {
            return invalid(format!(
                "metadata.annotations: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
            ));
        }
        annotations_size += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotations_size > 256 * 1024 {
        return invalid("metadata.annotations: Too long: must have at most 262144 bytes".into());
    }
    if kind == EVENTS && object["note"].as_str().is_some_and(|n| n.len() > 1024) {
        return invalid("note: Too long: may not be more than 1024 bytes".into());
    }
    if kind == SECRETS {
        let type_of = |o: &Value| o["type"].as_str().unwrap_or("Opaque").to_owned();
        if let Some(old) = old
            && type_of(old) != type_of(object)
        {
            return invalid("type: Invalid value: field is immutable".into());
        }
        let size: usize = object["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, |v| v.len() * 3 / 4))
            .sum();
        if size > 1024 * 1024 {
            return invalid("data: Too long: must have at most 1048576 bytes".into());
        }
    }
    Ok(())
}

/// Secrets keep only `data` (base64): `stringData` is folded in, as the real server does.
pub(super) fn normalise(kind: Kind, object: &mut Value) {
    if object.get("metadata").is_none_or(|m| !m.is_object()) {
        object["metadata"] = json!({});
    }
    if kind != SECRETS {
        return;
    }
    if let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !object["data"].is_object() {
            object["data"] = json!({});
        }
        for (k, v) in string_data {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            object["data"][k] = json!(encoded);
        }
    }
    if object.get("type").is_none() {
        object["type"] = json!("Opaque");
    }
}

// === schema ===

fn apply_defaults(schema: &Value, value: &mut Value) {
    let Some(props) = schema["properties"].as_object() else {
        if let (Some(items), Some(list)) = (schema.get("items"), value.as_array_mut()) {
            for item in list {
                apply_defaults(items, item);
            }
        }
        return;
    };
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for (name, sub) in props {
        if !object.contains_key(name) {
            if let Some(default) = sub.get("default") {
                object.insert(name.clone(), default.clone());
            }
        }
        if let Some(child) = object.get_mut(name) {
            apply_defaults(sub, child);
        }
    }
}

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: expected {ty}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{path}: Unsupported value {value}"));
        }
    }
    match value {
        Value::Object(map) => validate_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    errors.push(format!(
                        "{path}: Too many: {}: must have at most {max} items",
                        items.len()
                    ));
                }
            }
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
                errors.push(format!(
                    "{path}: Too long: may not be more than {} bytes",
                    schema["maxLength"]
                ));
            }
            if schema["minLength"].as_u64().is_some_and(|min| len < min) {
                errors.push(format!("{path}: Too short"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                if !regex::Regex::new(pattern).unwrap().is_match(s) {
                    errors.push(format!("{path}: does not match {pattern}"));
                }
            }
            if schema["format"] == "date-time" && jiff::Timestamp::from_str_rfc3339(s).is_err() {
                errors.push(format!("{path}: not a date-time"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be greater than or equal to {}",
                    schema["minimum"]
                ));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!(
                    "{path}: Invalid value: {n}: {path} in body should be less than or equal to {}",
                    schema["maximum"]
                ));
            }
        }
        _ => {}
    }
}

trait FromRfc3339 {
    fn from_str_rfc3339(s: &str) -> Result<jiff::Timestamp, jiff::Error>;
}

impl FromRfc3339 for jiff::Timestamp {
    fn from_str_rfc3339(s: &str) -> Result<jiff::Timestamp, jiff::Error> {
        s.parse()
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    if let Some(max) = schema["maxProperties"].as_u64() {
        if map.len() as u64 > max {
            errors.push(format!(
                "{path}: Too many: {}: must have at most {max} items",
                map.len()
            ));
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        if !map.contains_key(name) {
            errors.push(format!("{path}.{name}: Required value"));
        }
    }
    let props = schema["properties"].as_object();
    for (name, child) in map {
        let child_path = format!("{path}.{name}");
        match (
            props.and_then(|p| p.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(sub), _) => validate(sub, child, &child_path, errors),
            (None, Some(additional)) if additional.is_object() => {
                validate(additional, child, &child_path, errors)
            }
            _ => errors.push(format!(
                "{child_path}: unknown field (the schema would prune it)"
            )),
        }
    }
    // `x-kubernetes-validations` (CEL) are not evaluated here: the real-cluster suite checks
    // them against a real kube-apiserver (tests/real_cluster/schema.rs), whose evaluation is
    // the reference.
}
