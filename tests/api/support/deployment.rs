//! Real processes: a private Redis (single or cluster), one `sandbox-partner`
//! server (see `simulator`) and N `payment-orchestrator` replicas, all on free loopback ports.

use std::process::{Child, Command, Stdio};

use payment_orchestrator::api::proto::{
    self, payment_service_client::PaymentServiceClient,
    session_service_client::SessionServiceClient,
};
use sandbox_partner::proto::{
    GetLedgerRequest, GetLedgerResponse, sandbox_service_client::SandboxServiceClient,
};
use tonic::transport::Channel;

use super::{
    harness::{Answer, Bearer, DEMO_KEY, Payments, SessionCalls, Sessions, create_request},
    redis_server::{RedisCluster, RedisServer, free_port},
    simulator::SandboxPartner,
    waits::{connected, eventually},
};

/// A child process killed on drop.
pub struct Process(Option<Child>);

impl Process {
    pub fn spawn(command: &mut Command) -> Process {
        Process(Some(command.spawn().expect("process starts")))
    }

    /// A child already started (e.g. with its output piped).
    pub fn adopt(child: Child) -> Process {
        Process(Some(child))
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&self) {
        if let Some(child) = &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit; its exit status.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.take().and_then(|mut child| child.wait().ok())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Redis::Single(server) => vec![("PAYMENT_ORCHESTRATOR_REDIS_URL", server.url())],
            Redis::Cluster(cluster) => vec![
                ("PAYMENT_ORCHESTRATOR_REDIS_URL", cluster.urls().join(",")),
                ("PAYMENT_ORCHESTRATOR_REDIS_CLUSTER", "true".into()),
            ],
        }
    }

    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Redis::Single(server) => server,
            Redis::Cluster(_) => panic!("not a single server"),
        }
    }
}

pub struct Replica {
    process: Process,
    channel: Channel,
    pub metrics_port: u16,
}

impl Replica {
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

pub struct Deployment {
    pub redis: Redis,
    _partner: Process,
    partner_channel: Channel,
    pub replicas: Vec<Replica>,
}

async fn channel(port: u16) -> Channel {
    connected(&format!("http://127.0.0.1:{port}")).await
}

async fn serving(channel: Channel) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel);
    eventually("the replica to be healthy", async || {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        health.check(request).await.is_ok()
    })
    .await;
}

impl Deployment {
    pub async fn start(redis: Redis, replicas: usize) -> Deployment {
        Deployment::start_with(redis, replicas, &[]).await
    }

    /// `extra` environment variables go to every replica.
    pub async fn start_with(redis: Redis, replicas: usize, extra: &[(&str, &str)]) -> Deployment {
        let partner = SandboxPartner::spawn(&[]);
        let partner_channel = channel(partner.address.port()).await;
        let gateway = format!("http://{}", partner.address);
        let partners = format!("ingenico=creditcard@{gateway},illicado=giftcard@{gateway}");
        let mut started = Vec::new();
        for _ in 0..replicas {
            let (port, metrics_port) = (free_port(), free_port());
            let mut command = Command::new(env!("CARGO_BIN_EXE_payment-orchestrator"));
            command
                .env("PAYMENT_ORCHESTRATOR_LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "PAYMENT_ORCHESTRATOR_METRICS_LISTEN",
                    format!("127.0.0.1:{metrics_port}"),
                )
                .env("PAYMENT_ORCHESTRATOR_PARTNERS", &partners)
                .env("PAYMENT_ORCHESTRATOR_DEMO", "true")
                .env("RUST_LOG", "warn")
                .envs(redis.env())
                .envs(extra.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let process = Process(Some(command.spawn().expect("orchestrator starts")));
            let channel = channel(port).await;
            serving(channel.clone()).await;
            started.push(Replica {
                process,
                channel,
                metrics_port,
            });
        }
        Deployment {
            redis,
            _partner: partner.process,
            partner_channel,
            replicas: started,
        }
    }

    /// A MANUAL payment of the split's total, its session created on
    /// replica `on` and submitted on `on + 1`, authorized.
    pub async fn authorized(&self, on: usize, split: Vec<proto::SplitLeg>) -> proto::Payment {
        let total = split.iter().map(|l| l.amount).sum();
        let request = create_request(total, proto::CaptureMode::Manual);
        let session = self.sessions(on).opened(request).await;
        let payment = self.sessions(on + 1).submitted(&session.id, split).await;
        assert_eq!(
            payment.state(),
            proto::PaymentState::Authorized,
            "{payment:#?}"
        );
        payment
    }

    pub fn channel(&self, replica: usize) -> Channel {
        self.replicas[replica % self.replicas.len()].channel.clone()
    }

    pub fn sessions(&self, replica: usize) -> Sessions {
        let channel = self.replicas[replica % self.replicas.len()].channel.clone();
        SessionServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
    }

    pub fn payments(&self, replica: usize) -> Payments {
        let channel = self.replicas[replica % self.replicas.len()].channel.clone();
        PaymentServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
    }

    /// The sandbox partner server's own service (ledgers, prepared
    /// settlements).
    pub fn sandbox(&self) -> SandboxServiceClient<Channel> {
        SandboxServiceClient::new(self.partner_channel.clone())
    }

    pub async fn ledger(&self, partner: &str) -> GetLedgerResponse {
        SandboxServiceClient::new(self.partner_channel.clone())
            .get_ledger(GetLedgerRequest {
                partner: partner.into(),
            })
            .await
            .answer()
    }
}
