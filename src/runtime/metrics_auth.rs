//! `/metrics` behind authentication and authorization, as current Kubernetes operator scaffolds
//! serve it: the caller presents a bearer token (Prometheus its ServiceAccount's); the API server
//! says whose it is (TokenReview) and whether that identity may `get` the non-resource URL
//! `/metrics` (SubjectAccessReview). Without a token: 401; a token the API server does not
//! accept: 401; an identity without the right: 403. An allowed token is remembered for a minute
//! (by its SHA-256; never the token), so that scrapes cost the API server two requests a minute
//! per scraper, not two per scrape; a refusal for 5 seconds, so that a new binding takes effect
//! at once. Tokens not seen before are reviewed at most [`REVIEWS_PER_SECOND`] a second (a
//! burst of twice that): a caller sending a new bogus token with every request gets 429, and the
//! API server is not asked for it.
//!
//! Every metric names tenants' clients and their token times: plain HTTP (`--metrics-secure=false`)
//! is an explicit choice, to be fenced by the NetworkPolicy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// How long an allowed token is remembered.
const TTL: Duration = Duration::from_secs(60);
/// How long a refused token is remembered.
const REFUSED_TTL: Duration = Duration::from_secs(5);
/// The most decisions kept (distinct tokens seen within [`TTL`]).
const MAX_CACHED: usize = 1024;
/// Reviews of tokens not in the cache, per second at most.
pub const REVIEWS_PER_SECOND: f64 = 10.0;
/// The path authorized.
pub const METRICS_PATH: &str = "/metrics";

/// What the API server said of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Authenticated and allowed to get `/metrics`.
    Allowed,
    /// No token, or one the API server does not accept (401).
    Unauthenticated,
    /// Authenticated as this user, who may not get `/metrics` (403).
    Forbidden(String),
    /// Too many tokens to review at once (429): asked again later.
    Throttled,
}

/// Decides on the bearer tokens presented to `/metrics`.
pub struct MetricsAuth {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
    /// Reviews left to make now, and when that was counted (a token bucket).
    budget: Mutex<(f64, Instant)>,
}

impl std::fmt::Debug for MetricsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsAuth")
    }
}

impl MetricsAuth {
    /// Asks `client`'s API server.
    pub fn new(client: kube::Client) -> Self {
        MetricsAuth {
            client,
            cache: Mutex::default(),
            budget: Mutex::new((2.0 * REVIEWS_PER_SECOND, Instant::now())),
        }
    }

    /// The decision on the `Authorization` header's value (`None`: no header). An API server
    /// that cannot be asked decides nothing: `Err`, answered 503.
    pub async fn decide(&self, authorization: Option<&str>) -> Result<Decision, kube::Error> {
        let Some(token) = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(Decision::Unauthenticated);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((decision, at)) = self.cache.lock().expect("auth cache").get(&key).cloned() {
            let ttl = if decision == Decision::Allowed {
                TTL
            } else {
                REFUSED_TTL
            };
            if at.elapsed() < ttl {
                return Ok(decision);
            }
        }
        if !self.take_review() {
            return Ok(Decision::Throttled);
        }
        let decision = self.ask(token).await?;
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (decision.clone(), Instant::now()));
        Ok(decision)
    }

    /// One review from the budget, if there is one left.
    fn take_review(&self) -> bool {
        let mut budget = self.budget.lock().expect("review budget");
        let (left, at) = *budget;
        let now = Instant::now();
        let left =
            (left + at.elapsed().as_secs_f64() * REVIEWS_PER_SECOND).min(2.0 * REVIEWS_PER_SECOND);
        *budget = (left - 1.0, now);
        if left >= 1.0 {
            true
        } else {
            budget.0 = left;
            false
        }
    }

    async fn ask(&self, token: &str) -> Result<Decision, kube::Error> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let status = reviews
            .create(&PostParams::default(), &review)
            .await?
            .status
            .unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let access: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let name = user.username.clone().unwrap_or_default();
        let question = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let allowed = access
            .create(&PostParams::default(), &question)
            .await?
            .status
            .is_some_and(|s| s.allowed);
        Ok(if allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A client of an API server that accepts no token (every TokenReview: not authenticated),
    /// counting the reviews it is asked for.
    fn refusing(reviews: Arc<AtomicUsize>) -> kube::Client {
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let reviews = reviews.clone();
            async move {
                if request.uri().path().ends_with("/tokenreviews") {
                    reviews.fetch_add(1, Ordering::SeqCst);
                }
                let body = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {}, "status": {"authenticated": false},
                });
                let response = http::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .expect("a response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Review of security round three: a caller sending a new bogus token with every request
    /// had each one reviewed by the API server. Distinct tokens are reviewed at most
    /// [`REVIEWS_PER_SECOND`] a second (a burst of twice that); the others are `Throttled`
    /// (429) without a request, and a token already refused is answered from memory.
    #[tokio::test]
    async fn a_flood_of_bogus_tokens_is_reviewed_at_most_ten_a_second() {
        let reviews = Arc::new(AtomicUsize::new(0));
        let auth = MetricsAuth::new(refusing(reviews.clone()));
        let started = Instant::now();
        let mut throttled = 0;
        for i in 0..500 {
            match auth.decide(Some(&format!("Bearer bogus-{i}"))).await {
                Ok(Decision::Throttled) => throttled += 1,
                Ok(Decision::Unauthenticated) => {}
                other => panic!("token {i}: {other:?}"),
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let reviewed = reviews.load(Ordering::SeqCst);
        let most = (REVIEWS_PER_SECOND * (2.0 + elapsed)).ceil() as usize;
        assert!(
            reviewed <= most,
            "{reviewed} reviews for 500 distinct tokens in {elapsed:.2} s (at most {most})"
        );
        assert_eq!(reviewed + throttled, 500);
        let first = auth.decide(Some("Bearer bogus-0")).await.unwrap();
        assert_eq!(first, Decision::Unauthenticated);
        assert_eq!(reviews.load(Ordering::SeqCst), reviewed, "asked again");
    }
}
