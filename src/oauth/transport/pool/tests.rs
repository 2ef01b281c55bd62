//! The pool's sharing, its bounds and the shares of namespaces.

use super::*;

fn pool() -> ClientPool {
    pool_with(PoolLimits::default())
}

fn pool_with(limits: PoolLimits) -> ClientPool {
    ClientPool::new(
        ClientTemplate {
            timeout: Duration::from_secs(1),
            policy: Arc::default(),
            proxy: Arc::default(),
            proxy_hosts: Arc::default(),
            ca_file: None,
        },
        limits,
    )
}

/// Every bound as high as the global one: the per-namespace shares out of the way.
fn unshared() -> PoolLimits {
    let d = PoolLimits::default();
    PoolLimits {
        bundles_per_namespace: d.bundles,
        identities_per_namespace: d.identities,
        ..d
    }
}

/// The client only (its claim dropped at once: for tests of the clients themselves).
fn get(pool: &ClientPool, trust: &Trust) -> Result<Arc<Pooled>, PoolError> {
    pool.get(trust, None, "ns").map(|held| held.pooled)
}

fn get_with_identity(
    pool: &ClientPool,
    trust: &Trust,
    identity: &Identity,
) -> Result<Arc<Pooled>, PoolError> {
    pool.get(trust, Some(identity), "ns")
        .map(|held| held.pooled)
}

fn bundle(name: &str) -> CaBundle {
    CaBundle::parse(
        crate::oauth::transport::trust::tests::ca(name).as_bytes(),
        name,
    )
    .unwrap()
}

#[test]
fn one_client_per_distinct_trust_shared_and_dropped_when_unused() {
    let pool = pool();
    let (a, b) = (bundle("a"), bundle("b"));
    let first = get(&pool, &Trust::Bundle(a.clone())).unwrap();
    // Another origin with the same certificates shares the client.
    let same = CaBundle::parse(
        &a.certificates()
            .iter()
            .map(|der| {
                let text = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    der.as_ref(),
                );
                format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n")
            })
            .collect::<String>()
            .into_bytes(),
        "elsewhere",
    )
    .unwrap();
    let shared = get(&pool, &Trust::Bundle(same)).unwrap();
    assert!(Arc::ptr_eq(&first, &shared));
    let other = get(&pool, &Trust::Bundle(b)).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    let default = get(&pool, &Trust::Default).unwrap();
    assert_eq!(default.key().trust, TrustKey::Default);
    assert_eq!(pool.live(), 3);
    drop((first, shared));
    assert_eq!(pool.live(), 2, "a client nobody holds is gone");
    drop(other);
    // Dead entries are swept when a client is added.
    let again = get(&pool, &Trust::Bundle(a)).unwrap();
    assert_eq!(pool.live(), 2);
    assert_eq!(pool.entries.lock().unwrap().len(), 2);
    drop(again);
    assert!(format!("{default:?}").contains("default"));
}

fn identity(key: &str, cert: &str) -> Identity {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");
    let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
    let cert = read(cert);
    Identity::load(&read(key), "tls.key", Some((&cert, "tls.crt"))).unwrap()
}

#[test]
fn identity_clients_are_one_per_trust_and_identity_and_never_shared_across_either() {
    let pool = pool();
    let (a, b) = (
        identity("ec-p256-sec1.pem", "ec-p256.crt"),
        identity("rsa-pkcs8.pem", "rsa.crt"),
    );
    let bundle = Trust::Bundle(bundle("corp"));
    let plain = get(&pool, &Trust::Default).unwrap();
    let a_default = get_with_identity(&pool, &Trust::Default, &a).unwrap();
    let a_again = get_with_identity(&pool, &Trust::Default, &a).unwrap();
    let b_default = get_with_identity(&pool, &Trust::Default, &b).unwrap();
    let a_bundle = get_with_identity(&pool, &bundle, &a).unwrap();
    assert!(
        Arc::ptr_eq(&a_default, &a_again),
        "same trust and identity: shared"
    );
    for (x, y) in [
        (&a_default, &b_default),
        (&a_default, &a_bundle),
        (&a_default, &plain),
    ] {
        assert!(!Arc::ptr_eq(x, y));
        assert_ne!(x.key(), y.key());
    }
    assert_eq!(a_default.key().identity, Some(a.key()));
    assert_eq!(a_bundle.key().trust, bundle.key());
    assert_eq!(a_bundle.trust(), &bundle);
    assert_eq!(plain.key().identity, None);
    // Identity clients do not count as bundle clients.
    assert_eq!(load(&pool.entries.lock().unwrap(), Bound::Bundle).0, 0);
    assert_eq!(pool.live(), 4);
    drop((a_default, a_again));
    assert_eq!(pool.live(), 3, "an identity client nobody holds is gone");
}

#[test]
fn clients_of_distinct_bundles_are_bounded_and_a_freed_place_is_reused() {
    let pool = pool_with(unshared());
    let pems: Vec<String> = (0..MAX_BUNDLE_CLIENTS)
        .map(|i| crate::oauth::transport::trust::tests::ca(&format!("ca-{i}")))
        .collect();
    let held: Vec<_> = pems
        .iter()
        .map(|pem| {
            let bundle = CaBundle::parse(pem.as_bytes(), "ConfigMap ca").unwrap();
            get(&pool, &Trust::Bundle(bundle)).unwrap()
        })
        .collect();
    let default = get(&pool, &Trust::Default).unwrap();
    // One more distinct bundle is refused, with a message that says what to do.
    let refused = get(&pool, &Trust::Bundle(bundle("one-too-many"))).unwrap_err();
    assert!(matches!(
        refused,
        PoolError::Full {
            clients: MAX_BUNDLE_CLIENTS,
            limit: MAX_BUNDLE_CLIENTS,
            ..
        }
    ));
    assert!(refused.to_string().contains("same bundle"), "{refused}");
    // A bundle already in use is still shared, and the default trust is never refused.
    let again = CaBundle::parse(pems[0].as_bytes(), "ConfigMap again").unwrap();
    assert!(Arc::ptr_eq(
        &get(&pool, &Trust::Bundle(again)).unwrap(),
        &held[0]
    ));
    assert!(Arc::ptr_eq(&get(&pool, &Trust::Default).unwrap(), &default));
    // Dropping one frees its place.
    let mut held = held;
    held.pop();
    assert!(get(&pool, &Trust::Bundle(bundle("now-fits"))).is_ok());
}

#[test]
fn the_certificates_of_bundle_clients_are_bounded_too() {
    let pool = pool_with(unshared());
    let per = crate::oauth::transport::trust::MAX_BUNDLE_CERTIFICATES;
    // One CA's certificate re-issued: distinct certificates, cheap to make.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = |i: usize, j: usize| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ca-{i}-{j}"));
        params.self_signed(&key).unwrap().pem()
    };
    let big = |i: usize| {
        let pem: String = (0..per).map(|j| cert(i, j)).collect();
        CaBundle::parse(pem.as_bytes(), "ConfigMap big").unwrap()
    };
    let fits = MAX_POOLED_ANCHORS / per;
    let held: Vec<_> = (0..fits)
        .map(|i| get(&pool, &Trust::Bundle(big(i))).unwrap())
        .collect();
    let refused = get(&pool, &Trust::Bundle(big(fits))).unwrap_err();
    assert!(
        matches!(refused, PoolError::Full { clients, anchors, .. } if clients == fits && anchors == fits * per),
        "{refused}"
    );
    // A small bundle still fits in what is left, if anything is.
    let left = MAX_POOLED_ANCHORS - fits * per;
    assert_eq!(
        get(&pool, &Trust::Bundle(bundle("small"))).is_ok(),
        left >= 1
    );
    drop(held);
    assert!(get(&pool, &Trust::Bundle(big(0))).is_ok());
}

/// Security round three, item 3: one namespace naming 256 distinct bundles holds only its
/// share, and another namespace's first bundle is still served; bundle clients held for a
/// namespace count once however many of its OAuthClients use them.
#[test]
fn one_namespace_reaching_its_share_of_bundles_fails_only_its_own_clients() {
    let pool = pool();
    let share = PoolLimits::default().bundles_per_namespace;
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..MAX_BUNDLE_CLIENTS {
        let trust = Trust::Bundle(bundle(&format!("tenant-{i}")));
        match pool.get(&trust, None, "noisy") {
            Ok(claimed) => held.push(claimed),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, error) = refused.expect("the namespace's share is bounded");
    assert_eq!(at, share);
    let message = error.to_string();
    assert!(
        message.contains("namespace noisy")
            && message.contains("--max-ca-bundles-per-namespace=64")
            && message.contains("only this namespace's clients are refused"),
        "{message}"
    );
    // Another namespace's first bundle is served, and so is a bundle the noisy namespace
    // already holds.
    assert!(
        pool.get(&Trust::Bundle(bundle("quiet")), None, "quiet")
            .is_ok()
    );
    // The noisy namespace's clients freed: its share is free again.
    held.clear();
    assert!(
        pool.get(&Trust::Bundle(bundle("later")), None, "noisy")
            .is_ok()
    );
}

#[test]
fn identity_clients_are_bounded_in_all_and_per_namespace_and_share_one_verifier_per_bundle() {
    let limits = PoolLimits {
        identities: 3,
        identities_per_namespace: 2,
        ..PoolLimits::default()
    };
    let pool = pool_with(limits);
    let corp = Trust::Bundle(bundle("corp"));
    let identities = [
        identity("ec-p256-sec1.pem", "ec-p256.crt"),
        identity("rsa-pkcs8.pem", "rsa.crt"),
        identity("ec-p384-sec1.pem", "ec-p384.crt"),
        identity("ed25519-pkcs8.pem", "ed25519.crt"),
    ];
    let a = pool.get(&corp, Some(&identities[0]), "team-a").unwrap();
    let b = pool.get(&corp, Some(&identities[1]), "team-a").unwrap();
    // The same identity again in the same namespace: shared, not counted twice.
    let a2 = pool.get(&corp, Some(&identities[0]), "team-a").unwrap();
    assert!(Arc::ptr_eq(&a.pooled, &a2.pooled));
    let refused = pool.get(&corp, Some(&identities[2]), "team-a").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("--max-tls-identities-per-namespace=2"),
        "{refused}"
    );
    // Another namespace is not refused by team-a's share, but by the global bound.
    let c = pool.get(&corp, Some(&identities[2]), "team-b").unwrap();
    let refused = pool.get(&corp, Some(&identities[3]), "team-b").unwrap_err();
    assert!(
        matches!(
            refused,
            PoolError::IdentitiesFull {
                identities: 3,
                limit: 3,
                ..
            }
        ),
        "{refused}"
    );
    // Every identity client of the bundle verifies with one shared root store.
    assert_eq!(pool.bundle_verifiers(), 1);
    drop((a, a2, b, c));
    assert_eq!(
        pool.bundle_verifiers(),
        0,
        "dropped with its last identity client"
    );
}
