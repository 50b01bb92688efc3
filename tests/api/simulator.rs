//! The partner API simulations as real processes: `sandbox-partner --api
//! walley|wepay` on a free port, driven over HTTP.

use std::{process::Command, process::Stdio, time::Duration};

use serde_json::{Value, json};

use super::{
    deployment::Process,
    harness::{ORDER_REFERENCE, TestServer, config_file},
    redis_server::free_port,
};

pub struct Simulator {
    _process: Process,
    pub url: String,
    http: reqwest::Client,
}

impl Simulator {
    /// `api` is `walley` or `wepay`; credentials are the binary's defaults.
    pub async fn start(api: &str) -> Simulator {
        let port = free_port();
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_sandbox-partner"))
                .args(["--api", api, "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let simulator = Simulator {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if simulator
                .http
                .get(format!("{}/_sim/ledger", simulator.url))
                .send()
                .await
                .is_ok()
            {
                return simulator;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the {api} simulator never answered");
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("simulator answers");
        response.json().await.unwrap_or(Value::Null)
    }

    /// Walley: places an order (as the shopper's checkout would), with the
    /// harness sessions' order reference unless the body names one.
    pub async fn order(&self, mut body: Value) -> String {
        if body.get("reference").is_none() {
            body["reference"] = json!(ORDER_REFERENCE);
        }
        self.post("/_sim/orders", body).await["id"]
            .as_str()
            .expect("order placed")
            .to_owned()
    }

    /// WePay: tokenizes a card (as the shopper's browser would).
    pub async fn card(&self, body: Value) -> String {
        self.post("/_sim/credit_cards", body).await["credit_card_id"].to_string()
    }

    /// The next `times` API requests answer `status`.
    pub async fn fail_next(&self, status: u16, times: u32) {
        self.post("/_sim/fail", json!({ "status": status, "times": times }))
            .await;
    }

    pub async fn advance(&self, seconds: u64) {
        self.post("/_sim/clock", json!({ "advance_seconds": seconds }))
            .await;
    }

    pub async fn ledger(&self) -> Value {
        self.http
            .get(format!("{}/_sim/ledger", self.url))
            .send()
            .await
            .expect("ledger")
            .json()
            .await
            .expect("ledger parses")
    }

    /// What the simulation executed of `kind`, as `(on, amount)`.
    pub async fn executed(&self, kind: &str) -> Vec<(String, String)> {
        self.ledger().await["executed"]
            .as_array()
            .expect("executed")
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| {
                (
                    e["on"].as_str().unwrap_or_default().to_owned(),
                    e["amount"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The raw bodies of the requests to paths ending with `suffix`.
    pub async fn bodies(&self, suffix: &str) -> Vec<String> {
        self.ledger().await["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
            .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// How many requests went to paths ending with `suffix`.
    pub async fn requests(&self, suffix: &str) -> usize {
        self.bodies(suffix).await.len()
    }
}

/// Both simulations and a configuration naming them `walley` (method
/// `invoice`) and `wepay` (method `creditcard`), with short timeouts.
pub struct Partners {
    pub walley: Simulator,
    pub wepay: Simulator,
    pub config: String,
}

impl Partners {
    /// A test server with both simulations configured.
    pub async fn server(&self) -> TestServer {
        let flags = config_file(&self.config);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        TestServer::start_with(&flags).await
    }

    pub async fn start() -> Partners {
        Partners::start_with("").await
    }

    /// `extra` is appended to the configuration file.
    pub async fn start_with(extra: &str) -> Partners {
        let (walley, wepay) = tokio::join!(Simulator::start("walley"), Simulator::start("wepay"));
        let dir = std::env::temp_dir();
        let id = uuid::Uuid::now_v7();
        let secret = dir.join(format!("po-walley-secret-{id}"));
        let token = dir.join(format!("po-wepay-token-{id}"));
        std::fs::write(&secret, "demo-secret\n").expect("secret written");
        std::fs::write(&token, "demo-token\n").expect("token written");
        let config = format!(
            r#"
[partners.walley]
kind = "walley"
methods = ["invoice"]
base_url = "{walley}"
client_id = "demo-client"
client_secret_file = "{secret}"
timeout = "1s"
retry_window = "2s"
retry_first_pause = "100ms"

[partners.wepay]
kind = "wepay"
methods = ["creditcard"]
base_url = "{wepay}"
account_id = "1001"
access_token_file = "{token}"
timeout = "1s"
{extra}
"#,
            walley = walley.url,
            wepay = wepay.url,
            secret = secret.display(),
            token = token.display(),
        );
        Partners {
            walley,
            wepay,
            config,
        }
    }
}
