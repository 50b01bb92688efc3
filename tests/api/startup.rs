//! What the service refuses at startup: the demo keys on Redis, and a Redis
//! that may evict keys.

use payment_orchestrator::{api::ApiKeys, app::App, config::Config};

use super::support::redis_server::RedisServer;

fn load(extra: &[&str]) -> anyhow::Result<Config> {
    Config::load_from(
        ["payment-orchestrator", "--listen", "127.0.0.1:0"]
            .iter()
            .chain(extra)
            .map(Into::into)
            .collect(),
    )
}

/// Loads a configuration on Redis that sets every key and secret, with
/// `merchants` (`name:hash` pairs) as its merchant keys, then `extra`.
fn on_redis(merchants: &str, extra: &[&str]) -> anyhow::Result<Config> {
    let hash = ApiKeys::hash("sk_live_x");
    let notifier = format!("*:{hash}");
    let keys = [
        ("--redis-url", "redis://127.0.0.1:1"),
        ("--api-keys", merchants),
        ("--admin-api-keys", &hash),
        ("--partner-notifier-api-keys", &notifier),
        (
            "--webhook-secrets",
            "acme:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "--instrument-secret",
            "a-long-random-secret-of-the-deployment",
        ),
    ];
    let flags = keys.into_iter().flat_map(|(flag, value)| [flag, value]);
    load(&flags.chain(extra.iter().copied()).collect::<Vec<_>>())
}

#[test]
fn on_redis_every_key_setting_must_be_configured_unless_demo() {
    let redis = ["--redis-url", "redis://127.0.0.1:1"];
    let error = load(&redis).unwrap_err().to_string();
    assert!(
        error.contains("api_keys, admin_api_keys, partner_notifier_api_keys, webhook_secrets"),
        "{error}"
    );
    let hash = ApiKeys::hash("sk_live_x");
    let merchant = format!("acme:{hash}");
    let some = load(&[&redis[..], &["--api-keys", &merchant]].concat())
        .unwrap_err()
        .to_string();
    assert!(
        some.contains(
            "admin_api_keys, partner_notifier_api_keys, webhook_secrets, instrument_secret"
        ) && !some.contains(" api_keys,"),
        "only the missing ones are named: {some}"
    );
    assert!(on_redis(&merchant, &[]).unwrap().demo_keys.is_empty());
    assert_eq!(
        load(&[&redis[..], &["--demo"]].concat())
            .unwrap()
            .demo_keys
            .len(),
        5
    );
    // Embedded: the demo keys stand in.
    assert_eq!(load(&[]).unwrap().demo_keys.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_keys_is_refused_unless_allowed() {
    let server = RedisServer::start();
    let url = server.url();
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let policy = ["SET", "maxmemory-policy", "allkeys-lru"];
    redis::cmd("CONFIG")
        .arg(&policy)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let config = load(&["--demo", "--redis-url", &url]).unwrap();
    let error = App::build(config).await.unwrap_err().to_string();
    assert!(error.contains("maxmemory-policy allkeys-lru"), "{error}");
    let allowed = load(&["--demo", "--redis-url", &url, "--redis-allow-eviction"]).unwrap();
    assert!(App::build(allowed).await.is_ok());

    let policy = ["SET", "maxmemory-policy", "noeviction"];
    redis::cmd("CONFIG")
        .arg(&policy)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let config = load(&["--demo", "--redis-url", &url]).unwrap();
    assert!(App::build(config).await.is_ok());
}

/// `--help` and `--version` are answered as errors to the caller (the
/// binary prints them and exits); loading never exits the process.
#[test]
fn help_and_version_are_errors_not_exits() {
    for flag in ["--help", "--version", "-h"] {
        let error =
            Config::load_from(vec!["payment-orchestrator".into(), flag.into()]).expect_err(flag);
        assert!(error.downcast_ref::<clap::Error>().is_some(), "{flag}");
    }
}

#[test]
fn a_partner_whose_call_cannot_fit_a_send_claim_is_refused_with_the_numbers() {
    let error = load(&["--partner-timeout", "40s"]).unwrap_err().to_string();
    assert!(
        error.contains(".timeout:")
            && error.contains("40s")
            && error.contains("80.15s")
            && error.contains("60s"),
        "{error}"
    );
    // The same timeout fits a longer lease.
    assert!(load(&["--partner-timeout", "40s", "--operation-lease", "90s"]).is_ok());
}

#[test]
fn on_redis_a_partner_several_merchants_may_use_must_name_them() {
    let hash = ApiKeys::hash("sk_live_x");
    let merchants = format!("acme:{hash},globex:{hash}");
    let error = on_redis(&merchants, &[]).unwrap_err().to_string();
    assert!(
        error.starts_with("partners.illicado.merchants:") && error.contains("acme, globex"),
        "{error}"
    );
    // Named in the partner tables, it starts.
    let file = super::support::harness::config_file(
        "[partners.cards]\nkind = \"sandbox\"\nmethods = [\"creditcard\"]\nmerchants = [\"acme\"]\n",
    );
    let named = on_redis(&merchants, &[&file[0], &file[1]]);
    assert!(named.is_ok(), "{:?}", named.err());
    // One merchant, or the demo: no list needed.
    assert!(on_redis(&merchants, &["--demo"]).is_ok());
}

#[test]
fn a_replica_wait_must_fit_the_response_timeout_and_be_at_least_a_millisecond() {
    for wait in ["0s", "1s", "2s"] {
        let error = load(&["--redis-wait-replicas", "1", "--redis-wait-timeout", wait])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("redis_wait_timeout:"), "{wait}: {error}");
    }
    assert!(
        load(&[
            "--redis-wait-replicas",
            "1",
            "--redis-wait-timeout",
            "300ms"
        ])
        .is_ok()
    );
}

#[test]
fn a_short_instrument_secret_is_refused() {
    let error = load(&["--instrument-secret", "short"])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("instrument_secret:"), "{error}");
}

/// On the embedded default the callback listener takes the port beside the
/// metrics one; taken, the service starts without it. One given and taken
/// is a startup error.
#[tokio::test]
async fn the_embedded_callback_listener_sits_beside_metrics_and_gives_way_when_taken() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = metrics.local_addr().unwrap().port();
    drop(metrics);
    let metrics_listen = format!("127.0.0.1:{port}");
    let beside = format!("127.0.0.1:{}", port + 1);
    let config = || load(&["--metrics-listen", &metrics_listen]).unwrap();
    let app = App::build(config()).await.unwrap();
    assert_eq!(
        app.callback_addr().map(|a| a.to_string()),
        Some(beside.clone())
    );
    // The port taken (here by the first app's listener).
    let again = App::build(config()).await.unwrap();
    assert_eq!(again.callback_addr(), None);
    let given = load(&["--callback-listen", &beside]).unwrap();
    let error = App::build(given).await.unwrap_err().to_string();
    assert!(error.contains("callback_listen"), "{error}");
    drop(app);
}
