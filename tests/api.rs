//! Integration tests over real gRPC: the server runs on 127.0.0.1:0 in this
//! process, with the embedded store, the sandbox partners and a manual clock.

// The harness is test code too: a failed setup should panic loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod api {
    pub mod support;

    mod access;
    mod connectors;
    mod disputes;
    mod dry_runs;
    mod fairness;
    mod faults;
    mod fuzz;
    mod hosted_checkouts;
    mod idempotency;
    mod leg_figures;
    mod money_safety;
    mod operations;
    mod operations_ready;
    mod partner_config;
    mod priority;
    mod reconciliation;
    mod replicas;
    mod replication;
    mod resolution;
    mod retention;
    mod review_queue;
    mod round_trips;
    mod routing;
    mod session_updates;
    mod sessions;
    mod settlements;
    mod simulation;
    mod startup;
    mod store_contract;
    mod stored_instruments;
    mod tls;
    mod traces;
    mod validation;
    mod walkthrough;
    mod webhook_destinations;
    mod webhooks;
}
