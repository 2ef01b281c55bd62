//! `oauth-token-operator inspect NAME [-n NS] [--secret NAME]`: what is inside the stored token.
//!
//! Reads the managed Secret through the API (only `get` on that Secret is needed; the
//! OAuthClient is read too, to find the Secret's name and the status, but `--secret` or a
//! forbidden read of it skips that). Prints the token's type, scope and times and, for a JWT,
//! its header and claims, decoded without verifying the signature, with `exp` / `iat` / `nbf`
//! also as RFC 3339 and relative. Never the token, its signature or any credential: the
//! credentials Secret is never read, and the output is scrubbed of the token and its signature
//! before it is printed, as a second guard.
//!
//! `inspect clusteroauthclient/NAME` (or `--cluster NAME`) prints the ClusterOAuthClient's
//! status (as `status` does) and its copies: the Secrets labelled
//! `oauth.token-operator.dev/cluster-client=NAME` in every namespace, each with its keys and
//! their sizes (never the values), whether this ClusterOAuthClient controls it and whether it
//! holds the current token.

use crate::cli::terminal::{errln, out};
use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use super::OutputFormat;
use super::cluster::{self, Named};
use super::kube_config::{CliError, Connection, KubeArgs, checked_name};
use super::table::{
    Table, margin_warning, parse_time, printable, relative, short_margin, truncate, when, when_text,
};
use crate::api::crd::{OAuthClient, OAuthClientSpec};
use crate::api::keys::{CLUSTER_CLIENT_LABEL, ISSUED_AT_ANNOTATION};
use crate::base::time::rfc3339;
use crate::base::{Scrubber, Sensitive};
use crate::output::secret::{client_label_value, controlled_by, target_name};

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The OAuthClient whose token to inspect; clusteroauthclient/NAME (also
    /// clusteroauthclients/NAME, coac/NAME) shows a ClusterOAuthClient and its copies.
    pub name: String,

    /// NAME is a ClusterOAuthClient.
    #[arg(long = "cluster", alias = "cluster-client")]
    pub cluster_client: bool,

    /// Read this managed Secret without reading the OAuthClient (for users who may only `get`
    /// that Secret).
    #[arg(long, value_name = "SECRET", conflicts_with = "cluster_client")]
    pub secret: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Longest claim or header value printed.
const VALUE_WIDTH: usize = 200;

/// Claims shown first, in this order; the others follow sorted by name.
const KNOWN_CLAIMS: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "client_id",
    "appid",
    "scope",
    "scp",
    "roles",
    "iat",
    "nbf",
    "exp",
    "auth_time",
    "jti",
];

/// Claims holding Unix times.
const TIME_CLAIMS: [&str; 4] = ["iat", "nbf", "exp", "auth_time"];

/// Header parameters shown first.
const KNOWN_HEADER: [&str; 5] = ["alg", "typ", "kid", "cty", "enc"];

/// What the access token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenShape {
    /// A signed JWT: header and claims decoded (signature not verified).
    Jwt {
        header: Map<String, Value>,
        claims: Map<String, Value>,
    },
    /// An encrypted JWT: only its header is readable.
    Jwe { header: Map<String, Value> },
    /// Anything else.
    Opaque,
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Decodes a token's header and claims when it is a JWT (no signature check).
pub(super) fn shape(token: &str) -> TokenShape {
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        [header, payload, _signature] => match (decode_object(header), decode_object(payload)) {
            (Some(header), Some(claims)) => TokenShape::Jwt { header, claims },
            _ => TokenShape::Opaque,
        },
        [header, _, _, _, _] => match decode_object(header) {
            Some(header) if header.contains_key("enc") => TokenShape::Jwe { header },
            _ => TokenShape::Opaque,
        },
        _ => TokenShape::Opaque,
    }
}

/// Everything `inspect` prints (no token in it).
pub(super) struct View {
    pub namespace: String,
    /// The OAuthClient, when it could be read.
    pub client: Option<OAuthClient>,
    pub client_name: String,
    pub secret: String,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub bytes: usize,
    pub shape: TokenShape,
    /// Why the OAuthClient was not read, when it was not.
    pub note: Option<String>,
}

/// Runs `inspect`.
pub(super) async fn run(args: InspectArgs) -> Result<u8, CliError> {
    // The name is checked before connecting: a name that is no name never reaches a request.
    let name = match cluster::named(&args.name, args.cluster_client)? {
        Named::Client(name) => name.to_owned(),
        Named::Cluster(name) => {
            if args.secret.is_some() {
                return Err(CliError::usage(
                    "--secret reads an OAuthClient's Secret; a ClusterOAuthClient's copies are found by their label",
                ));
            }
            let connection = args.kube.connect().await?;
            return inspect_cluster(&connection, name, args.output).await;
        }
    };
    let name = &name;
    let connection = args.kube.connect().await?;
    let namespace = connection.namespace.clone();
    let (client, note) = match &args.secret {
        Some(_) => (None, None),
        None => read_client(&connection, name).await?,
    };
    let secret_name = match (&args.secret, &client) {
        (Some(secret), _) => secret.clone(),
        (None, Some(client)) => client
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .unwrap_or_else(|| target_name(client)),
        (None, None) => format!("{name}-token"),
    };
    let secret = read_secret(&connection, name, &secret_name).await?;
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let Some(token) = data
        .get("access_token")
        .map(|v| Sensitive::new(String::from_utf8_lossy(&v.0).into_owned()))
    else {
        return Err(CliError::not_found(format!(
            "Secret {namespace}/{secret_name} has no access_token key"
        )));
    };
    let view = View {
        namespace,
        client,
        client_name: name.clone(),
        secret: secret_name,
        token_type: text("token_type"),
        scope: text("scope"),
        issued_at: secret.annotations().get(ISSUED_AT_ANNOTATION).cloned(),
        expires_at: text("expires_at"),
        bytes: token.expose().len(),
        shape: shape(token.expose()),
        note,
    };
    print_view(&view, args.output, &token);
    Ok(0)
}

/// Prints the view (and, as text, its warnings), scrubbed of the token.
fn print_view(view: &View, format: OutputFormat, token: &Sensitive) {
    let now = Timestamp::now();
    let output = match format {
        OutputFormat::Text => text_of(view, now),
        OutputFormat::Json => format!("{:#}\n", json_of(view, now)),
    };
    // A second guard: nothing printed may hold the token or its signature.
    out!("{}", scrub_token(&output, token.expose()));
    if format == OutputFormat::Text {
        for w in warnings(view, now) {
            errln!("warning: {}", scrub_token(&w, token.expose()));
        }
    }
}

/// The OAuthClient `name`; when reading it is forbidden, none and a note that the Secret's
/// default name is read instead.
async fn read_client(
    connection: &Connection,
    name: &str,
) -> Result<(Option<OAuthClient>, Option<String>), CliError> {
    let namespace = &connection.namespace;
    let name = checked_name("OAuthClient", name)?;
    let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), namespace);
    match api.get(name).await {
        Ok(client) => Ok((Some(client), None)),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok((
            None,
            Some(format!(
                "cannot read OAuthClient {namespace}/{name} (forbidden); reading Secret {name}-token (pass --secret if spec.target.name differs)"
            )),
        )),
        Err(e) => Err(CliError::api(
            e,
            &format!("OAuthClient {namespace}/{name}"),
            &connection.url,
        )),
    }
}

/// The managed Secret; a missing one says that no token has been stored yet.
async fn read_secret(
    connection: &Connection,
    client_name: &str,
    secret_name: &str,
) -> Result<Secret, CliError> {
    let namespace = &connection.namespace;
    let secret_name = checked_name("Secret", secret_name)?;
    let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), namespace);
    secrets.get(secret_name).await.map_err(|e| {
        let mut error = CliError::api(
            e,
            &format!("Secret {namespace}/{secret_name}"),
            &connection.url,
        );
        if error.code == super::kube_config::EXIT_NOT_OK {
            error.message.push_str(&format!(
                ": no token has been stored yet (see: status {client_name} -n {namespace})"
            ));
        }
        error
    })
}

// === ClusterOAuthClients ===

/// A copy of a ClusterOAuthClient's token as `inspect` shows it: never its values.
struct TokenCopy {
    namespace: String,
    name: String,
    /// Whether the ClusterOAuthClient is its controller (ownerReference).
    controlled: bool,
    /// Its `issued-at` annotation.
    issued_at: Option<String>,
    /// Its keys and their sizes in bytes.
    keys: BTreeMap<String, usize>,
}

impl TokenCopy {
    /// Whether it holds the token of the ClusterOAuthClient's `status.issuedAt`.
    fn current(&self, issued_at: Option<&str>) -> bool {
        let issued = parse_time(issued_at);
        issued.is_some() && parse_time(self.issued_at.as_deref()) == issued
    }
}

/// `inspect clusteroauthclient/NAME`: its status and its copies, scrubbed of every token the
/// copies hold.
async fn inspect_cluster(
    connection: &Connection,
    name: &str,
    format: OutputFormat,
) -> Result<u8, CliError> {
    let cluster = cluster::get(connection, name).await?;
    let view = cluster::as_client(&cluster);
    let selector = format!("{CLUSTER_CLIENT_LABEL}={}", client_label_value(name));
    let secrets: Api<Secret> = Api::all(connection.client.clone());
    let listed = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            CliError::api(e, &format!("Secrets labelled {selector}"), &connection.url).message
        });
    let mut tokens: Vec<Sensitive> = Vec::new();
    let copies = listed.map(|list| {
        let mut copies: Vec<TokenCopy> = list
            .items
            .iter()
            .map(|secret| {
                let data = secret.data.clone().unwrap_or_default();
                let controlled = controlled_by(
                    secret
                        .metadata
                        .owner_references
                        .as_deref()
                        .unwrap_or_default(),
                    &view,
                );
                // Only the copies the ClusterOAuthClient controls give tokens to scrub for: a
                // labelled Secret of a tenant's could otherwise redact (or withhold) any text.
                let token = data
                    .get("access_token")
                    .filter(|_| controlled)
                    .map(|v| Sensitive::new(String::from_utf8_lossy(&v.0).into_owned()));
                // The copies normally hold one token: each is scrubbed for once.
                if let Some(token) =
                    token.filter(|t| tokens.iter().all(|k| k.expose() != t.expose()))
                {
                    tokens.push(token);
                }
                TokenCopy {
                    namespace: secret.namespace().unwrap_or_default(),
                    name: secret.name_any(),
                    controlled,
                    issued_at: secret.annotations().get(ISSUED_AT_ANNOTATION).cloned(),
                    keys: data.iter().map(|(k, v)| (k.clone(), v.0.len())).collect(),
                }
            })
            .collect();
        copies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        copies
    });
    let now = Timestamp::now();
    let issued_at = view.status.as_ref().and_then(|s| s.issued_at.as_deref());
    let output = match format {
        OutputFormat::Text => {
            let mut text = super::status::cluster_text(&cluster, now);
            text.push_str(&copies_text(&selector, &copies, issued_at));
            text
        }
        OutputFormat::Json => {
            let copies = match &copies {
                Ok(copies) => json!(copies
                    .iter()
                    .map(|c| json!({
                        "namespace": c.namespace,
                        "name": c.name,
                        "controlledByThisClient": c.controlled,
                        "current": c.current(issued_at),
                        "issuedAt": c.issued_at,
                        "keys": c.keys.iter().map(|(k, n)| json!({"key": k, "bytes": n})).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()),
                Err(why) => json!({"error": why}),
            };
            format!(
                "{:#}\n",
                json!({
                    "kind": "ClusterOAuthClient",
                    "name": cluster.name_any(),
                    "status": cluster.status,
                    "copies": copies,
                })
            )
        }
    };
    // A second guard: nothing printed may hold a copy's token or its signature.
    let output = tokens
        .iter()
        .fold(output, |text, token| scrub_token(&text, token.expose()));
    out!("{output}");
    Ok(0)
}

/// The copies as a table: namespace, name, whether controlled and current, keys and sizes.
fn copies_text(
    selector: &str,
    copies: &Result<Vec<TokenCopy>, String>,
    issued_at: Option<&str>,
) -> String {
    let copies = match copies {
        Err(why) => return format!("\nCopies: cannot be listed: {}\n", printable(why)),
        Ok(copies) if copies.is_empty() => {
            return format!("\nCopies: no Secret is labelled {selector}\n");
        }
        Ok(copies) => copies,
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut table = Table::new(&["NAMESPACE", "NAME", "CONTROLLED", "CURRENT", "KEYS (BYTES)"]);
    for c in copies {
        let keys: Vec<String> = c.keys.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        table.row(vec![
            c.namespace.clone(),
            c.name.clone(),
            yes_no(c.controlled),
            yes_no(c.current(issued_at)),
            keys.join(", "),
        ]);
    }
    format!(
        "\nCopies (Secrets labelled {selector}; values not shown):\n{}",
        table.render("  ")
    )
}

/// Removes the token and its signature segment from `text`, in every form the operator's
/// scrubber knows (each when 8 characters or more); text too costly to scrub is withheld.
pub(super) fn scrub_token(text: &str, token: &str) -> String {
    let signature = token.rsplit('.').next().unwrap_or_default();
    let none = Scrubber::none();
    let with_token = none.with_token(token);
    let scrubber = with_token.with_token(signature);
    scrubber
        .scrub(text)
        .unwrap_or_else(|| "[output withheld: it could not be checked for the token]\n".to_owned())
}

fn unix_time(value: &Value) -> Option<Timestamp> {
    let secs = value.as_f64()?;
    Timestamp::from_second(secs.floor() as i64).ok()
}

/// One header parameter or claim as text; times also as RFC 3339 and relative.
fn value_text(name: &str, value: &Value, now: Timestamp) -> String {
    if TIME_CLAIMS.contains(&name)
        && let Some(t) = unix_time(value)
    {
        return format!("{value} ({}, {})", rfc3339(t), relative(t, now));
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    truncate(&printable(&text), VALUE_WIDTH)
}

/// The entries of a header or claims object: `known` first, then the rest by name.
fn ordered<'a>(map: &'a Map<String, Value>, known: &[&str]) -> Vec<(&'a String, &'a Value)> {
    let mut out: Vec<(&String, &Value)> =
        known.iter().filter_map(|k| map.get_key_value(*k)).collect();
    let mut rest: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .collect();
    rest.sort_by_key(|(k, _)| *k);
    out.extend(rest);
    out
}

fn entries_text(map: &Map<String, Value>, known: &[&str], now: Timestamp) -> String {
    let width = map.keys().map(|k| k.chars().count()).max().unwrap_or(0) + 1;
    ordered(map, known)
        .into_iter()
        .map(|(k, v)| {
            format!(
                "  {:<width$}  {}\n",
                format!("{}:", printable(k)),
                value_text(k, v, now)
            )
        })
        .collect()
}

fn status_of(view: &View) -> Option<&crate::api::crd::OAuthClientStatus> {
    view.client.as_ref().and_then(|c| c.status.as_ref())
}

/// The text view.
pub(super) fn text_of(view: &View, now: Timestamp) -> String {
    let mut out = String::new();
    let ns = &view.namespace;
    if let Some(note) = &view.note {
        out.push_str(&format!("note: {}\n", printable(note)));
    }
    out.push_str(&format!(
        "Secret {ns}/{} of OAuthClient {ns}/{}\n",
        view.secret, view.client_name
    ));
    let mut fields: Vec<(&str, String)> = vec![
        (
            "token_type",
            view.token_type.clone().unwrap_or_else(|| "-".into()),
        ),
        ("scope", view.scope.clone().unwrap_or_else(|| "-".into())),
        ("issued", when_text(view.issued_at.as_deref(), now)),
        ("expires_at", when_text(view.expires_at.as_deref(), now)),
    ];
    if let Some(status) = status_of(view) {
        fields.push((
            "next refresh",
            when_text(status.next_refresh_at.as_deref(), now),
        ));
    }
    for (label, value) in fields {
        out.push_str(&format!(
            "  {:<14} {}\n",
            format!("{label}:"),
            printable(&value)
        ));
    }
    out.push_str(&shape_text(view, now));
    out
}

/// What the access token is: a JWT's header and claims, a JWE's header, or an opaque token.
fn shape_text(view: &View, now: Timestamp) -> String {
    let mut out = String::new();
    match &view.shape {
        TokenShape::Jwt { header, claims } => {
            out.push_str(&format!(
                "Access token: JWT, {} bytes (decoded; signature not verified)\n",
                view.bytes
            ));
            out.push_str("Header:\n");
            out.push_str(&entries_text(header, &KNOWN_HEADER, now));
            out.push_str("Claims:\n");
            if claims.is_empty() {
                out.push_str("  none\n");
            }
            out.push_str(&entries_text(claims, &KNOWN_CLAIMS, now));
        }
        TokenShape::Jwe { header } => {
            out.push_str(&format!(
                "Access token: encrypted JWT (JWE), {} bytes: its claims are not readable\n",
                view.bytes
            ));
            out.push_str("Header:\n");
            out.push_str(&entries_text(header, &KNOWN_HEADER, now));
        }
        TokenShape::Opaque => {
            out.push_str(&format!(
                "Access token: opaque token (not a JWT): {} bytes\n",
                view.bytes
            ));
        }
    }
    out
}

/// The JSON view.
pub(super) fn json_of(view: &View, now: Timestamp) -> Value {
    let times = |map: &Map<String, Value>| -> Map<String, Value> {
        TIME_CLAIMS
            .iter()
            .filter_map(|k| Some(((*k).to_owned(), json!(rfc3339(unix_time(map.get(*k)?)?)))))
            .collect()
    };
    let token = match &view.shape {
        TokenShape::Jwt { header, claims } => json!({
            "format": "JWT",
            "bytes": view.bytes,
            "signatureVerified": false,
            "header": header,
            "claims": claims,
            "claimTimes": times(claims),
        }),
        TokenShape::Jwe { header } => json!({
            "format": "JWE",
            "bytes": view.bytes,
            "header": header,
        }),
        TokenShape::Opaque => json!({"format": "opaque", "bytes": view.bytes}),
    };
    json!({
        "namespace": view.namespace,
        "name": view.client_name,
        "secretName": view.secret,
        "tokenType": view.token_type,
        "scope": view.scope,
        "issuedAt": view.issued_at,
        "expiresAt": view.expires_at,
        "nextRefreshAt": status_of(view).and_then(|s| s.next_refresh_at.clone()),
        "token": token,
        "note": view.note,
        "warnings": warnings(view, now),
    })
}

/// What deserves attention: an expired or not-yet-valid token, an audience or scope other than
/// the spec asks for, a refresh margin too short for mounted Secrets.
pub(super) fn warnings(view: &View, now: Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = parse_time(view.expires_at.as_deref())
        && t <= now
    {
        out.push(format!("the token expired at {}", when(t, now)));
    }
    let claims = match &view.shape {
        TokenShape::Jwt { claims, .. } => Some(claims),
        _ => None,
    };
    if let Some(t) = claims.and_then(|c| c.get("nbf")).and_then(unix_time)
        && t > now
    {
        out.push(format!("the token is not valid before {}", when(t, now)));
    }
    let spec = view.client.as_ref().map(|c| &c.spec);
    out.extend(audience_warning(spec, claims, now));
    out.extend(scope_warning(spec, view.scope.as_deref(), claims));
    if let Some(margin) = status_of(view).and_then(short_margin) {
        out.push(margin_warning(&view.namespace, &view.client_name, margin));
    }
    out
}

/// A warning when the token's `aud` claim does not include `spec.audience`.
fn audience_warning(
    spec: Option<&OAuthClientSpec>,
    claims: Option<&Map<String, Value>>,
    now: Timestamp,
) -> Option<String> {
    let want = spec?.audience.as_ref()?;
    let aud = claims?.get("aud")?;
    let has = match aud {
        Value::String(a) => a == want,
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some(want)),
        _ => false,
    };
    (!has).then(|| {
        format!(
            "the token's aud ({}) does not include spec.audience ({}): resource servers will refuse it",
            value_text("aud", aud, now),
            printable(want)
        )
    })
}

/// A warning naming the requested scopes that were not granted (by the Secret's `scope`, else
/// the token's `scope` / `scp` claim).
fn scope_warning(
    spec: Option<&OAuthClientSpec>,
    scope: Option<&str>,
    claims: Option<&Map<String, Value>>,
) -> Option<String> {
    let wanted = spec?.scopes.as_ref()?;
    let granted: Vec<String> = match scope {
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
        None => match claims?.get("scope").or_else(|| claims?.get("scp"))? {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => return None,
        },
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !granted.iter().any(|g| g == *w))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "requested scope not granted: {}",
            printable(&missing.join(" "))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    const SIGNATURE: &str = "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1iZS1wcmludGVk";

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.{SIGNATURE}",
            b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})),
            b64(&claims)
        )
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn view(token: &str) -> View {
        View {
            namespace: "ns".into(),
            client: None,
            client_name: "a".into(),
            secret: "a-token".into(),
            token_type: Some("Bearer".into()),
            scope: Some("read".into()),
            issued_at: Some(rfc3339(at(0))),
            expires_at: Some(rfc3339(at(3600))),
            bytes: token.len(),
            shape: shape(token),
            note: None,
        }
    }

    #[test]
    fn a_jwt_shows_header_and_claims_known_first_with_times() {
        let token = jwt(json!({
            "zzz": "last", "exp": 1_700_003_600, "iss": "https://idp.example.com/",
            "aud": ["api://x", "api://y"], "iat": 1_700_000_000, "scope": "read"
        }));
        let text = text_of(&view(&token), at(60));
        assert!(!text.contains(SIGNATURE));
        assert!(!text.contains(&token));
        assert!(
            text.starts_with(
                "Secret ns/a-token of OAuthClient ns/a\n  token_type:    Bearer\n  scope:         read\n  issued:        2023-11-14T22:13:20Z (60s ago)\n  expires_at:    2023-11-14T23:13:20Z (in 59m)\n"
            ),
            "{text}"
        );
        assert!(text.contains("Access token: JWT, "), "{text}");
        assert!(text.contains("signature not verified"), "{text}");
        let claims = &text[text.find("Claims:").unwrap()..];
        let order: Vec<&str> = claims
            .lines()
            .skip(1)
            .map(|l| l.trim().split(':').next().unwrap())
            .collect();
        assert_eq!(order, ["iss", "aud", "scope", "iat", "exp", "zzz"]);
        assert!(
            claims.contains("exp:    1700003600 (2023-11-14T23:13:20Z, in 59m)"),
            "{claims}"
        );
        assert!(
            claims.contains(r#"aud:    ["api://x","api://y"]"#),
            "{claims}"
        );
        assert!(
            text.contains("  alg:  RS256\n  typ:  JWT\n  kid:  key-1\n"),
            "{text}"
        );
    }

    #[test]
    fn opaque_and_encrypted_tokens_say_so() {
        let text = text_of(&view("emulated-token-1-abcdef"), at(0));
        assert!(
            text.contains("Access token: opaque token (not a JWT): 23 bytes"),
            "{text}"
        );
        // Three segments that are not JSON: not a JWT either.
        assert_eq!(shape("abc.def.ghi"), TokenShape::Opaque);
        let jwe = format!(
            "{}.k.iv.ct.tag",
            b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM"}))
        );
        assert!(matches!(shape(&jwe), TokenShape::Jwe { .. }));
        assert!(text_of(&view(&jwe), at(0)).contains("encrypted JWT (JWE)"));
    }

    #[test]
    fn warnings_for_expiry_audience_scope_and_not_before() {
        let token = jwt(json!({"aud": "api://other", "nbf": 1_700_005_000, "scope": "read"}));
        let mut v = view(&token);
        let spec: crate::api::crd::OAuthClientSpec = serde_json::from_value(json!({
            "credentialsSecretRef": {"name": "c"}, "audience": "api://mine", "scopes": ["read", "write"]
        }))
        .unwrap();
        v.client = Some(OAuthClient::new("a", spec));
        let w = warnings(&v, at(4000));
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("the token expired at 2023-11-14T23:13:20Z (6m40s ago)"));
        assert!(w[1].starts_with("the token is not valid before"));
        assert!(w[2].contains("does not include spec.audience (api://mine)"));
        assert_eq!(w[3], "requested scope not granted: write");
        assert!(
            warnings(&view(&token), at(10)).len() == 1,
            "no spec: only nbf"
        );
    }

    #[test]
    fn the_output_is_scrubbed_of_the_token_and_its_signature() {
        let token = jwt(json!({"sub": "x"}));
        let leaked = format!("a {token} b {SIGNATURE} c");
        let clean = scrub_token(&leaked, &token);
        assert!(
            !clean.contains(SIGNATURE) && !clean.contains(&token),
            "{clean}"
        );
        let json = json_of(&view(&token), at(0)).to_string();
        assert!(!json.contains(SIGNATURE), "{json}");
        assert!(json.contains(r#""signatureVerified":false"#));
    }
}
