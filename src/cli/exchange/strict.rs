//! The `exchange` command's OAuthClient checked as strictly as the cluster checks it, before
//! anything is sent: against the CRD's own OpenAPI schema ([`crate::api::crd::schema`]), every
//! field must be known (a misspelt one is named, with the known field it most likely meant:
//! `tokenURL` → `tokenUrl`), of its type, within its enum and bounds, and present when required.
//! The CEL rules' meaning is checked next by resolving the spec as the operator does
//! ([`crate::spec::ClientSettings::resolve`]).

use serde_json::Value;

/// The fields of `metadata` an object may carry (ObjectMeta).
const OBJECT_META: [&str; 16] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
    "clusterName",
];

/// Every problem of `document` (an OAuthClient as parsed from YAML) against `schema`, as
/// `field.path: what is wrong`, in document order.
pub fn problems(document: &Value, schema: &Value) -> Vec<String> {
    // Every object has these besides what its CRD's schema declares; metadata is checked below.
    let mut schema = schema.clone();
    if let Some(properties) = schema["properties"].as_object_mut() {
        properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        properties.insert("kind".into(), serde_json::json!({"type": "string"}));
        properties.insert(
            "metadata".into(),
            serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    let mut found = Vec::new();
    check(document, &schema, "", &mut found);
    if let Some(meta) = document.get("metadata").and_then(Value::as_object) {
        for key in meta.keys() {
            if !OBJECT_META.contains(&key.as_str()) {
                found.push(unknown("metadata", key, OBJECT_META.iter().copied()));
            }
        }
    }
    found
}

fn check(value: &Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    if value.is_null()
        || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
    {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let expected = schema.get("type").and_then(Value::as_str);
    let fits = match (expected, value) {
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (Some("integer" | "string"), Value::String(_) | Value::Number(_)) => int_or_string,
        _ => false,
    };
    let at = if path.is_empty() { "the object" } else { path };
    if !fits {
        found.push(format!(
            "{at}: must be {} (got {})",
            a_type(expected.unwrap_or("?")),
            kind_of(value)
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_path = join(path, key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(child_schema), _) | (None, Some(child_schema)) => {
                        check(child, child_schema, &child_path, found);
                    }
                    (None, None) if properties.is_some() => {
                        let known = properties
                            .into_iter()
                            .flat_map(|p| p.keys().map(String::as_str));
                        found.push(unknown(at, key, known));
                    }
                    (None, None) => {}
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    found.push(format!("{}: required", join(path, required)));
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                found.push(format!("{at}: at most {max} entries (has {})", map.len()));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                found.push(format!("{at}: at most {max} items (has {})", items.len()));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{path}[{i}]"), found);
                }
            }
        }
        Value::String(text) => {
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(text))
            {
                let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                let hint = closest(text, names.iter().copied())
                    .map(|c| format!(" (did you mean {c}?)"))
                    .unwrap_or_default();
                found.push(format!(
                    "{at}: {text:?} is not one of {}{hint}",
                    names.join(", ")
                ));
            }
            let length = text.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                found.push(format!("{at}: at most {max} characters (has {length})"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                found.push(format!("{at}: at least {min} characters"));
            }
        }
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                found.push(format!("{at}: at least {min} (is {number})"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                found.push(format!("{at}: at most {max} (is {number})"));
            }
        }
        _ => {}
    }
}

/// The problem of an unknown field `key` of `at`, with the known field it most likely meant.
fn unknown<'a>(at: &str, key: &str, known: impl Iterator<Item = &'a str>) -> String {
    let field = join(if at == "the object" { "" } else { at }, key);
    match closest(key, known) {
        Some(meant) => format!("{field}: unknown field (did you mean {meant}?)"),
        None => format!("{field}: unknown field"),
    }
}

/// The known name closest to `given` when it is close enough to be a misspelling: the same
/// letters in another case, or a few edits away (for its length).
fn closest<'a>(given: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_lowercase();
    known
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(distance, k)| *distance <= (k.len().max(given.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn a_type(name: &str) -> &str {
    match name {
        "object" => "an object",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        other => other,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems_of(document: Value) -> Vec<String> {
        problems(&document, &crate::api::crd::schema())
    }

    fn client(spec: Value) -> Value {
        json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
               "metadata": {"name": "demo", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_valid_client_has_no_problem() {
        let spec = json!({"provider": "microboxlabs", "audience": "https://api.example",
            "credentialsSecretRef": {"name": "creds"}, "scopes": ["read"],
            "target": {"name": "t", "template": {"Authorization": "Bearer {{ access_token }}"}},
            "refresh": {"renewBefore": "5m"}});
        assert_eq!(problems_of(client(spec)), Vec::<String>::new());
    }

    #[test]
    fn misspelt_fields_are_named_with_the_field_they_meant() {
        let cases = [
            (
                json!({"tokenURL": "https://idp.example/t", "credentialsSecretRef": {"name": "c"}}),
                "spec.tokenURL: unknown field (did you mean tokenUrl?)",
            ),
            (
                json!({"tokenUrl": "https://idp.example/t", "scope": ["a"], "credentialsSecretRef": {"name": "c"}}),
                "spec.scope: unknown field (did you mean scopes?)",
            ),
            (
                json!({"tokenUrl": "https://idp.example/t", "credentialsSecretRef": {"name": "c", "clientSecretkey": "s"}}),
                "spec.credentialsSecretRef.clientSecretkey: unknown field (did you mean clientSecretKey?)",
            ),
            (
                json!({"tokenUrl": "https://idp.example/t", "credentialsSecretRef": {"name": "c"}, "refresh": {"renewBefor": "5m"}}),
                "spec.refresh.renewBefor: unknown field (did you mean renewBefore?)",
            ),
            (
                json!({"tokenUrl": "https://idp.example/t", "credentialsSecretRef": {"name": "c"}, "frobnicate": true}),
                "spec.frobnicate: unknown field",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(problems_of(client(spec)), [expected]);
        }
        let mut top = client(
            json!({"tokenUrl": "https://idp.example/t", "credentialsSecretRef": {"name": "c"}}),
        );
        top["spce"] = json!({});
        top["metadata"]["namepsace"] = json!("x");
        assert_eq!(
            problems_of(top),
            [
                "spce: unknown field (did you mean spec?)",
                "metadata.namepsace: unknown field (did you mean namespace?)"
            ]
        );
    }

    #[test]
    fn types_enums_bounds_and_required_fields_are_checked() {
        let spec = json!({"provider": "microboxlab", "tokenUrl": 7, "clientAuthMethod": "ClientSecretBasic",
            "credentialsSecretRef": {"clientIdKey": "id"}, "scopes": "read",
            "refresh": {"renewBeforePercentage": 95}});
        let found = problems_of(client(spec));
        for expected in [
            "spec.provider: \"microboxlab\" is not one of generic, microboxlabs",
            "(did you mean microboxlabs?)",
            "spec.tokenUrl: must be a string (got a number)",
            "spec.credentialsSecretRef.name: required",
            "spec.scopes: must be a list (got a string)",
            "spec.refresh.renewBeforePercentage: at most 90 (is 95)",
        ] {
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected} in {found:#?}"
            );
        }
    }
}
