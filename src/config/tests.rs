use super::{values::parse_merchant_priority, *};
use crate::clock::parse_duration;
use sha2::{Digest, Sha256};

#[test]
fn the_demo_key_hash_is_the_hash_of_the_documented_key() {
    assert_eq!(hex::encode(Sha256::digest(b"sk_test_demo")), DEMO_KEY_HASH);
    let config = Config::embedded();
    assert_eq!(config.keys.api_keys[0].sha256, DEMO_KEY_HASH);
    assert_eq!(config.partners.partners.len(), 2);
}

#[test]
fn a_config_file_sits_between_the_defaults_and_the_flags() {
    let path = std::env::temp_dir().join(format!("po-config-{}.conf", std::process::id()));
    std::fs::write(
        &path,
        "# comment\nsession-expiry = \"10m\"\npartner_timeout = \"3s\"\nlisten = \"127.0.0.1:6000\"\n",
    )
    .unwrap();
    let args = |extra: &[&str]| -> Vec<OsString> {
        ["payment-orchestrator", "--config", path.to_str().unwrap()]
            .iter()
            .chain(extra)
            .map(OsString::from)
            .collect()
    };
    let config = Config::load_from(args(&["--partner-timeout", "7s"])).unwrap();
    assert_eq!(
        config.payments.session_expiry,
        Duration::from_secs(600),
        "from the file"
    );
    assert_eq!(
        config.partners.partner_timeout,
        Duration::from_secs(7),
        "the flag wins"
    );
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(
        config.payments.idempotency_ttl,
        Duration::from_secs(86400),
        "default kept"
    );
    std::fs::write(&path, "no-such-setting = 1\n").unwrap();
    let error = Config::load_from(args(&[])).unwrap_err().to_string();
    assert!(
        error.contains("unknown setting `no-such-setting`"),
        "{error}"
    );
    let _ = std::fs::remove_file(&path);
}

fn load_file(content: &str) -> anyhow::Result<Config> {
    let path = std::env::temp_dir().join(format!("po-config-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, content).unwrap();
    let result = Config::load_from(vec![
        "payment-orchestrator".into(),
        "--config".into(),
        path.clone().into_os_string(),
    ]);
    let _ = std::fs::remove_file(&path);
    result
}

#[test]
fn partner_tables_resolve_with_their_kinds_defaults_and_credentials_from_files() {
    let secret = std::env::temp_dir().join(format!("po-secret-{}", uuid::Uuid::now_v7()));
    std::fs::write(&secret, "s3cret\n").unwrap();
    let config = load_file(&format!(
        r#"
[partners.walley]
kind = "walley"
methods = ["invoice"]
currencies = ["SEK", "EUR"]
base_url = "https://api.walleypay.example/"
client_id = "checkout"
client_secret_file = "{secret}"

[partners.wepay]
kind = "wepay"
methods = ["creditcard"]
base_url = "https://wepayapi.example/v2"
account_id = "1001"
access_token_file = "{secret}"
capabilities = {{ partial_refund = false }}

[merchants.demo]
priorities = {{ capture = ["wepay:*", "*:*"] }}
"#,
        secret = secret.display()
    ))
    .unwrap();
    let partners = config.partner_configs().unwrap();
    let _ = std::fs::remove_file(&secret);
    let names: Vec<&str> = partners.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["walley", "wepay"], "the file's partners only");
    let (walley, wepay) = (&partners[0], &partners[1]);
    assert!(walley.capabilities.partial_capture && !walley.capabilities.partial_void);
    assert_eq!(walley.retry.window, Duration::from_secs(10));
    assert_eq!(walley.currencies.len(), 2);
    assert!(!wepay.capabilities.partial_capture && !wepay.capabilities.partial_refund);
    assert!(!wepay.capabilities.concurrent_refunds);
    assert_eq!(
        wepay.authorization_lifetime,
        Duration::from_secs(14 * 86_400)
    );
    match &walley.kind {
        partners::PartnerKind::Walley(settings) => {
            assert_eq!(settings.client_secret.expose(), "s3cret");
            assert_eq!(settings.base_url, "https://api.walleypay.example");
            assert!(!format!("{settings:?}").contains("s3cret"));
        }
        other => panic!("{other:?}"),
    }
    let priorities = config.merchant_priorities();
    assert_eq!(priorities["demo"].capture[0].to_string(), "wepay:*");
}

#[test]
fn a_capability_a_kind_lacks_is_not_granted_by_an_override() {
    let with = |kind: &str, capability: &str| {
        let config = load_file(&format!(
            r#"
[partners.p]
kind = "{kind}"
methods = ["card"]
base_url = "https://partner.example"
account_id = "1001"
access_token_env = "PATH"
client_id = "checkout"
client_secret_env = "PATH"
capabilities = {{ {capability} = true }}
"#
        ));
        let config = config.map_err(|e| e.to_string())?;
        config
            .partner_configs()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let refused = with("wepay", "concurrent_refunds").unwrap_err();
    assert!(
        refused.contains("partners.p.capabilities.concurrent_refunds"),
        "{refused}"
    );
    assert!(with("walley", "partial_void").is_err());
    // Granting what the kind has anyway changes nothing.
    assert_eq!(with("walley", "partial_capture"), Ok(()));
}

#[test]
fn an_invalid_partner_table_stops_startup_naming_the_setting() {
    let walley = |extra: &str| {
        format!(
            "[partners.walley]\nkind = \"walley\"\nmethods = [\"invoice\"]\n\
             base_url = \"https://w.example\"\nclient_id = \"c\"\n{extra}"
        )
    };
    for (content, setting) in [
        (
            "[partners.x]\nkind = \"paypal\"\nmethods = [\"m\"]\n".to_owned(),
            "partners.x.kind",
        ),
        (
            "[partners.x]\nkind = \"sandbox\"\nmethods = []\n".to_owned(),
            "partners.x.methods",
        ),
        (
            "[partners.x]\nkind = \"grpc\"\nmethods = [\"m\"]\n".to_owned(),
            "partners.x.url",
        ),
        (
            walley("client_secret = \"inline\"\n"),
            "partners.walley.client_secret",
        ),
        (walley(""), "partners.walley.client_secret_env"),
        (
            walley("client_secret_env = \"PO_TEST_SURELY_UNSET_VARIABLE\"\n"),
            "partners.walley.client_secret_env",
        ),
        (
            walley("client_secret_file = \"/nonexistent/secret\"\n"),
            "partners.walley.client_secret_file",
        ),
        (
            "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\ncurrencies = [\"EURO\"]\n"
                .to_owned(),
            "partners.x.currencies",
        ),
        (
            "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\ntimeout = \"soon\"\n".to_owned(),
            "partners.x.timeout",
        ),
        (
            "[partners.x]\nkind = \"sandbox\"\nmethods = [\"m\"]\nretry_window = \"2m\"\n"
                .to_owned(),
            "partners.x.retry_window",
        ),
    ] {
        let error = load_file(&content).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{setting}:")),
            "{setting}: {error}"
        );
    }
}

#[test]
fn durations_and_partner_specs_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
    assert!(parse_duration("soon").is_err());
    assert!("bad spec".parse::<PartnerSpec>().is_err());
    let spec: PartnerSpec = "adyen=creditcard|paypal".parse().unwrap();
    assert_eq!(spec.methods, vec!["creditcard", "paypal"]);
}

#[test]
fn merchant_priorities_override_one_kind_each() {
    let config = Config::parse_from([
        "payment-orchestrator",
        "--merchant-priorities",
        "demo:capture=*:creditcard|*:*;demo:void=illicado:*",
    ]);
    let demo = &config.merchant_priorities()["demo"];
    assert_eq!(demo.capture[0].to_string(), "*:creditcard");
    assert_eq!(demo.void[0].to_string(), "illicado:*");
    assert_eq!(demo.refund, config.priorities().refund, "unchanged");
    assert!(parse_merchant_priority("demo:authorize=*:*").is_err());
}

#[test]
fn circuits_take_the_flags_defaults_and_each_partner_table_may_change_them() {
    let config = load_file(
        "circuit-failures = 7\ncircuit-cool-down = \"2m\"\n\
         [partners.cards]\nkind = \"sandbox\"\nmethods = [\"creditcard\"]\n\
         circuit = { failures = 2, cool_down = \"10s\" }\n\
         [partners.gifts]\nkind = \"sandbox\"\nmethods = [\"giftcard\"]\n\
         [partners.slow]\nkind = \"sandbox\"\nmethods = [\"invoice\"]\n\
         circuit = { enabled = false }\n",
    )
    .unwrap();
    let partners = config.partner_configs().unwrap();
    let circuit = |name: &str| {
        partners
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.circuit)
            .unwrap()
    };
    assert_eq!(
        (circuit("cards").failures, circuit("cards").cool_down),
        (2, Duration::from_secs(10))
    );
    assert_eq!(
        (circuit("gifts").failures, circuit("gifts").cool_down),
        (7, Duration::from_secs(120))
    );
    assert!(circuit("gifts").enabled);
    assert!(!circuit("slow").enabled);
    // On by default; `--circuit-failures 0` turns them off unless a table
    // turns one on (with the default count).
    let embedded = Config::embedded().partner_configs().unwrap();
    assert!(
        embedded
            .iter()
            .all(|p| p.circuit.enabled && p.circuit.failures == 5)
    );
    let off = load_file(
        "circuit-failures = 0\n[partners.cards]\nkind = \"sandbox\"\nmethods = [\"creditcard\"]\n\
         circuit = { enabled = true }\n",
    )
    .unwrap();
    let cards = off.partner_configs().unwrap()[0].circuit;
    assert!(cards.enabled);
    assert_eq!(cards.failures, 5);
    // Zero failures in a table is refused, naming the setting.
    let error = load_file(
        "[partners.cards]\nkind = \"sandbox\"\nmethods = [\"creditcard\"]\n\
         circuit = { failures = 0 }\n",
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(error.contains("partners.cards.circuit.failures"), "{error}");
}
