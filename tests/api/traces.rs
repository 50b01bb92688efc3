//! A caller's W3C trace context reaches the exported spans: the real binary
//! exports over OTLP to a receiver in this test.

use std::{
    process::Command,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use payment_orchestrator::api::proto::{self, session_service_client::SessionServiceClient};
use tonic::{Request, Response, Status};

use super::support::{deployment::Process, harness::*, redis_server::free_port, waits::connected};

#[derive(Clone, Default)]
struct Receiver {
    trace_ids: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut ids = self.trace_ids.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                ids.extend(scope.spans.into_iter().map(|span| span.trace_id));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP trace collector serving `service` on a free port; the port.
fn collector<T: TraceService>(service: TraceServiceServer<T>) -> u16 {
    let port = free_port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(format!("127.0.0.1:{port}").parse().unwrap()),
    );
    port
}

/// The real binary on a free port (no metrics, spans batched every 100 ms,
/// info logs), to be given its exporter's settings; the port.
fn orchestrator() -> (u16, Command) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_payment-orchestrator"));
    command
        .env("PAYMENT_ORCHESTRATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYMENT_ORCHESTRATOR_METRICS_LISTEN", "off")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info");
    (port, command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_is_the_trace_of_the_exported_spans() {
    let receiver = Receiver::default();
    let collector_port = collector(TraceServiceServer::new(receiver.clone()));
    let (port, mut command) = orchestrator();
    command.env(
        "PAYMENT_ORCHESTRATOR_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{collector_port}"),
    );
    let _server = Process::spawn(&mut command);
    let channel = connected(&format!("http://127.0.0.1:{port}")).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(create_request(1000, proto::CaptureMode::Manual));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    SessionServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
        .create_session(request)
        .await
        .unwrap();

    let wanted = hex::decode(trace_id).unwrap();
    eventually("an exported span with the caller's trace id", async || {
        receiver.trace_ids.lock().unwrap().contains(&wanted)
    })
    .await;
}

#[derive(Clone, Default)]
struct Resources {
    /// (service.name, service.version) of each export.
    services: Arc<Mutex<Vec<(String, String)>>>,
    trace_ids: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Resources {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for resource in request.into_inner().resource_spans {
            let attribute = |key: &str| {
                resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == key)
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default()
            };
            self.services
                .lock()
                .unwrap()
                .push((attribute("service.name"), attribute("service.version")));
            let mut ids = self.trace_ids.lock().unwrap();
            for scope in resource.scope_spans {
                ids.extend(
                    scope
                        .spans
                        .into_iter()
                        .map(|span| hex::encode(span.trace_id)),
                );
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// As the OpenTelemetry Operator runs it: only the standard variables. The
/// spans arrive under the given service name with our version, and the
/// call's JSON log line carries the trace id of its span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_otel_environment_is_honoured_and_logs_carry_the_trace_id() {
    use std::io::BufRead;
    let receiver = Resources::default();
    let collector_port = collector(TraceServiceServer::new(receiver.clone()));
    let (port, mut command) = orchestrator();
    command
        .env("PAYMENT_ORCHESTRATOR_LOG_FORMAT", "json")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        .env("OTEL_SERVICE_NAME", "checkout-payments")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("starts");
    let stdout = child.stdout.take().unwrap();
    let _server = super::support::deployment::Process::adopt(child);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::spawn({
        let lines = lines.clone();
        move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        }
    });
    let channel = connected(&format!("http://127.0.0.1:{port}")).await;
    SessionServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
        .create_session(create_request(1000, proto::CaptureMode::Manual))
        .await
        .unwrap();

    let mut trace_id = None;
    eventually("a JSON log line with an exported trace id", async || {
        let logged: Option<String> = lines.lock().unwrap().iter().find_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            let span = json.get("span")?;
            (span.get("method")?.as_str()?
                == "/payment_orchestrator.v1.SessionService/CreateSession")
                .then(|| span.get("trace_id")?.as_str().map(str::to_owned))?
        });
        let exported = receiver.trace_ids.lock().unwrap().clone();
        trace_id = logged.filter(|id| exported.contains(id));
        trace_id.is_some()
    })
    .await;
    let trace_id = trace_id.expect("found");
    assert_eq!(trace_id.len(), 32);
    let services = receiver.services.lock().unwrap().clone();
    let (name, version) = &services[0];
    assert!(name.contains("checkout-payments"), "{services:?}");
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{services:?}");
}
