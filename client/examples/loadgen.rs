//! Load generator for payment-orchestrator: a closed-loop tonic client.
//!
//! Creates a pool of authorized payments, then runs `--concurrency` tasks,
//! each with one request in flight, spread over `--connections` HTTP/2
//! channels (and over every `--target`), for `--warmup` (not recorded) and
//! `--duration` (recorded). Every mutating request has a unique idempotency
//! key. Prints throughput, latency percentiles and errors by gRPC code, as one
//! summary line (`rps=… p50_us=…`, the format of grpc-limit's limit-load) and
//! one line per operation.
//!
//! Operations (`--mix`, weights): `capture` (1 minor unit on a pool payment),
//! `get` (GetPayment), `checkout` (CreateSession + SubmitSession, 2 calls),
//! `lifecycle` (a checkout of 2 legs, a capture of the whole and a refund:
//! 4 calls — what a payment typically goes through, and after which nothing
//! of it is open; used to measure storage per payment and retention).
//! `--payments 0` makes no pool (for checkouts and lifecycles alone).
//!
//! Like wrk or h2load, the measured calls are not parsed: their answer is
//! the gRPC status (a response body is read and dropped). On a small machine
//! the load generator shares the cores with the service, so parsing large
//! responses here would be measured as the service's slowness.

// The report on stdout is this tool's output.
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use payment_orchestrator_client::{
    idempotency_key,
    proto::{self, session_service_client::SessionServiceClient},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

/// `3s`, `500ms`, `2m`: the service's duration grammar, as far as a run needs.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?}: expected a number with ms, s or m");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// Requests encoded with prost; responses read and dropped.
#[derive(Debug)]
struct Unparsed<T>(std::marker::PhantomData<T>);

impl<T: prost::Message + Send + 'static> Codec for Unparsed<T> {
    type Encode = T;
    type Decode = ();
    type Encoder = Unparsed<T>;
    type Decoder = Unparsed<T>;

    fn encoder(&mut self) -> Self::Encoder {
        Unparsed(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        Unparsed(std::marker::PhantomData)
    }
}

impl<T: prost::Message> Encoder for Unparsed<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

impl<T> Decoder for Unparsed<T> {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        use bytes::Buf;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// One unary call whose response is not parsed.
async fn unparsed<T: prost::Message + Send + 'static>(
    channel: &Channel,
    path: &'static str,
    request: Request<T>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    grpc.unary(
        request,
        PathAndQuery::from_static(path),
        Unparsed::<T>(std::marker::PhantomData),
    )
    .await
    .map(drop)
}

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Closed-loop load generator for payment-orchestrator"
)]
struct Args {
    /// Orchestrator address(es), comma separated; connections are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:50051")]
    target: Vec<String>,
    /// API key of the merchant to act as.
    #[arg(long, default_value = "sk_test_demo")]
    api_key: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections (round robin).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Warm-up, not recorded.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measured window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Operation weights, e.g. `capture=1,get=1` or `checkout=1`.
    #[arg(long, default_value = "capture=1,get=1")]
    mix: String,
    /// Payments created before the run (captures spread over them).
    #[arg(long, default_value_t = 2000)]
    payments: usize,
    /// Captures made on every pool payment before the run, so that the run
    /// works on payments with that much history (the flat-cost check).
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Payment token of the card leg (e.g. `latency=5ms` for a slow partner).
    #[arg(long, default_value = "tok_visa_4242")]
    card_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Capture,
    Get,
    Checkout,
    Lifecycle,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Capture => "capture",
            Op::Get => "get",
            Op::Checkout => "checkout",
            Op::Lifecycle => "lifecycle",
        }
    }
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',') {
        let (name, weight) = part
            .split_once('=')
            .context("mix entries look like op=weight")?;
        let op = match name {
            "capture" => Op::Capture,
            "get" => Op::Get,
            "checkout" => Op::Checkout,
            "lifecycle" => Op::Lifecycle,
            other => bail!("unknown operation {other:?} (capture, get, checkout, lifecycle)"),
        };
        mix.push((op, weight.parse().context("weights are whole numbers")?));
    }
    if mix.iter().all(|(_, w)| *w == 0) {
        bail!("the mix has no weight");
    }
    Ok(mix)
}

#[derive(Clone)]
struct Client {
    channel: Channel,
    sessions: SessionServiceClient<Channel>,
    auth: MetadataValue<Ascii>,
}

impl Client {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        request
    }

    async fn checkout(
        &mut self,
        amount: i64,
        card_token: &str,
    ) -> Result<proto::Payment, tonic::Status> {
        let session = self
            .sessions
            .create_session(self.request(proto::CreateSessionRequest {
                idempotency_key: idempotency_key(),
                order_reference: format!("load-{}", idempotency_key()),
                amount: amount * 2,
                currency: "EUR".into(),
                capture_mode: proto::CaptureMode::Manual.into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let leg = |partner: &str, method: &str, token: &str| proto::SplitLeg {
            partner: partner.into(),
            method: method.into(),
            amount,
            payment_token: token.into(),
            ..Default::default()
        };
        let request = self.request(proto::SubmitSessionRequest {
            session_id: session.id,
            idempotency_key: idempotency_key(),
            split: vec![
                leg("ingenico", "creditcard", card_token),
                leg("illicado", "giftcard", "tok_gift"),
            ],
        });
        Ok(self.sessions.submit_session(request).await?.into_inner())
    }

    async fn run(&mut self, op: Op, payment: &str, card_token: &str) -> Result<(), tonic::Status> {
        match op {
            Op::Capture => {
                let request = self.request(proto::CaptureRequest {
                    payment_id: payment.to_owned(),
                    idempotency_key: idempotency_key(),
                    amount: Some(1),
                    ..Default::default()
                });
                unparsed(
                    &self.channel,
                    "/payment_orchestrator.v1.PaymentService/Capture",
                    request,
                )
                .await
            }
            Op::Get => {
                let request = self.request(proto::GetPaymentRequest {
                    payment_id: payment.to_owned(),
                });
                unparsed(
                    &self.channel,
                    "/payment_orchestrator.v1.PaymentService/GetPayment",
                    request,
                )
                .await
            }
            Op::Checkout => self.checkout(10_000, card_token).await.map(drop),
            Op::Lifecycle => {
                let payment = self.checkout(10_000, card_token).await?;
                let capture = self.request(proto::CaptureRequest {
                    payment_id: payment.id.clone(),
                    idempotency_key: idempotency_key(),
                    amount: Some(20_000),
                    ..Default::default()
                });
                let capture_path = "/payment_orchestrator.v1.PaymentService/Capture";
                unparsed(&self.channel, capture_path, capture).await?;
                let refund = self.request(proto::RefundRequest {
                    payment_id: payment.id,
                    idempotency_key: idempotency_key(),
                    amount: Some(5_000),
                    ..Default::default()
                });
                let refund_path = "/payment_orchestrator.v1.PaymentService/Refund";
                unparsed(&self.channel, refund_path, refund).await
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: BTreeMap<Op, Vec<u64>>,
    /// By operation and gRPC code (as its number: `Code` is not `Ord`).
    errors: BTreeMap<(Op, i32), u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank; integer arithmetic on per-mille avoids float rounding surprises.
    let rank = ((p * 10.0) as usize * sorted.len()).div_ceil(1000).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn summary(label: &str, latencies: &mut [u64], errors: u64, seconds: f64) -> String {
    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0
    } else {
        latencies.iter().sum::<u64>() / latencies.len() as u64
    };
    format!(
        "{label} rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={} ok={} errors={}",
        latencies.len() as f64 / seconds,
        percentile(latencies, 50.0),
        percentile(latencies, 90.0),
        percentile(latencies, 99.0),
        percentile(latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
        mean,
        latencies.len(),
        errors,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = parse_mix(&args.mix)?;
    let auth: MetadataValue<Ascii> = format!("Bearer {}", args.api_key)
        .parse()
        .context("the API key must be ASCII")?;
    let mut clients = Vec::new();
    for index in 0..args.connections.max(1) {
        let target = &args.target[index % args.target.len()];
        let channel = Channel::from_shared(target.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        clients.push(Client {
            sessions: SessionServiceClient::new(channel.clone()),
            channel,
            auth: auth.clone(),
        });
    }

    // Setup: a pool of authorized payments, created concurrently.
    let started = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let mut setup = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency.min(args.payments).max(1) {
        let mut client = clients[worker % clients.len()].clone();
        let (created, total, token) = (created.clone(), args.payments, args.card_token.clone());
        setup.spawn(async move {
            let mut ids = Vec::new();
            while created.fetch_add(1, Ordering::Relaxed) < total {
                // Large legs: captures of one minor unit never run out.
                ids.push(client.checkout(1_000_000_000, &token).await?.id);
            }
            Ok::<_, tonic::Status>(ids)
        });
    }
    let mut pool = Vec::new();
    while let Some(ids) = setup.join_next().await {
        pool.extend(ids??);
    }
    eprintln!(
        "setup: {} payments in {:.1}s",
        pool.len(),
        started.elapsed().as_secs_f64()
    );
    if args.history > 0 {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(pool.clone());
        let mut fill = tokio::task::JoinSet::new();
        for worker in 0..args.concurrency.max(1) {
            let mut client = clients[worker % clients.len()].clone();
            let (next, pool, token) = (next.clone(), pool.clone(), args.card_token.clone());
            let total = pool.len() * args.history;
            fill.spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return Ok::<_, tonic::Status>(());
                    }
                    client
                        .run(Op::Capture, &pool[index % pool.len()], &token)
                        .await?;
                }
            });
        }
        while let Some(done) = fill.join_next().await {
            done??;
        }
        eprintln!(
            "history: {} captures on each payment in {:.1}s",
            args.history,
            started.elapsed().as_secs_f64()
        );
    }
    let pool = Arc::new(pool);

    let total_weight: u32 = mix.iter().map(|(_, w)| w).sum();
    let warmup_end = Instant::now() + args.warmup;
    let end = warmup_end + args.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let (pool, mix, next, token) = (
            pool.clone(),
            mix.clone(),
            next.clone(),
            args.card_token.clone(),
        );
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            let mut tally = Tally::default();
            loop {
                let now = Instant::now();
                if now >= end {
                    return tally;
                }
                let mut pick = rng.random_range(0..total_weight);
                let op = mix
                    .iter()
                    .find(|(_, w)| {
                        let hit = pick < *w;
                        pick = pick.saturating_sub(*w);
                        hit
                    })
                    .map_or(Op::Get, |(op, _)| *op);
                // `--payments 0`: no pool (for mixes of checkouts and
                // lifecycles alone, which make their own payments).
                let turn = next.fetch_add(1, Ordering::Relaxed);
                let payment = pool
                    .get(turn % pool.len().max(1))
                    .map_or("", String::as_str);
                let result = client.run(op, payment, &token).await;
                if now < warmup_end {
                    continue;
                }
                match result {
                    Ok(()) => tally
                        .latencies_us
                        .entry(op)
                        .or_default()
                        .push(now.elapsed().as_micros() as u64),
                    Err(status) => {
                        *tally.errors.entry((op, status.code().into())).or_default() += 1
                    }
                }
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(part) = tasks.join_next().await {
        let part = part?;
        for (op, mut latencies) in part.latencies_us {
            tally
                .latencies_us
                .entry(op)
                .or_default()
                .append(&mut latencies);
        }
        for (key, count) in part.errors {
            *tally.errors.entry(key).or_default() += count;
        }
    }

    let seconds = args.duration.as_secs_f64();
    let mut all: Vec<u64> = tally.latencies_us.values().flatten().copied().collect();
    let errors: u64 = tally.errors.values().sum();
    let line = summary("all", &mut all, errors, seconds);
    println!(
        "{line} conc={} conns={} mix={}",
        args.concurrency, args.connections, args.mix
    );
    for (op, latencies) in &mut tally.latencies_us {
        let op_errors = tally
            .errors
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|(_, n)| n)
            .sum();
        println!("{}", summary(op.name(), latencies, op_errors, seconds));
    }
    for ((op, code), count) in &tally.errors {
        println!(
            "error op={} code={:?} count={count}",
            op.name(),
            Code::from_i32(*code)
        );
    }
    Ok(())
}
