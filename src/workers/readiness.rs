//! Readiness follows the store: the named gRPC services turn NOT_SERVING
//! while it does not answer (so a load balancer stops sending them calls),
//! and back; liveness (the empty service name) stays SERVING. The store's
//! state is also a gauge.

use std::{future::Future, time::Duration};

use tonic_health::{ServingStatus, server::HealthReporter};

use super::Steps;
use crate::payments::Payments;

#[derive(Debug, Clone)]
pub struct Readiness {
    payments: Payments,
    health: HealthReporter,
    services: &'static [&'static str],
    ready: bool,
}

impl Readiness {
    /// `services`: the names whose status follows the store (they start
    /// SERVING).
    pub fn new(
        payments: Payments,
        health: HealthReporter,
        services: &'static [&'static str],
    ) -> Self {
        Readiness {
            payments,
            health,
            services,
            ready: true,
        }
    }

    /// One step: asks the store, and tells the health service of a change.
    /// Whether the store answers.
    pub async fn check(&mut self) -> bool {
        let ready = self.payments.store_ready().await;
        metrics::gauge!(crate::telemetry::series::STORE_READY).set(if ready { 1.0 } else { 0.0 });
        if ready != self.ready {
            self.ready = ready;
            tracing::warn!(ready, "store readiness changed");
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in self.services {
                self.health.set_service_status(*service, status).await;
            }
        }
        ready
    }

    /// Steps every `interval` until `shutdown` completes.
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut steps = Steps::new(interval, shutdown);
        while steps.next().await {
            self.check().await;
        }
    }
}
