//! Publishes `events.k8s.io/v1` Events about OAuthClients (and, for the OAuthClient that
//! obtains a ClusterOAuthClient's token, about the ClusterOAuthClient).
//!
//! kube's `Recorder` keeps every event it sent for six minutes to build event series; with
//! thousands of OAuthClients that cache costs more memory than everything else the controller
//! holds. Repeated identical failures are already suppressed by [`crate::decide`] (it compares with
//! the Degraded condition), so each event here is created once and nothing is cached.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::crd::OAuthClient;
use crate::decide::EventNote;

/// Longest event name.
const MAX_NAME: usize = 253;

/// Longest event note the API server accepts, in bytes.
const MAX_NOTE: usize = 1024;

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Creates events for the controller.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    instance: String,
}

impl EventPublisher {
    /// A publisher reporting as `oauth-token-operator` / `instance` (the pod name).
    pub fn new(client: Client, instance: String) -> Self {
        EventPublisher { client, instance }
    }

    /// Creates one event about `object`, at `now` (the clock's); for the OAuthClient that
    /// obtains a ClusterOAuthClient's token, the same event about the ClusterOAuthClient too (in
    /// the `default` namespace, where Kubernetes keeps the events of cluster-scoped objects).
    /// Failures are logged, never fatal.
    pub async fn publish(&self, object: &OAuthClient, note: &EventNote, now: jiff::Timestamp) {
        let namespace = object.namespace().unwrap_or_default();
        self.create(object.object_ref(&()), &namespace, note, now)
            .await;
        let cluster_client = object
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == "ClusterOAuthClient");
        if let Some(owner) = cluster_client {
            let regarding = ObjectReference {
                api_version: Some(owner.api_version.clone()),
                kind: Some(owner.kind.clone()),
                name: Some(owner.name.clone()),
                uid: Some(owner.uid.clone()),
                ..ObjectReference::default()
            };
            self.create(regarding, "default", note, now).await;
        }
    }

    /// Creates one event about `regarding` in `namespace`.
    async fn create(
        &self,
        regarding: ObjectReference,
        namespace: &str,
        note: &EventNote,
        now: jiff::Timestamp,
    ) {
        let name = regarding.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                // The suffix takes at most 21 characters; long names are shortened (with a
                // hash) so that the name stays within the 253 Kubernetes allows.
                name: Some(format!(
                    "{}.{:x}{:04x}",
                    crate::output::secret::shorten(&name, MAX_NAME - 21),
                    now.as_nanosecond(),
                    rand::random::<u16>()
                )),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(note.action.clone()),
            reason: Some(note.reason.into()),
            note: Some(cut(&note.note, MAX_NOTE).to_owned()),
            type_: Some(if note.normal { "Normal" } else { "Warning" }.into()),
            regarding: Some(regarding),
            reporting_controller: Some(format!("{}/controller", crate::api::crd::GROUP)),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason = note.reason, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_servers_byte_limit_on_a_character_boundary() {
        let note = "é".repeat(700);
        let cut = cut(&note, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE && cut.len() >= MAX_NOTE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(super::cut("short", MAX_NOTE), "short");
    }
}
