//! `oauth-token-operator status [NAME] [-n NS | -A]`: which clients are unhealthy and why.
//!
//! Without a NAME, one row per OAuthClient (not-Ready first); with a NAME, its conditions with
//! their age, every status field, the managed Secret's keys and sizes (never values) and its
//! recent events, deduplicated. Exit 1 when any listed client is not Ready.
//!
//! `status clusteroauthclient/NAME` (or `--cluster NAME`) is the same detail view of a
//! ClusterOAuthClient (its conditions include `Distributed`) plus its targets: how many
//! namespaces are selected and written, and the conflicting ones. `status --cluster`
//! lists every ClusterOAuthClient.

use crate::cli::terminal::{errln, out, outln};
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::cluster::{self, Named};
use super::kube_config::{CliError, Connection, EXIT_NOT_OK, KubeArgs, checked_name, list_error};
use super::table::{
    Table, margin_warning, parse_time, printable, relative, short_margin, truncate, when_text,
};
use crate::api::cluster_crd::{ClusterOAuthClient, Targets};
use crate::api::conditions::{self, DEGRADED, READY};
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::api::keys::REFRESH_REQUESTED_ANNOTATION;
use crate::output::secret::{controlled_by, target_name};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One OAuthClient: show its detail view instead of the table. clusteroauthclient/NAME
    /// (also clusteroauthclients/NAME, coac/NAME) shows a ClusterOAuthClient.
    pub name: Option<String>,

    /// NAME is a ClusterOAuthClient; without NAME, list the ClusterOAuthClients.
    #[arg(long = "cluster", alias = "cluster-client")]
    pub cluster_client: bool,

    /// List the OAuthClients of all namespaces.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    pub all_namespaces: bool,

    /// Output format: the table (default), the table with the managed Secret's name and full
    /// messages (wide), or JSON for scripts.
    #[arg(short, long, value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,

    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Aligned columns.
    Table,
    /// Aligned columns with the managed Secret and untruncated messages.
    Wide,
    /// One JSON object.
    Json,
}

/// Longest MESSAGE in the table (`-o wide` prints it whole).
const MESSAGE_WIDTH: usize = 80;

/// Most event groups the detail view shows.
const MAX_EVENTS: usize = 10;

/// Runs `status`.
pub(super) async fn run(args: StatusArgs) -> Result<u8, CliError> {
    // The name is checked before connecting: a name that is no name never reaches a request.
    let named = match &args.name {
        Some(name) => Some(cluster::named(name, args.cluster_client)?),
        None => None,
    };
    let connection = args.kube.connect().await?;
    match named {
        Some(Named::Client(name)) => detail(&connection, name, args.output).await,
        Some(Named::Cluster(name)) => cluster_detail(&connection, name, args.output).await,
        None if args.cluster_client => cluster_list(&connection, args.output).await,
        None => list(&connection, args.all_namespaces, args.output).await,
    }
}

// === the table ===

/// What the table shows of one OAuthClient.
pub(super) struct Summary {
    pub namespace: String,
    pub name: String,
    pub provider: &'static str,
    /// `True`, `False` or `Unknown` (no status yet).
    pub ready: String,
    pub reason: String,
    pub message: String,
}

impl Summary {
    pub(super) fn of(client: &OAuthClient) -> Self {
        let status = client.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, READY);
        Summary {
            namespace: client.namespace().unwrap_or_default(),
            name: client.name_any(),
            provider: client.spec.provider.as_str(),
            ready: ready.map_or("Unknown", |c| c.status.as_str()).to_owned(),
            reason: ready.map_or_else(String::new, |c| c.reason.clone()),
            message: ready.map_or_else(
                || "no status yet: is the operator running and watching this namespace?".into(),
                |c| c.message.clone(),
            ),
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready == "True"
    }
}

/// Lists OAuthClients in the connection's namespace, or in all with `all`.
pub(super) async fn list_clients(
    connection: &Connection,
    all: bool,
) -> Result<Vec<OAuthClient>, CliError> {
    let (api, scope): (Api<OAuthClient>, String) = if all {
        (
            Api::all(connection.client.clone()),
            "in all namespaces".into(),
        )
    } else {
        (
            Api::namespaced(connection.client.clone(), &connection.namespace),
            format!("in namespace {}", connection.namespace),
        )
    };
    let mut clients = api
        .list(&ListParams::default())
        .await
        .map_err(|e| list_error(e, &scope, &connection.url))?
        .items;
    clients.sort_by_key(|c| (c.namespace(), c.name_any()));
    Ok(clients)
}

async fn list(connection: &Connection, all: bool, format: StatusFormat) -> Result<u8, CliError> {
    let mut clients = list_clients(connection, all).await?;
    // Not Ready first, then by namespace and name.
    clients.sort_by_key(|c| (Summary::of(c).is_ready(), c.namespace(), c.name_any()));
    let now = Timestamp::now();
    let all_ready = clients.iter().all(|c| Summary::of(c).is_ready());
    let warnings: Vec<String> = clients.iter().filter_map(warning).collect();
    match format {
        StatusFormat::Json => {
            let items: Vec<Value> = clients.iter().map(|c| list_item(c, now)).collect();
            outln!("{:#}", json!({"items": items, "allReady": all_ready}));
        }
        StatusFormat::Table | StatusFormat::Wide => {
            if clients.is_empty() {
                let scope = if all {
                    "in any namespace".to_owned()
                } else {
                    format!("in namespace {}", connection.namespace)
                };
                errln!("No OAuthClients found {scope}.");
            } else {
                out!(
                    "{}",
                    table(&clients, format == StatusFormat::Wide, now).render("")
                );
            }
            for w in &warnings {
                errln!("warning: {w}");
            }
        }
    }
    Ok(if all_ready { 0 } else { EXIT_NOT_OK })
}

fn table(clients: &[OAuthClient], wide: bool, now: Timestamp) -> Table {
    let mut headers = vec![
        "NAMESPACE",
        "NAME",
        "PROVIDER",
        "READY",
        "REASON",
        "EXPIRES",
        "NEXT-REFRESH",
        "FAILURES",
    ];
    if wide {
        headers.push("SECRET");
    }
    headers.push("MESSAGE");
    let mut table = Table::new(&headers);
    for client in clients {
        let s = Summary::of(client);
        let status = client.status.clone().unwrap_or_default();
        let time = |t: Option<&str>| match parse_time(t) {
            Some(t) => relative(t, now),
            None => "-".into(),
        };
        let mut row = vec![
            s.namespace,
            s.name,
            s.provider.to_owned(),
            s.ready,
            or_dash(&s.reason),
            time(status.expires_at.as_deref()),
            time(status.next_refresh_at.as_deref()),
            status
                .consecutive_failures
                .map_or_else(|| "-".into(), |n| n.to_string()),
        ];
        if wide {
            row.push(
                status
                    .secret_name
                    .clone()
                    .unwrap_or_else(|| target_name(client)),
            );
        }
        let message = printable(&s.message);
        row.push(if wide {
            message
        } else {
            truncate(&message, MESSAGE_WIDTH)
        });
        table.row(row);
    }
    table
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_owned()
    }
}

/// The margin warning of a client, if it has one.
fn warning(client: &OAuthClient) -> Option<String> {
    let margin = short_margin(client.status.as_ref()?)?;
    Some(margin_warning(
        &client.namespace().unwrap_or_default(),
        &client.name_any(),
        margin,
    ))
}

fn list_item(client: &OAuthClient, now: Timestamp) -> Value {
    let s = Summary::of(client);
    let status = client.status.clone().unwrap_or_default();
    let expires_in =
        parse_time(status.expires_at.as_deref()).map(|t| t.duration_since(now).as_secs());
    json!({
        "namespace": s.namespace,
        "name": s.name,
        "provider": s.provider,
        "ready": s.ready,
        "reason": s.reason,
        "message": s.message,
        "secretName": status.secret_name.clone().unwrap_or_else(|| target_name(client)),
        "issuedAt": status.issued_at,
        "expiresAt": status.expires_at,
        "expiresInSeconds": expires_in,
        "nextRefreshAt": status.next_refresh_at,
        "consecutiveFailures": status.consecutive_failures,
        "warnings": warning(client).into_iter().collect::<Vec<_>>(),
    })
}

// === the detail view ===

/// The managed Secret as the detail view shows it.
enum SecretView {
    /// Its keys and value sizes in bytes, and whether this OAuthClient controls it.
    Found {
        type_: String,
        keys: BTreeMap<String, usize>,
        controlled: bool,
    },
    Missing,
    Unreadable(String),
}

/// One line of the events table: identical events folded together.
struct EventGroup {
    type_: String,
    reason: String,
    note: String,
    count: i64,
    last: Option<Timestamp>,
}

async fn detail(connection: &Connection, name: &str, format: StatusFormat) -> Result<u8, CliError> {
    let name = checked_name("OAuthClient", name)?;
    let namespace = &connection.namespace;
    let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), namespace);
    let client = api.get(name).await.map_err(|e| {
        CliError::api(
            e,
            &format!("OAuthClient {namespace}/{name}"),
            &connection.url,
        )
    })?;
    let secret_name = client
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .unwrap_or_else(|| target_name(&client));
    let secret = secret_view(connection, &client, &secret_name).await;
    let events = events(connection, &client).await;
    let now = Timestamp::now();
    let ready = Summary::of(&client).is_ready();
    let warnings: Vec<String> = warning(&client).into_iter().collect();
    match format {
        StatusFormat::Json => {
            outln!(
                "{:#}",
                detail_json(&client, &secret_name, &secret, &events, &warnings)
            );
        }
        StatusFormat::Table | StatusFormat::Wide => {
            out!(
                "{}",
                detail_text(&client, &secret_name, &secret, &events, now)
            );
            for w in &warnings {
                errln!("warning: {w}");
            }
        }
    }
    Ok(if ready { 0 } else { EXIT_NOT_OK })
}

// === ClusterOAuthClients ===

/// The READY, REASON and MESSAGE of a ClusterOAuthClient, as of an OAuthClient.
fn cluster_summary(cluster: &ClusterOAuthClient) -> Summary {
    Summary::of(&cluster::as_client(cluster))
}

/// `status.targets.summary` (`written/selected`), or `-`.
fn targets_summary(cluster: &ClusterOAuthClient) -> String {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.targets.as_ref())
        .map_or_else(|| "-".into(), |t| printable(&t.summary))
}

/// The margin warning of a ClusterOAuthClient, if it has one.
fn cluster_warning(cluster: &ClusterOAuthClient) -> Option<String> {
    let margin = short_margin(&cluster.status.as_ref()?.client)?;
    Some(margin_warning(
        "clusteroauthclient",
        &cluster.name_any(),
        margin,
    ))
}

/// `status --cluster`: one row per ClusterOAuthClient, not-Ready first.
async fn cluster_list(connection: &Connection, format: StatusFormat) -> Result<u8, CliError> {
    let mut clients = cluster::list(connection).await?;
    clients.sort_by_key(|c| (cluster_summary(c).is_ready(), c.name_any()));
    let now = Timestamp::now();
    let all_ready = clients.iter().all(|c| cluster_summary(c).is_ready());
    let warnings: Vec<String> = clients.iter().filter_map(cluster_warning).collect();
    match format {
        StatusFormat::Json => {
            let items: Vec<Value> = clients
                .iter()
                .map(|c| {
                    let s = cluster_summary(c);
                    json!({
                        "name": s.name,
                        "provider": s.provider,
                        "ready": s.ready,
                        "reason": s.reason,
                        "message": s.message,
                        "targets": c.status.as_ref().and_then(|s| s.targets.clone()),
                        "expiresAt": c.status.as_ref().and_then(|s| s.client.expires_at.clone()),
                        "warnings": cluster_warning(c).into_iter().collect::<Vec<_>>(),
                    })
                })
                .collect();
            outln!("{:#}", json!({"items": items, "allReady": all_ready}));
        }
        StatusFormat::Table | StatusFormat::Wide => {
            if clients.is_empty() {
                errln!("No ClusterOAuthClients found.");
            } else {
                let mut table =
                    Table::new(&["NAME", "READY", "REASON", "TARGETS", "EXPIRES", "MESSAGE"]);
                for c in &clients {
                    let s = cluster_summary(c);
                    let expires = c
                        .status
                        .as_ref()
                        .and_then(|s| s.client.expires_at.as_deref());
                    let message = printable(&s.message);
                    table.row(vec![
                        s.name,
                        s.ready,
                        or_dash(&s.reason),
                        targets_summary(c),
                        parse_time(expires).map_or_else(|| "-".into(), |t| relative(t, now)),
                        if format == StatusFormat::Wide {
                            message
                        } else {
                            truncate(&message, MESSAGE_WIDTH)
                        },
                    ]);
                }
                out!("{}", table.render(""));
            }
            for w in &warnings {
                errln!("warning: {w}");
            }
        }
    }
    Ok(if all_ready { 0 } else { EXIT_NOT_OK })
}

/// `status clusteroauthclient/NAME`: an OAuthClient's detail view of its status (the
/// conditions include Distributed) and its targets. The token's events are those of the
/// OAuthClient `cluster-NAME` in the cluster resource namespace.
async fn cluster_detail(
    connection: &Connection,
    name: &str,
    format: StatusFormat,
) -> Result<u8, CliError> {
    let cluster = cluster::get(connection, name).await?;
    let view = cluster::as_client(&cluster);
    let now = Timestamp::now();
    let ready = Summary::of(&view).is_ready();
    let warnings: Vec<String> = cluster_warning(&cluster).into_iter().collect();
    match format {
        StatusFormat::Json => {
            let s = Summary::of(&view);
            outln!(
                "{:#}",
                json!({
                    "kind": "ClusterOAuthClient",
                    "name": s.name,
                    "provider": s.provider,
                    "tokenUrl": token_url(&view),
                    "clientAuth": client_auth(&view),
                    "ready": s.ready,
                    "reason": s.reason,
                    "message": s.message,
                    "refreshRequestedAt": view.annotations().get(REFRESH_REQUESTED_ANNOTATION),
                    "generation": view.metadata.generation,
                    "status": cluster.status,
                    "warnings": warnings,
                })
            );
        }
        StatusFormat::Table | StatusFormat::Wide => {
            out!("{}", cluster_text(&cluster, now));
            for w in &warnings {
                errln!("warning: {w}");
            }
        }
    }
    Ok(if ready { 0 } else { EXIT_NOT_OK })
}

/// The detail view of a ClusterOAuthClient (`status` and `inspect` print it): its fields, its
/// conditions and status as an OAuthClient's, and its targets.
pub(super) fn cluster_text(cluster: &ClusterOAuthClient, now: Timestamp) -> String {
    let view = cluster::as_client(cluster);
    let mut text = header_text(&view, now);
    match &view.status {
        None => text.push_str(
            "\nStatus: none yet. Is the operator running with --enable-cluster-clients?\n",
        ),
        Some(status) => {
            text.push_str(&conditions_text(status, now));
            text.push_str(&status_fields_text(status, view.metadata.generation, now));
        }
    }
    text.push_str(&targets_text(
        cluster.status.as_ref().and_then(|s| s.targets.as_ref()),
    ));
    text
}

/// The Targets line: selected, written and the conflicting namespaces.
fn targets_text(targets: Option<&Targets>) -> String {
    let Some(t) = targets else {
        return "\nTargets:             none yet\n".into();
    };
    let conflicts = if t.conflicts.is_empty() {
        "none".to_owned()
    } else {
        t.conflicts.join(", ")
    };
    format!(
        "\nTargets:             selected {}, written {}; conflicts: {}\n",
        t.selected,
        t.written,
        printable(&conflicts)
    )
}

/// What `status NAME` shows of the managed Secret: its type, key sizes and owner, never data.
async fn secret_view(
    connection: &Connection,
    client: &OAuthClient,
    secret_name: &str,
) -> SecretView {
    let namespace = &connection.namespace;
    if let Err(e) = checked_name("Secret", secret_name) {
        return SecretView::Unreadable(e.message);
    }
    let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), namespace);
    match secrets.get_opt(secret_name).await {
        Ok(Some(secret)) => SecretView::Found {
            type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
            keys: secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.len()))
                .collect(),
            controlled: controlled_by(
                secret
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default(),
                client,
            ),
        },
        Ok(None) => SecretView::Missing,
        Err(e) => SecretView::Unreadable(
            CliError::api(
                e,
                &format!("Secret {namespace}/{secret_name}"),
                &connection.url,
            )
            .message,
        ),
    }
}

/// The events about `client` (events.k8s.io/v1, `regarding` this object), folded by type,
/// reason and note, oldest first; an error says why they could not be read.
async fn events(connection: &Connection, client: &OAuthClient) -> Result<Vec<EventGroup>, String> {
    let namespace = &connection.namespace;
    let api: Api<Event> = Api::namespaced(connection.client.clone(), namespace);
    let selector = format!(
        "regarding.kind=OAuthClient,regarding.name={}",
        client.name_any()
    );
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| CliError::api(e, "events", &connection.url).message)?;
    let uid = client.uid();
    let mut groups: Vec<EventGroup> = Vec::new();
    for event in list.items {
        let regarding = event.regarding.clone().unwrap_or_default();
        // Events of an earlier object of the same name are not this one's.
        if regarding.uid.is_some() && uid.is_some() && regarding.uid != uid {
            continue;
        }
        let type_ = event.type_.clone().unwrap_or_default();
        let reason = event.reason.clone().unwrap_or_default();
        let note = event.note.clone().unwrap_or_default();
        let count = event
            .series
            .as_ref()
            .map(|s| i64::from(s.count))
            .or(event.deprecated_count.map(i64::from))
            .unwrap_or(1)
            .max(1);
        let last = event
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .or(event.event_time.as_ref().map(|t| t.0))
            .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
            .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        match groups
            .iter_mut()
            .find(|g| g.type_ == type_ && g.reason == reason && g.note == note)
        {
            Some(group) => {
                group.count += count;
                group.last = group.last.max(last);
            }
            None => groups.push(EventGroup {
                type_,
                reason,
                note,
                count,
                last,
            }),
        }
    }
    groups.sort_by_key(|g| g.last);
    let skip = groups.len().saturating_sub(MAX_EVENTS);
    Ok(groups.into_iter().skip(skip).collect())
}

/// A token URL without userinfo or query (either could hold a credential).
fn shown_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => {
            let had_query = url.query().is_some();
            let shown = crate::base::url::shown(&url);
            format!("{shown}{}", if had_query { "?..." } else { "" })
        }
        Err(_) => "(unparseable)".into(),
    }
}

fn token_url(client: &OAuthClient) -> String {
    let preset = crate::spec::presets::preset(client.spec.provider).token_url;
    match (&client.spec.token_url, preset) {
        (Some(url), _) => shown_url(url),
        (None, Some(url)) => format!("{url} (preset)"),
        (None, None) => "-".into(),
    }
}

/// The client authentication method, and whether the preset chose it.
fn client_auth(client: &OAuthClient) -> String {
    let method = crate::spec::client_auth_method(&client.spec).as_str();
    if client.spec.client_auth_method.is_some() {
        method.to_owned()
    } else {
        format!("{method} (preset {})", client.spec.provider.as_str())
    }
}

/// The objects the client reads, as `(label, what)`: the credentials Secret and the keys the
/// method uses, or the ServiceAccount and its audience; the CA bundle's object and key.
fn references(client: &OAuthClient) -> Vec<(&'static str, String)> {
    use crate::api::crd::ClientAuthMethod as M;
    let spec = &client.spec;
    let method = crate::spec::client_auth_method(spec);
    let mut found = Vec::new();
    match (
        method,
        &spec.service_account_token,
        &spec.credentials_secret_ref,
    ) {
        (M::ServiceAccountToken, Some(sa), _) => found.push((
            "Credentials",
            format!(
                "ServiceAccount {} (audience {})",
                sa.service_account_name, sa.audience
            ),
        )),
        (_, _, Some(secret)) => {
            let id = if spec.client_id.is_some() {
                "client_id from spec.clientId".to_owned()
            } else {
                format!("key {}", secret.client_id_key)
            };
            let proof = match method {
                M::ClientSecretBasic | M::ClientSecretPost | M::ClientSecretJwt => {
                    format!("key {}", secret.client_secret_key)
                }
                M::PrivateKeyJwt => format!("key {}", secret.private_key_key),
                M::TlsClientAuth => {
                    format!(
                        "keys {}, {}",
                        secret.private_key_key, secret.certificate_key
                    )
                }
                M::ServiceAccountToken | M::None => "-".to_owned(),
            };
            found.push((
                "Credentials",
                format!("Secret {} ({id}; {proof})", secret.name),
            ));
        }
        (M::None, _, _) => found.push(("Credentials", "none (public client)".to_owned())),
        _ => found.push(("Credentials", "-".to_owned())),
    }
    if let Some(subject) = spec.token_exchange.as_ref().map(|e| &e.subject_token) {
        let what = if let Some(sa) = &subject.service_account_token {
            format!(
                "ServiceAccount {} (audience {})",
                sa.service_account_name, sa.audience
            )
        } else if let Some(other) = &subject.oauth_client_ref {
            format!("OAuthClient {}", other.name)
        } else if let Some(secret) = &subject.secret_ref {
            format!("Secret {} (key {})", secret.name, secret.key)
        } else {
            "-".to_owned()
        };
        found.push(("Subject token", what));
    }
    if let Some(bundle) = &spec.ca_bundle_ref {
        found.push((
            "CA bundle",
            format!("{:?} {} (key {})", bundle.kind, bundle.name, bundle.key),
        ));
    }
    found
}

fn detail_text(
    client: &OAuthClient,
    secret_name: &str,
    secret: &SecretView,
    events: &Result<Vec<EventGroup>, String>,
    now: Timestamp,
) -> String {
    let namespace = client.namespace().unwrap_or_default();
    let mut out = header_text(client, now);
    match &client.status {
        None => out.push_str(
            "\nStatus: none yet. Is the operator running, and does it watch this namespace?\n",
        ),
        Some(status) => {
            out.push_str(&conditions_text(status, now));
            out.push_str(&status_fields_text(status, client.metadata.generation, now));
        }
    }
    out.push_str(&secret_text(&namespace, secret_name, secret));
    out.push_str(&events_text(events, now));
    out
}

/// The client's own fields: name, namespace, provider, token URL, age, a pending refresh request.
fn header_text(client: &OAuthClient, now: Timestamp) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        out.push_str(&format!(
            "{:<20} {}\n",
            format!("{label}:"),
            printable(&value)
        ));
    };
    field("Name", client.name_any());
    match client.namespace() {
        Some(namespace) => field("Namespace", namespace),
        // The view of a ClusterOAuthClient (cluster::as_client).
        None => field(
            "Kind",
            "ClusterOAuthClient (cluster-scoped; references resolve in the cluster resource namespace)"
                .into(),
        ),
    }
    field("Provider", client.spec.provider.as_str().into());
    field("Token URL", token_url(client));
    field("Client auth", client_auth(client));
    for (label, value) in references(client) {
        field(label, value);
    }
    let created = client
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| crate::base::time::rfc3339(t.0));
    field("Created", when_text(created.as_deref(), now));
    if let Some(requested) = client.annotations().get(REFRESH_REQUESTED_ANNOTATION) {
        field("Refresh requested", when_text(Some(requested), now));
    }
    out
}

/// The conditions as a table, Ready first, then Degraded, then any other.
fn conditions_text(status: &OAuthClientStatus, now: Timestamp) -> String {
    let mut out = String::from("\nConditions:\n");
    let mut conditions = Table::new(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]);
    let mut sorted = status.conditions.clone();
    sorted.sort_by_key(|c| (c.type_ != READY, c.type_ != DEGRADED, c.type_.clone()));
    for c in &sorted {
        conditions.row(vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            relative(c.last_transition_time.0, now),
            c.message.clone(),
        ]);
    }
    if sorted.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&conditions.render("  "));
    }
    out
}

/// The status fields, one per line; times relative to `now` as well.
fn status_fields_text(
    status: &OAuthClientStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let observed = match (status.observed_generation, generation) {
        (Some(o), Some(g)) if o == g => format!("{o}"),
        (Some(o), Some(g)) => format!("{o} (the spec is at generation {g}: not yet seen)"),
        (o, _) => o.map_or_else(|| "-".into(), |o| o.to_string()),
    };
    let lines: [(&str, String); 8] = [
        ("observedGeneration", observed),
        ("secretName", or_dash(&status.secret_name)),
        ("tokenType", or_dash(&status.token_type)),
        ("scope", or_dash(&status.scope)),
        ("issuedAt", when_text(status.issued_at.as_deref(), now)),
        ("expiresAt", when_text(status.expires_at.as_deref(), now)),
        (
            "nextRefreshAt",
            when_text(status.next_refresh_at.as_deref(), now),
        ),
        (
            "consecutiveFailures",
            status
                .consecutive_failures
                .map_or_else(|| "-".into(), |n| n.to_string()),
        ),
    ];
    let mut out = String::from("\nStatus:\n");
    for (label, value) in lines {
        out.push_str(&format!(
            "  {:<21} {}\n",
            format!("{label}:"),
            printable(&value)
        ));
    }
    out
}

fn secret_text(namespace: &str, name: &str, secret: &SecretView) -> String {
    match secret {
        SecretView::Found {
            type_,
            keys,
            controlled,
        } => {
            let owner = if *controlled {
                "controlled by this OAuthClient"
            } else {
                "NOT controlled by this OAuthClient: the operator leaves it alone (SecretConflict)"
            };
            let mut out = format!(
                "\nSecret {namespace}/{name} ({}, {owner}; values not shown):\n",
                printable(type_)
            );
            let mut table = Table::new(&["KEY", "BYTES"]);
            for (key, size) in keys {
                table.row(vec![key.clone(), size.to_string()]);
            }
            if keys.is_empty() {
                out.push_str("  no keys\n");
            } else {
                out.push_str(&table.render("  "));
            }
            out
        }
        SecretView::Missing => format!("\nSecret {namespace}/{name}: does not exist\n"),
        SecretView::Unreadable(why) => {
            format!(
                "\nSecret {namespace}/{name}: cannot be read: {}\n",
                printable(why)
            )
        }
    }
}

fn events_text(events: &Result<Vec<EventGroup>, String>, now: Timestamp) -> String {
    match events {
        Err(why) => format!("\nEvents: cannot be listed: {}\n", printable(why)),
        Ok(groups) if groups.is_empty() => "\nEvents: none\n".into(),
        Ok(groups) => {
            let mut table = Table::new(&["TYPE", "REASON", "COUNT", "LAST", "NOTE"]);
            for g in groups {
                table.row(vec![
                    g.type_.clone(),
                    g.reason.clone(),
                    g.count.to_string(),
                    g.last.map_or_else(|| "-".into(), |t| relative(t, now)),
                    g.note.clone(),
                ]);
            }
            format!("\nEvents (oldest first):\n{}", table.render("  "))
        }
    }
}

fn detail_json(
    client: &OAuthClient,
    secret_name: &str,
    secret: &SecretView,
    events: &Result<Vec<EventGroup>, String>,
    warnings: &[String],
) -> Value {
    let s = Summary::of(client);
    let secret = match secret {
        SecretView::Found {
            type_,
            keys,
            controlled,
        } => json!({
            "name": secret_name,
            "exists": true,
            "type": type_,
            "controlledByThisClient": controlled,
            "keys": keys.iter().map(|(k, n)| json!({"key": k, "bytes": n})).collect::<Vec<_>>(),
        }),
        SecretView::Missing => json!({"name": secret_name, "exists": false}),
        SecretView::Unreadable(why) => json!({"name": secret_name, "error": why}),
    };
    let events = match events {
        Ok(groups) => json!(
            groups
                .iter()
                .map(|g| json!({
                    "type": g.type_,
                    "reason": g.reason,
                    "note": g.note,
                    "count": g.count,
                    "last": g.last.map(crate::base::time::rfc3339),
                }))
                .collect::<Vec<_>>()
        ),
        Err(why) => json!({"error": why}),
    };
    json!({
        "namespace": s.namespace,
        "name": s.name,
        "provider": s.provider,
        "tokenUrl": token_url(client),
        "clientAuth": client_auth(client),
        "references": references(client)
            .into_iter()
            .map(|(label, what)| json!({"what": label, "object": what}))
            .collect::<Vec<_>>(),
        "ready": s.ready,
        "reason": s.reason,
        "message": s.message,
        "refreshRequestedAt": client.annotations().get(REFRESH_REQUESTED_ANNOTATION),
        "generation": client.metadata.generation,
        "status": client.status,
        "secret": secret,
        "events": events,
        "warnings": warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_are_shown_without_userinfo_or_query() {
        assert_eq!(
            shown_url("https://user:pa55@idp.example.com/oauth2/token?key=s3cret#x"),
            "https://idp.example.com/oauth2/token?..."
        );
        assert_eq!(
            shown_url("http://127.0.0.1:8089/token"),
            "http://127.0.0.1:8089/token"
        );
        assert_eq!(shown_url("not a url"), "(unparseable)");
    }
}
