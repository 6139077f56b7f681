//! `rediss://` against a real `redis-server --tls-port` on 127.0.0.1 with a
//! CA and server certificate made here: commands, scripts and pub/sub over
//! TLS with the CA trusted; refused with another CA or the system roots
//! (and `check` naming the certificate, or a wrong password, as the cause);
//! and configuration mistakes (a CA file that holds no certificate, a CA
//! without TLS, mixed schemes, `#insecure`) are clear errors.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use flowgate_redis::{
    RedisConfig, RedisConnection, TrustedCas, UnavailableKind,
    redis::{self, PushKind, Script},
    testing::{RedisServer, ServerOptions, ServerTls},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio::sync::mpsc;

/// A CA made by the test, and a server certificate for 127.0.0.1 it signed.
struct TestPki {
    ca_pem: String,
    server: ServerTls,
}

fn test_pki(name: &str) -> TestPki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap()
        .pem();
    TestPki {
        ca_pem,
        server: ServerTls {
            cert_pem: cert,
            key_pem: key.serialize_pem(),
        },
    }
}

fn over_tls(url: String, ca: Option<&str>) -> RedisConfig {
    RedisConfig {
        op_timeout: Duration::from_secs(2),
        tls_ca: ca.map(|pem| TrustedCas::from_pem(pem).unwrap()),
        ..RedisConfig::node(url)
    }
}

#[tokio::test]
async fn rediss_with_the_private_ca_runs_commands_scripts_and_pubsub() {
    let pki = test_pki("flowgate test redis CA");
    let server = RedisServer::start_with(ServerOptions {
        password: Some("tls-secret-pw".into()),
        tls: Some(pki.server.clone()),
    })
    .unwrap();
    let url = server
        .tls_url()
        .unwrap()
        .replace("rediss://", "rediss://:tls-secret-pw@");
    let config = over_tls(url, Some(&pki.ca_pem));
    let redis = RedisConnection::open(&config).unwrap();
    redis.ping().await.unwrap();
    let key = redis.key("counter", "tls");
    let value: i64 = redis
        .script(
            Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])")
                .key(&key)
                .arg(3),
        )
        .await
        .unwrap();
    assert_eq!(value, 3);

    // Pub/sub (RESP3 pushes) over TLS, as the run store's events use it.
    let (sender, mut pushes) = mpsc::unbounded_channel();
    let subscriber = RedisConnection::open_subscriber(&config, sender).unwrap();
    let channel = redis.key("events", "tls");
    subscriber.subscribe(&channel).await.unwrap();
    let _: i64 = redis
        .query(redis::cmd("PUBLISH").arg(&channel).arg("over tls"))
        .await
        .unwrap();
    let message = loop {
        let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
            .await
            .expect("a message within 5 s")
            .expect("the push channel is open");
        if push.kind == PushKind::Message {
            break push.data;
        }
    };
    assert_eq!(
        message[1],
        redis::Value::BulkString(b"over tls".to_vec()),
        "{message:?}"
    );
    // The password is scrubbed from what the handle shows.
    assert!(!format!("{redis:?} {config:?}").contains("tls-secret-pw"));
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_not_in_the_system_roots_is_refused() {
    let pki = test_pki("the server's CA");
    let other = test_pki("some other CA");
    let server = RedisServer::start_with(ServerOptions {
        tls: Some(pki.server.clone()),
        ..ServerOptions::default()
    })
    .unwrap();
    let url = server.tls_url().unwrap();
    for ca in [Some(other.ca_pem.as_str()), None] {
        let redis = RedisConnection::open(&over_tls(url.clone(), ca)).unwrap();
        let error = redis.ping().await.unwrap_err();
        assert!(
            matches!(
                error.kind,
                UnavailableKind::Connection | UnavailableKind::Timeout
            ),
            "{error:?}"
        );
    }
    // The plain port still answers plain clients.
    RedisConnection::open(&RedisConfig::node(server.url()))
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_configuration_mistakes_are_clear_errors() {
    let error = TrustedCas::from_pem("not a certificate\n").unwrap_err();
    assert_eq!(error.kind, UnavailableKind::Config);
    assert!(error.detail.contains("no PEM certificate"), "{error}");
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert_eq!(
        TrustedCas::from_pem(broken).unwrap_err().kind,
        UnavailableKind::Config
    );
    let pki = test_pki("a CA");
    let cas = TrustedCas::from_pem(format!("{}{}", pki.ca_pem, pki.ca_pem)).unwrap();
    assert_eq!(cas.len(), 2);

    let refused = |config: RedisConfig| RedisConnection::open(&config).unwrap_err();
    let error = refused(over_tls("redis://127.0.0.1:1".into(), Some(&pki.ca_pem)));
    assert!(error.detail.contains("only used with rediss://"), "{error}");
    let error = refused(RedisConfig::cluster([
        "rediss://127.0.0.1:1",
        "redis://127.0.0.1:2",
    ]));
    assert!(
        error.detail.contains("mix redis:// and rediss://"),
        "{error}"
    );
    let error = refused(RedisConfig::node("rediss://127.0.0.1:1/#insecure"));
    assert_eq!(error.kind, UnavailableKind::Config);
    assert!(error.detail.contains("#insecure"), "{error}");
}

#[tokio::test]
async fn check_names_the_real_cause_that_operations_see_as_a_timeout() {
    let pki = test_pki("the server's CA");
    let other = test_pki("some other CA");
    let server = RedisServer::start_with(ServerOptions {
        password: Some("the-right-pw".into()),
        tls: Some(pki.server.clone()),
    })
    .unwrap();
    let quick = |config: RedisConfig| RedisConfig {
        op_timeout: Duration::from_millis(500),
        ..config
    };
    // The reconnecting connection keeps retrying inside the operation: a
    // timeout. `check` connects once and says why.
    let untrusted = RedisConnection::open(&quick(over_tls(
        server.tls_url().unwrap(),
        Some(&other.ca_pem),
    )))
    .unwrap();
    assert_eq!(
        untrusted.ping().await.unwrap_err().kind,
        UnavailableKind::Timeout
    );
    let error = untrusted.check().await.unwrap_err();
    assert_eq!(error.kind, UnavailableKind::Connection, "{error:?}");
    assert!(error.detail.contains("certificate"), "{error:?}");

    let url = server.url().replace("redis://", "redis://:the-wrong-pw@");
    let refused = RedisConnection::open(&quick(RedisConfig::node(url))).unwrap();
    let error = refused.check().await.unwrap_err();
    assert_eq!(error.kind, UnavailableKind::Auth, "{error:?}");
    assert!(!format!("{error}").contains("the-wrong-pw"), "{error}");

    let url = server.url().replace("redis://", "redis://:the-right-pw@");
    let fine = RedisConnection::open(&quick(RedisConfig::node(url))).unwrap();
    fine.check().await.unwrap();
}
