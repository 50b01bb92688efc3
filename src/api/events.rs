//! Webhook bodies: a `payment_orchestrator.v1.WebhookEvent` in the proto3
//! JSON mapping, so a receiver reads the same spelling grpcurl shows for
//! the same operation.

use std::{sync::LazyLock, time::SystemTime};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use uuid::Uuid;

use super::{proto, settlements, views};
use crate::{
    domain::{
        dispute::Dispute, operation::Operation, payment::Payment, settlement::ReconciliationIssue,
    },
    webhooks::EventBody,
};

/// The API's descriptors, for the JSON mapping.
static DESCRIPTORS: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).ok());

/// Webhook bodies as the API spells them (the webhook adapter is handed
/// this by `app.rs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventBodies;

impl EventBody for EventBodies {
    fn operation(
        &self,
        id: Uuid,
        kind: &str,
        payment: &Payment,
        operation: &Operation,
        now: SystemTime,
    ) -> String {
        let subject =
            proto::webhook_data::Subject::Operation(views::operation_proto(payment, operation));
        body(id, kind, payment.id, subject, now)
    }

    fn issue(
        &self,
        id: Uuid,
        kind: &str,
        payment: Uuid,
        issue: &ReconciliationIssue,
        now: SystemTime,
    ) -> String {
        let subject = proto::webhook_data::Subject::Issue(settlements::convert::issue(issue));
        body(id, kind, payment, subject, now)
    }

    fn dispute(
        &self,
        id: Uuid,
        kind: &str,
        payment: Uuid,
        dispute: &Dispute,
        now: SystemTime,
    ) -> String {
        let subject = proto::webhook_data::Subject::Dispute(views::dispute(dispute));
        body(id, kind, payment, subject, now)
    }
}

fn body(
    id: Uuid,
    kind: &str,
    payment: Uuid,
    subject: proto::webhook_data::Subject,
    now: SystemTime,
) -> String {
    let event = proto::WebhookEvent {
        id: id.to_string(),
        r#type: kind.to_owned(),
        timestamp: views::timestamp(now),
        data: Some(proto::WebhookData {
            payment_id: payment.to_string(),
            subject: Some(subject),
        }),
    };
    let message = DESCRIPTORS
        .as_ref()
        .and_then(|pool| pool.get_message_by_name("payment_orchestrator.v1.WebhookEvent"))
        .and_then(|descriptor| {
            DynamicMessage::decode(descriptor, event.encode_to_vec().as_slice()).ok()
        });
    // The descriptors are built in: decoding and serializing always succeed.
    message
        .and_then(|message| serde_json::to_string(&message).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_proto3_json_mapping() {
        let json = body(
            Uuid::nil(),
            "operation.final",
            Uuid::nil(),
            proto::webhook_data::Subject::Operation(proto::Operation {
                id: "op".into(),
                status: proto::OperationStatus::Success.into(),
                amount: 12_000,
                ..Default::default()
            }),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], "operation.final");
        assert_eq!(value["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(value["data"]["paymentId"], Uuid::nil().to_string());
        let operation = &value["data"]["operation"];
        assert_eq!(operation["status"], "OPERATION_STATUS_SUCCESS");
        assert_eq!(operation["amount"], "12000", "int64 as a string");
    }
}
