//! Facts that save reads of the API server. Each holds for one version of an object and is
//! worthless once that version moves: the fingerprint check for a credentials version and a
//! generation, this process's write of the managed Secret until the watch cache shows it, and
//! the managed Secret's version known to be exactly as the operator wrote it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::change::Change;
use crate::controller::secret_index::OurAnnotations;

/// How long what this process wrote is trusted over a watch cache that has not caught up.
pub const WRITE_CACHE_TTL: Duration = Duration::from_secs(30);

/// A credentials check that need not be repeated while its inputs stay the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// resourceVersion of the credentials Secret.
    pub credentials_rv: Option<String>,
    /// The fingerprint annotation checked.
    pub fingerprint: String,
    /// The OAuthClient generation.
    pub generation: Option<i64>,
    /// Whether it matched.
    pub matched: bool,
}

/// The managed Secret's annotations as this process last wrote them, remembered until the
/// watch cache shows the write.
///
/// While the cache still shows the Secret at a resourceVersion from before the write, the cache
/// is stale and the written annotations are the truth (for at most [`WRITE_CACHE_TTL`]).
#[derive(Clone, Debug)]
pub struct Written {
    /// resourceVersions of the Secret before the write (None: it did not exist): the one the
    /// cache showed, and the one the operator's own create made just before.
    pub before: Vec<Option<String>>,
    /// When it was written.
    pub at: Instant,
    /// The operator's annotations written (those a reconcile reads; kept as the managed-Secret
    /// index keeps them: during a burst of 10,000 writes, maps of strings cost megabytes).
    pub annotations: OurAnnotations,
}

impl Written {
    /// The written annotations, if the cache still shows the Secret as it was before the write.
    pub fn if_cache_is_behind(
        &self,
        cached_rv: Option<&String>,
    ) -> Option<BTreeMap<String, String>> {
        let behind = self.before.iter().any(|rv| rv.as_ref() == cached_rv);
        (behind && self.at.elapsed() < WRITE_CACHE_TTL).then(|| self.annotations.to_map())
    }
}

/// The facts remembered.
#[derive(Clone, Debug, Default)]
pub struct Caches {
    /// The last fingerprint check.
    pub verified: Option<Verified>,
    /// The managed Secret as this process last wrote it.
    pub written: Option<Box<Written>>,
    /// The resourceVersion of the managed Secret that this process wrote or read and verified:
    /// a cache showing another one means someone else changed it.
    pub trusted_rv: Option<String>,
}

/// What a reconcile learned about them: each fact set, cleared or kept on its own.
#[derive(Clone, Debug, Default)]
pub struct CacheUpdate {
    /// The fingerprint check.
    pub verified: Change<Verified>,
    /// The write of the managed Secret.
    pub written: Change<Written>,
    /// The managed Secret's version known to be as the operator wrote it.
    pub trusted_rv: Change<String>,
}

impl CacheUpdate {
    /// `self`, with what `later` decided where it decided something.
    pub fn then(self, later: CacheUpdate) -> CacheUpdate {
        CacheUpdate {
            verified: later.verified.or(self.verified),
            written: later.written.or(self.written),
            trusted_rv: later.trusted_rv.or(self.trusted_rv),
        }
    }
}

impl Caches {
    pub(super) fn apply(&mut self, update: CacheUpdate) {
        update.verified.apply(&mut self.verified);
        update.written.apply_boxed(&mut self.written);
        update.trusted_rv.apply(&mut self.trusted_rv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_fact_wins_and_a_kept_one_leaves_the_earlier() {
        let early = CacheUpdate {
            trusted_rv: Change::Set("1".into()),
            written: Change::Clear,
            ..CacheUpdate::default()
        };
        let late = CacheUpdate {
            trusted_rv: Change::Set("2".into()),
            ..CacheUpdate::default()
        };
        let mut caches = Caches {
            written: Some(Box::new(Written {
                before: vec![None],
                at: Instant::now(),
                annotations: OurAnnotations::default(),
            })),
            ..Caches::default()
        };
        caches.apply(early.then(late));
        assert_eq!(caches.trusted_rv.as_deref(), Some("2"));
        assert!(caches.written.is_none());
    }

    #[test]
    fn a_write_is_the_truth_only_while_the_cache_shows_the_version_before_it() {
        let written = Written {
            before: vec![Some("5".into()), Some("6".into())],
            at: Instant::now(),
            annotations: OurAnnotations::of(&BTreeMap::from([(
                crate::api::keys::EXPIRES_AT_ANNOTATION.to_owned(),
                "b".to_owned(),
            )])),
        };
        let truth = written.if_cache_is_behind(Some(&"5".to_owned())).unwrap();
        assert_eq!(truth["oauth.token-operator.dev/expires-at"], "b");
        assert!(written.if_cache_is_behind(Some(&"6".to_owned())).is_some());
        assert!(written.if_cache_is_behind(Some(&"7".to_owned())).is_none());
        assert!(written.if_cache_is_behind(None).is_none());
        let old = Written {
            at: Instant::now() - WRITE_CACHE_TTL - Duration::from_secs(1),
            ..written
        };
        assert!(old.if_cache_is_behind(Some(&"5".to_owned())).is_none());
    }
}
