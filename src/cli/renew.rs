//! `oauth-token-operator renew NAME [-n NS] | --all [-n NS | -A] [--wait [--timeout 60s]]`:
//! asks the operator for a new token now, through the annotation
//! `oauth.token-operator.dev/refresh-requested-at`, and optionally waits for the outcome.
//!
//! * A client that already carries a request later than its `status.issuedAt` (and not in the
//!   future) is being renewed: no second request is made, and `--wait` waits for that one.
//! * `--wait` polls the objects every 500 ms until `status.issuedAt` reaches the request
//!   (renewed), the Degraded condition reports a failure newer than the request (failed: reason
//!   and message), or `--timeout` passes (what was last seen is printed). Exit 1 when any
//!   renewal failed or timed out.
//! * `renew clusteroauthclient/NAME` (or `--cluster NAME`; `--all --cluster` for
//!   every one) sets the annotation on the ClusterOAuthClient, which the operator copies to the
//!   OAuthClient that obtains its token; `--wait` reads the ClusterOAuthClient's status, which
//!   is that OAuthClient's.
//! * The namespace and name of each object the API server returns (listed, or got by NAME) go
//!   into the PATCH's path and `--wait`'s reads only when they are names: an object whose
//!   namespace or name is not one (`../x`) is skipped with one line saying so, the others are
//!   renewed, and the exit code is 1.

use crate::cli::terminal::{errln, outln};
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::cluster::{self, Named};
use super::kube_config::{
    CliError, Connection, EXIT_NOT_OK, KubeArgs, checked_name, checked_namespace,
};
use super::status::{Summary, list_clients};
use super::table::{parse_time, printable, relative, span, truncate, when};
use crate::api::cluster_crd::ClusterOAuthClient;
use crate::api::conditions;
use crate::api::crd::OAuthClient;
use crate::api::keys::REFRESH_REQUESTED_ANNOTATION;
use crate::base::time::rfc3339;

/// Arguments of `renew`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "all"])))]
pub struct RenewArgs {
    /// The OAuthClient to renew; clusteroauthclient/NAME (also clusteroauthclients/NAME,
    /// coac/NAME) renews a ClusterOAuthClient.
    pub name: Option<String>,

    /// Renew every OAuthClient in the namespace (with -A, in all namespaces; with
    /// --cluster, every ClusterOAuthClient).
    #[arg(long, conflicts_with = "name")]
    pub all: bool,

    /// NAME (or, with --all, every one) is a ClusterOAuthClient.
    #[arg(
        long = "cluster",
        alias = "cluster-client",
        conflicts_with = "all_namespaces"
    )]
    pub cluster_client: bool,

    /// With --all: every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
    pub all_namespaces: bool,

    /// Wait until the operator has stored a new token (or failed to), and print the outcome.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: how long to wait at most (e.g. 60s, 5m).
    #[arg(long, value_parser = super::parse_duration, default_value = "60s", value_name = "DURATION", requires = "wait")]
    pub timeout: Duration,

    /// The cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How often `--wait` looks.
const POLL: Duration = Duration::from_millis(500);

/// A renewal being waited for.
struct Pending {
    /// The OAuthClient's namespace; empty for a ClusterOAuthClient.
    namespace: String,
    name: String,
    /// The request (ours or the one already there).
    requested: Timestamp,
    /// `consecutiveFailures` when the request was made.
    failures: i64,
}

impl Pending {
    /// `namespace/name`, or `clusteroauthclient/name`.
    fn label(&self) -> String {
        label(&self.namespace, &self.name)
    }
}

/// How a renewal's object is named in what `renew` prints: `namespace/name` of an OAuthClient,
/// `clusteroauthclient/name` of a ClusterOAuthClient (a view without namespace).
fn label(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        cluster::label(name)
    } else {
        format!("{namespace}/{name}")
    }
}

/// What became of a renewal.
enum Outcome {
    Renewed(String),
    Failed(String),
}

/// Runs `renew`.
pub(super) async fn run(args: RenewArgs) -> Result<u8, CliError> {
    // The name is checked before connecting: a name that is no name never reaches a request.
    let named = match &args.name {
        Some(name) => Some(cluster::named(name, args.cluster_client)?),
        None => None,
    };
    let connection = args.kube.connect().await?;
    // A ClusterOAuthClient is renewed through its OAuthClient view (cluster::as_client).
    let clients = match named {
        Some(Named::Client(name)) => vec![get(&connection, &connection.namespace, name).await?],
        Some(Named::Cluster(name)) => {
            vec![cluster::as_client(&cluster::get(&connection, name).await?)]
        }
        None if args.cluster_client => cluster::list(&connection)
            .await?
            .iter()
            .map(cluster::as_client)
            .collect(),
        None => list_clients(&connection, args.all_namespaces).await?,
    };
    if clients.is_empty() {
        let kind = if args.cluster_client {
            "ClusterOAuthClients"
        } else {
            "OAuthClients"
        };
        errln!("No {kind} found; nothing to renew.");
        return Ok(0);
    }
    let mut pending = Vec::new();
    let mut skipped = false;
    for client in &clients {
        match checked_key(client) {
            Some(key) => pending.push(request(&connection, client, key).await?),
            None => skipped = true,
        }
    }
    let code = if !args.wait || pending.is_empty() {
        0
    } else {
        wait(&connection, pending, args.timeout).await?
    };
    Ok(if skipped { EXIT_NOT_OK } else { code })
}

/// The namespace and name of `client` as the API server returned it, if both are names (no
/// namespace: a ClusterOAuthClient's view): they go into request paths (the PATCH, `--wait`'s
/// reads), and an API server, or a front end before it, may return anything. Otherwise one
/// line on standard error says that it is skipped (the values quoted and cut, never raw).
fn checked_key(client: &OAuthClient) -> Option<(String, String)> {
    let namespace = client.namespace().unwrap_or_default();
    let name = client.name_any();
    let namespace_ok = namespace.is_empty() || checked_namespace(&namespace).is_ok();
    if namespace_ok && checked_name("OAuthClient", &name).is_ok() {
        return Some((namespace, name));
    }
    errln!(
        "skipped an OAuthClient the API server returned as {:?} in namespace {:?}: not a valid name or namespace (it would reach another API path); no renewal was requested for it",
        truncate(&name, 80),
        truncate(&namespace, 80)
    );
    None
}

async fn get(
    connection: &Connection,
    namespace: &str,
    name: &str,
) -> Result<OAuthClient, CliError> {
    let name = checked_name("OAuthClient", name)?;
    let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), namespace);
    api.get(name).await.map_err(|e| {
        CliError::api(
            e,
            &format!("OAuthClient {namespace}/{name}"),
            &connection.url,
        )
    })
}

/// The refresh request on `client` (`refresh-requested-at`), when set and readable.
fn requested_at(client: &OAuthClient) -> Option<Timestamp> {
    parse_time(
        client
            .annotations()
            .get(REFRESH_REQUESTED_ANNOTATION)
            .map(String::as_str),
    )
}

/// The request already on `client` that the operator has not served yet: later than its
/// `issuedAt` and not in the future (a future time is a scheduled refresh, not a renewal).
fn pending_request(client: &OAuthClient, now: Timestamp) -> Option<Timestamp> {
    let requested = requested_at(client)?;
    let issued = parse_time(client.status.as_ref().and_then(|s| s.issued_at.as_deref()));
    let unserved = issued.is_none_or(|i| requested > i);
    let due = requested <= now + SignedDuration::from_secs(1);
    (unserved && due).then_some(requested)
}

/// The time to request: now, in whole seconds, and later than `issuedAt` and than the request
/// already there (a request at the same second would not count as later, and the operator
/// serves each request once).
fn request_time(client: &OAuthClient, now: Timestamp) -> Timestamp {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let issued = parse_time(client.status.as_ref().and_then(|s| s.issued_at.as_deref()));
    let previous = requested_at(client).filter(|p| *p <= now + SignedDuration::from_secs(1));
    // While failing, later than the streak's start too: an operator that restarted since
    // counts a request older than that as served.
    let failing_since = client
        .status
        .as_ref()
        .filter(|s| s.consecutive_failures.unwrap_or(0) > 0)
        .and_then(|s| conditions::failing(&s.conditions))
        .map(|c| c.last_transition_time.0);
    match issued
        .into_iter()
        .chain(previous)
        .chain(failing_since)
        .max()
    {
        Some(latest) if latest >= now => latest + SignedDuration::from_secs(1),
        _ => now,
    }
}

/// Requests a renewal of `client` (at `namespace`/`name`, checked) unless one is pending;
/// says which.
async fn request(
    connection: &Connection,
    client: &OAuthClient,
    (namespace, name): (String, String),
) -> Result<Pending, CliError> {
    let shown = label(&namespace, &name);
    let now = Timestamp::now();
    let status = client.status.clone().unwrap_or_default();
    let failures = status.consecutive_failures.unwrap_or(0);
    // A failing client's request may have been served by a failed attempt already (the status
    // does not say): a new one is made, which the operator serves at once, once.
    let pending = if failures > 0 {
        None
    } else {
        pending_request(client, now)
    };
    let requested = match pending {
        Some(requested) => {
            outln!(
                "{shown}: a renewal requested at {} is already pending; not requesting another",
                rfc3339(requested)
            );
            requested
        }
        None => {
            let requested = request_time(client, now);
            let patch = json!({"metadata": {"annotations": {REFRESH_REQUESTED_ANNOTATION: rfc3339(requested)}}});
            let patch = Patch::Merge(&patch);
            let params = PatchParams::default();
            let patched = if namespace.is_empty() {
                let api: Api<ClusterOAuthClient> = Api::all(connection.client.clone());
                api.patch(&name, &params, &patch).await.map(drop)
            } else {
                let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), &namespace);
                api.patch(&name, &params, &patch).await.map(drop)
            };
            patched.map_err(|e| {
                let what = if namespace.is_empty() {
                    format!("ClusterOAuthClient {name}")
                } else {
                    format!("OAuthClient {namespace}/{name}")
                };
                CliError::api(e, &what, &connection.url)
            })?;
            outln!("{shown}: renewal requested at {}", rfc3339(requested));
            requested
        }
    };
    if failures > 0 {
        let reason = conditions::failing(&status.conditions)
            .map_or_else(|| Summary::of(client).reason, |c| c.reason.clone());
        outln!(
            "  it is failing ({}, {failures} consecutive failures): the operator tries again now, whatever its backoff (once per request, at least 5s after its last attempt)",
            printable(&reason)
        );
    }
    Ok(Pending {
        namespace,
        name,
        requested,
        failures,
    })
}

/// What became of a renewal, judged from the object as it is now (`None`: not yet known).
fn outcome(pending: &Pending, client: &OAuthClient, now: Timestamp) -> Option<Outcome> {
    let status = client.status.clone().unwrap_or_default();
    let issued = parse_time(status.issued_at.as_deref());
    if issued.is_some_and(|i| i >= pending.requested) {
        let expires =
            parse_time(status.expires_at.as_deref()).map_or_else(|| "-".into(), |t| when(t, now));
        return Some(Outcome::Renewed(format!(
            "renewed: issuedAt {}, expires {expires}",
            status.issued_at.unwrap_or_default()
        )));
    }
    let degraded = conditions::failing(&status.conditions)?;
    // A failure after the request: one more than when it was made, or (for a client that was
    // not failing) a Degraded condition that turned True since.
    let newer = status.consecutive_failures.unwrap_or(0) > pending.failures
        || (pending.failures == 0 && degraded.last_transition_time.0 >= pending.requested);
    if !newer {
        return None;
    }
    let kept = match parse_time(status.expires_at.as_deref()) {
        Some(t) if t > now => format!(
            "; the previous token stays in the Secret until it expires {}",
            relative(t, now)
        ),
        _ => String::new(),
    };
    Some(Outcome::Failed(format!(
        "renewal failed: {}: {}{kept}",
        printable(&degraded.reason),
        printable(&degraded.message)
    )))
}

/// What was last seen of a client whose renewal timed out.
fn last_seen(client: &OAuthClient, now: Timestamp) -> String {
    let summary = Summary::of(client);
    let status = client.status.clone().unwrap_or_default();
    let next =
        parse_time(status.next_refresh_at.as_deref()).map_or_else(|| "-".into(), |t| when(t, now));
    format!(
        "issuedAt {}, Ready {} ({}: {}), next attempt {next}",
        status.issued_at.as_deref().unwrap_or("-"),
        summary.ready,
        printable(&summary.reason),
        printable(&summary.message)
    )
}

async fn wait(
    connection: &Connection,
    mut pending: Vec<Pending>,
    timeout: Duration,
) -> Result<u8, CliError> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    errln!(
        "Waiting up to {} for {} new token{}...",
        crate::spec::duration::format(timeout),
        pending.len(),
        if pending.len() == 1 { "" } else { "s" }
    );
    let mut failed = false;
    let mut seen: BTreeMap<(String, String), OAuthClient> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    // Bounded: one round every POLL until the deadline, each request cut at the deadline.
    loop {
        let now_instant = tokio::time::Instant::now();
        if now_instant >= deadline || pending.is_empty() {
            break;
        }
        let round = poll(connection, &pending);
        match tokio::time::timeout(deadline - now_instant, round).await {
            Ok(Ok(current)) => {
                last_error = None;
                failed |= settle_round(&mut pending, &current, &mut seen);
            }
            Ok(Err(error)) => last_error = Some(error.message),
            Err(_) => break,
        }
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
    }
    if !pending.is_empty() {
        failed = true;
        let waited = span(SignedDuration::try_from(started.elapsed()).unwrap_or_default());
        report_timeouts(&pending, &seen, last_error.as_deref(), &waited);
    }
    Ok(if failed { EXIT_NOT_OK } else { 0 })
}

/// Prints the clients of `pending` that got a new token or failed in the round that read
/// `current`, and keeps only those still waiting. True when one failed or was deleted.
fn settle_round(
    pending: &mut Vec<Pending>,
    current: &BTreeMap<(String, String), OAuthClient>,
    seen: &mut BTreeMap<(String, String), OAuthClient>,
) -> bool {
    let now = Timestamp::now();
    let mut failed = false;
    pending.retain(|p| {
        let key = (p.namespace.clone(), p.name.clone());
        let Some(client) = current.get(&key) else {
            outln!("{}: deleted while waiting", p.label());
            failed = true;
            return false;
        };
        seen.insert(key, client.clone());
        match outcome(p, client, now) {
            Some(Outcome::Renewed(text)) => {
                outln!("{}: {text}", p.label());
                false
            }
            Some(Outcome::Failed(text)) => {
                outln!("{}: {text}", p.label());
                failed = true;
                false
            }
            None => true,
        }
    });
    failed
}

/// One line per client still waiting at the deadline: what was last seen of it, and the last
/// error reading the API.
fn report_timeouts(
    pending: &[Pending],
    seen: &BTreeMap<(String, String), OAuthClient>,
    last_error: Option<&str>,
    waited: &str,
) {
    let now = Timestamp::now();
    for p in pending {
        let key = (p.namespace.clone(), p.name.clone());
        let seen = seen.get(&key).map_or_else(
            || "nothing (no answer from the API server)".into(),
            |c| last_seen(c, now),
        );
        let error = last_error
            .map(|e| format!("; last error: {}", printable(e)))
            .unwrap_or_default();
        outln!(
            "{}: timed out after {waited} waiting for a new token; last seen: {seen}{error}",
            p.label()
        );
    }
}

/// The current objects of the pending renewals: one GET for a single client, one LIST per
/// namespace otherwise (ClusterOAuthClients: their OAuthClient views, under the namespace "").
async fn poll(
    connection: &Connection,
    pending: &[Pending],
) -> Result<BTreeMap<(String, String), OAuthClient>, CliError> {
    let mut found = BTreeMap::new();
    if pending.first().is_some_and(|p| p.namespace.is_empty()) {
        let clusters = match pending {
            [single] => cluster::get_opt(connection, &single.name)
                .await?
                .into_iter()
                .collect(),
            _ => cluster::list(connection).await?,
        };
        for c in &clusters {
            found.insert((String::new(), c.name_any()), cluster::as_client(c));
        }
        return Ok(found);
    }
    if let [single] = pending {
        let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), &single.namespace);
        let what = format!("OAuthClient {}/{}", single.namespace, single.name);
        if let Some(client) = api
            .get_opt(&single.name)
            .await
            .map_err(|e| CliError::api(e, &what, &connection.url))?
        {
            found.insert((single.namespace.clone(), single.name.clone()), client);
        }
        return Ok(found);
    }
    let mut namespaces: Vec<&str> = pending.iter().map(|p| p.namespace.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for namespace in namespaces {
        let api: Api<OAuthClient> = Api::namespaced(connection.client.clone(), namespace);
        let list = api.list(&Default::default()).await.map_err(|e| {
            CliError::api(e, &format!("OAuthClients in {namespace}"), &connection.url)
        })?;
        for client in list.items {
            found.insert(
                (client.namespace().unwrap_or_default(), client.name_any()),
                client,
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{DEGRADED, READY, TOKEN_ISSUED, set};
    use crate::api::crd::{CredentialsSecretRef, OAuthClientSpec, OAuthClientStatus};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn client(issued: Option<i64>, requested: Option<i64>) -> OAuthClient {
        let spec: OAuthClientSpec = serde_json::from_value(json!({
            "credentialsSecretRef": CredentialsSecretRef::named("c"),
        }))
        .unwrap();
        let mut c = OAuthClient::new("a", spec);
        c.metadata.namespace = Some("ns".into());
        if let Some(r) = requested {
            c.annotations_mut()
                .insert(REFRESH_REQUESTED_ANNOTATION.into(), rfc3339(at(r)));
        }
        c.status = Some(OAuthClientStatus {
            issued_at: issued.map(|i| rfc3339(at(i))),
            expires_at: issued.map(|i| rfc3339(at(i + 3600))),
            consecutive_failures: Some(0),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_request_later_than_issued_at_and_due_is_pending() {
        assert_eq!(
            pending_request(&client(Some(0), Some(10)), at(20)),
            Some(at(10))
        );
        assert_eq!(pending_request(&client(Some(0), None), at(20)), None);
        assert_eq!(
            pending_request(&client(Some(10), Some(10)), at(20)),
            None,
            "served"
        );
        assert_eq!(
            pending_request(&client(Some(0), Some(600)), at(20)),
            None,
            "scheduled"
        );
        assert_eq!(
            pending_request(&client(None, Some(10)), at(20)),
            Some(at(10))
        );
    }

    #[test]
    fn the_request_is_later_than_issued_at() {
        let now = Timestamp::from_millisecond(1_700_000_020_700).unwrap();
        assert_eq!(request_time(&client(Some(0), None), now), at(20));
        assert_eq!(request_time(&client(Some(20), None), now), at(21));
        assert_eq!(request_time(&client(None, None), now), at(20));
    }

    #[test]
    fn outcomes_renewed_failed_or_unknown() {
        let pending = Pending {
            namespace: "ns".into(),
            name: "a".into(),
            requested: at(20),
            failures: 0,
        };
        let mut c = client(Some(0), Some(20));
        assert!(outcome(&pending, &c, at(21)).is_none());
        c.status.as_mut().unwrap().issued_at = Some(rfc3339(at(20)));
        assert!(
            matches!(outcome(&pending, &c, at(21)), Some(Outcome::Renewed(t)) if t.starts_with("renewed: issuedAt 2023-11-14T22:13:40Z"))
        );
        // A failure that predates the request does not count; a newer one does.
        let mut c = client(Some(0), Some(20));
        let status = c.status.as_mut().unwrap();
        set(
            &mut status.conditions,
            READY,
            true,
            TOKEN_ISSUED,
            "ok",
            None,
            at(0),
        );
        set(
            &mut status.conditions,
            DEGRADED,
            true,
            "InvalidClient",
            "bad",
            None,
            at(5),
        );
        assert!(outcome(&pending, &c, at(21)).is_none());
        c.status.as_mut().unwrap().consecutive_failures = Some(1);
        assert!(
            matches!(outcome(&pending, &c, at(21)), Some(Outcome::Failed(t)) if t.starts_with("renewal failed: InvalidClient: bad; the previous token stays"))
        );
    }
}
