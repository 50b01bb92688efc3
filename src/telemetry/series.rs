//! The application's series: every one prefixed `payment_orchestrator_`
//! and described (HELP) at startup. The RPC series keep go-grpc-prometheus's
//! names (see `api::edge`).

pub const BUILD_INFO: &str = "payment_orchestrator_build_info";
pub const STORE_READY: &str = "payment_orchestrator_store_ready";
pub const OPERATIONS_OPENED: &str = "payment_orchestrator_operations_opened_total";
pub const OPERATIONS_FINAL: &str = "payment_orchestrator_operations_final_total";
pub const OPERATIONS_REQUIRES_REVIEW: &str =
    "payment_orchestrator_operations_requires_review_total";
pub const RESOLVER_QUEUE_DEPTH: &str = "payment_orchestrator_resolver_queue_depth";
pub const RESOLVER_QUEUE_OVERDUE: &str =
    "payment_orchestrator_resolver_queue_oldest_overdue_seconds";
pub const WEBHOOKS_ENQUEUED: &str = "payment_orchestrator_webhooks_enqueued_total";
pub const WEBHOOKS_DELIVERED: &str = "payment_orchestrator_webhooks_delivered_total";
pub const WEBHOOKS_FAILED_ATTEMPTS: &str = "payment_orchestrator_webhooks_failed_attempts_total";
pub const WEBHOOKS_GIVEN_UP: &str = "payment_orchestrator_webhooks_given_up_total";
pub const WEBHOOKS_QUEUE_DEPTH: &str = "payment_orchestrator_webhooks_queue_depth";
pub const WEBHOOKS_QUEUE_OVERDUE: &str =
    "payment_orchestrator_webhooks_queue_oldest_overdue_seconds";
pub const WAITERS: &str = "payment_orchestrator_wait_operation_waiters";
pub const REQUESTS_SHED: &str = "payment_orchestrator_requests_shed_total";
pub const PARTNER_REQUEST_SECONDS: &str = "payment_orchestrator_partner_request_seconds";
pub const PARTNER_CIRCUIT_OPEN: &str = "payment_orchestrator_partner_circuit_open";
pub const RECONCILIATION_ISSUES: &str = "payment_orchestrator_reconciliation_issues_total";
pub const PAYMENTS_FORGOTTEN: &str = "payment_orchestrator_payments_forgotten_total";

/// Describes every series (the HELP lines of `/metrics`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "Always 1; the labels say which build runs.");
    describe_gauge!(
        STORE_READY,
        "1 while the store (Redis) answers, else 0: readiness."
    );
    describe_counter!(OPERATIONS_OPENED, "Operations opened, by kind.");
    describe_counter!(
        PAYMENTS_FORGOTTEN,
        "Finished payments forgotten after their retention (--payment-retention)."
    );
    describe_counter!(
        OPERATIONS_FINAL,
        "Operations that reached a final status, by kind and status."
    );
    describe_counter!(
        OPERATIONS_REQUIRES_REVIEW,
        "Operations flagged requires_review (an operator must act)."
    );
    describe_gauge!(
        RESOLVER_QUEUE_DEPTH,
        "Items on the resolver's due-queue (open operations, expiries, settlement checks)."
    );
    describe_gauge!(
        RESOLVER_QUEUE_OVERDUE,
        Unit::Seconds,
        "How late the earliest due item is."
    );
    describe_counter!(WEBHOOKS_ENQUEUED, "Webhook deliveries queued.");
    describe_counter!(WEBHOOKS_DELIVERED, "Webhook deliveries answered 2xx.");
    describe_counter!(
        WEBHOOKS_FAILED_ATTEMPTS,
        "Webhook attempts that failed (retried or given up)."
    );
    describe_counter!(
        WEBHOOKS_GIVEN_UP,
        "Webhook deliveries given up after their last attempt (kept for an operator)."
    );
    describe_gauge!(WEBHOOKS_QUEUE_DEPTH, "Webhook deliveries waiting.");
    describe_gauge!(
        WEBHOOKS_QUEUE_OVERDUE,
        Unit::Seconds,
        "How late the earliest waiting delivery is."
    );
    describe_gauge!(WAITERS, "WaitOperation calls open on this replica.");
    describe_counter!(
        REQUESTS_SHED,
        "Calls refused RESOURCE_EXHAUSTED by the in-flight limits."
    );
    describe_histogram!(
        PARTNER_REQUEST_SECONDS,
        Unit::Seconds,
        "Partner calls by partner, kind and outcome."
    );
    describe_gauge!(
        PARTNER_CIRCUIT_OPEN,
        "1 while the partner's circuit is open or on trial (its legs walked last), else 0."
    );
    describe_counter!(
        RECONCILIATION_ISSUES,
        "Reconciliation issues found, by partner and kind."
    );
    describe_counter!("grpc_server_started_total", "RPCs started on the server.");
    describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed on the server, by code."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "Response latency of RPCs handled by the server."
    );
}
