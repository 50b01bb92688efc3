//! The partners' test doubles as real processes: the Walley and WePay API
//! simulations (`sandbox-partner --api walley|wepay`), driven over HTTP,
//! and the sandbox partner behind `PartnerGatewayService`.
//!
//! The simulator binary belongs to another package (`sandbox-partner`), so
//! this test binary re-runs itself as the server: [`SandboxPartner::spawn`]
//! starts it with the one ignored entry point below and the server's
//! arguments, and the child binds port 0 and says where it listens.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
};

use clap::Parser;
use payment_orchestrator::api::proto;
use serde_json::{Value, json};

use super::{
    deployment::Process,
    harness::{ORDER_REFERENCE, TestServer, authorized_in, leg},
};

/// The child's arguments (after the program name), separated by newlines.
const CHILD_ARGS: &str = "SANDBOX_PARTNER_CHILD_ARGS";
/// What the child prints before its address.
const LISTENING: &str = "sandbox-partner listening on ";

/// A `sandbox-partner` server in a child process, killed on drop.
pub struct SandboxPartner {
    pub process: Process,
    pub address: SocketAddr,
}

impl SandboxPartner {
    /// Starts the server with `args` (e.g. `["--api", "walley"]`); returns
    /// once it listens.
    pub fn spawn(args: &[&str]) -> SandboxPartner {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "api::support::simulator::sandbox_partner_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ARGS, args.join("\n"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sandbox-partner starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Process::adopt(child);
        let mut lines = BufReader::new(stdout).lines();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            // libtest prints the test's name first, on the same line.
            .find_map(|line| line.split_once(LISTENING)?.1.trim().parse().ok())
            .expect("sandbox-partner says where it listens");
        // Drains the rest, so that the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        SandboxPartner { process, address }
    }
}

/// Not a test: the entry point of the `sandbox-partner` processes that
/// [`SandboxPartner::spawn`] starts (it does nothing without their
/// arguments).
#[test]
#[allow(
    clippy::print_stdout,
    reason = "the address on stdout is how the parent learns it"
)]
#[ignore = "the entry point of sandbox-partner child processes, not a test"]
fn sandbox_partner_process() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args = sandbox_partner::Args::parse_from(
        std::iter::once("sandbox-partner").chain(args.split('\n').filter(|a| !a.is_empty())),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("{LISTENING}{}", listener.local_addr()?);
            sandbox_partner::serve(args, listener, std::future::pending()).await
        })
        .expect("sandbox-partner serves");
}

pub struct Simulator {
    _process: Process,
    pub url: String,
    http: reqwest::Client,
}

impl Simulator {
    /// `api` is `walley` or `wepay`; credentials are the binary's defaults.
    pub async fn start(api: &str) -> Simulator {
        let server = SandboxPartner::spawn(&["--api", api]);
        Simulator {
            url: format!("http://{}", server.address),
            _process: server.process,
            http: reqwest::Client::new(),
        }
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

    /// Walley: writes the settlement report of what was captured and
    /// refunded since the last one, spoilt as `faults` say.
    /// Answers what the simulator wrote (the settlements it closed).
    pub async fn settle(&self, faults: Value) -> Value {
        self.post("/_sim/settlements", faults).await
    }

    /// WePay: the card holder's bank takes `amount` (major units, as the
    /// API writes them) of `checkout` back; "0" gives it all back.
    pub async fn charge_back(&self, checkout: i64, amount: &str) {
        let body = json!({ "checkout_id": checkout, "amount": amount });
        self.post("/_sim/charge_back", body).await;
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

/// A leg of `amount` on the Walley order `order` (method `invoice`).
pub fn walley(amount: i64, order: &str) -> proto::SplitLeg {
    leg("walley", "invoice", amount, order)
}

/// A leg of `amount` on the WePay card `card` (method `creditcard`).
pub fn wepay(amount: i64, card: &str) -> proto::SplitLeg {
    leg("wepay", "creditcard", amount, card)
}

/// `minor` units of a two-decimal currency as a JSON number (`5000` is
/// `50.00`), as the simulations take amounts.
pub fn major(minor: i64) -> serde_json::Number {
    format!("{}.{:02}", minor / 100, minor % 100)
        .parse()
        .expect("a number")
}

impl Partners {
    /// Both simulations and a test server with them configured.
    pub async fn serving() -> (Partners, TestServer) {
        let partners = Partners::start().await;
        let server = partners.server().await;
        (partners, server)
    }

    /// A test server with both simulations configured.
    pub async fn server(&self) -> TestServer {
        TestServer::start_configured(&self.config, &[]).await
    }

    /// A Walley order of `amount` EUR with the `extra` fields of its body
    /// (faults, timings), and a MANUAL payment of it, authorized.
    pub async fn walley_payment(
        &self,
        server: &TestServer,
        amount: i64,
        extra: Value,
    ) -> (String, proto::Payment) {
        let Value::Object(extra) = extra else {
            panic!("the extra fields of a Walley order are an object, not {extra}");
        };
        let mut body = json!({ "amount": major(amount), "currency": "EUR" });
        body.as_object_mut()
            .expect("an order body is an object")
            .extend(extra);
        let order = self.walley.order(body).await;
        let payment = authorized_in(server, "EUR", vec![walley(amount, &order)]).await;
        (order, payment)
    }

    /// A WePay card tokenized with `body` (faults), and a MANUAL payment of
    /// `amount` EUR on it, authorized.
    pub async fn wepay_payment(
        &self,
        server: &TestServer,
        amount: i64,
        body: Value,
    ) -> (String, proto::Payment) {
        let card = self.wepay.card(body).await;
        let payment = authorized_in(server, "EUR", vec![wepay(amount, &card)]).await;
        (card, payment)
    }

    /// A Walley order of `walley_amount` EUR and a WePay card, and a MANUAL
    /// payment split over them (Walley first), authorized.
    pub async fn split_payment(
        &self,
        server: &TestServer,
        walley_amount: i64,
        wepay_amount: i64,
    ) -> (String, proto::Payment) {
        let order = self
            .walley
            .order(json!({ "amount": major(walley_amount), "currency": "EUR" }))
            .await;
        let card = self.wepay.card(json!({})).await;
        let split = vec![walley(walley_amount, &order), wepay(wepay_amount, &card)];
        (order, authorized_in(server, "EUR", split).await)
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
country_code = "FI"

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
