//! A caller's W3C trace context reaches the exported spans: the real binary
//! exports over OTLP to a receiver in this test.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use payment_orchestrator::api::proto::{self, session_service_client::SessionServiceClient};
use tonic::{Request, Response, Status, transport::Channel};

use super::{deployment::Process, harness::*, redis_server::free_port};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_is_the_trace_of_the_exported_spans() {
    let receiver = Receiver::default();
    let collector_port = free_port();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(format!("127.0.0.1:{collector_port}").parse().unwrap()),
    );

    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_payment-orchestrator"));
    command
        .env("PAYMENT_ORCHESTRATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("PAYMENT_ORCHESTRATOR_METRICS_LISTEN", "off")
        .env(
            "PAYMENT_ORCHESTRATOR_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info");
    let _server = Process::spawn(&mut command);
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let channel = loop {
        if let Ok(channel) = endpoint.connect().await {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if receiver.trace_ids.lock().unwrap().contains(&wanted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exported span has the caller's trace id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
