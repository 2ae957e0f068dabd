//! Protobuf ⇄ domain conversions.

use chrono::{DateTime, Utc};

use crate::domain::checkout::{Address, CheckoutInput, Customer, LineItem};
use crate::domain::{Payment, PaymentStatus};
use crate::pb;

/// A `CreateCheckoutRequest` as the application's raw input.
pub fn checkout_input(r: pb::CreateCheckoutRequest) -> CheckoutInput {
    CheckoutInput {
        provider: r.provider,
        account: r.account,
        merchant_reference: r.merchant_reference,
        amount: r.amount.map(|m| (m.amount_minor, m.currency)),
        customer: r.customer.map(|c| Customer { name: c.name, email: c.email, phone: c.phone }).unwrap_or_default(),
        return_url: r.return_url,
        cancel_url: r.cancel_url,
        payment_methods: r.payment_methods,
        description: r.description,
        metadata: r.metadata.into_iter().collect(),
        idempotency_key: r.idempotency_key,
        shipping_address: r.shipping_address.map(|a| Address {
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            state: a.state,
            postal_code: a.postal_code,
            country: a.country,
        }),
        line_items: r
            .line_items
            .into_iter()
            .map(|i| LineItem { name: i.name, unit_amount_minor: i.unit_amount_minor, quantity: i.quantity })
            .collect(),
        ttl: r.ttl.map(|d| (d.seconds, d.nanos)),
    }
}

/// A `ListPaymentsRequest` as the application's raw input.
pub fn list_request(r: pb::ListPaymentsRequest) -> crate::gateway::ListRequest {
    crate::gateway::ListRequest {
        statuses: r.statuses.into_iter().map(status_from_pb).collect(),
        providers: r.providers,
        merchant_reference: r.merchant_reference,
        created_after: r.created_after.map(|t| (t.seconds, t.nanos)),
        created_before: r.created_before.map(|t| (t.seconds, t.nanos)),
        page_size: r.page_size,
        page_token: r.page_token,
        owner: None,
    }
}

/// A status from its protobuf enum value; `None` for UNSPECIFIED or an unknown value.
pub fn status_from_pb(value: i32) -> Option<PaymentStatus> {
    match pb::PaymentStatus::try_from(value).ok()? {
        pb::PaymentStatus::Unspecified => None,
        pb::PaymentStatus::Pending => Some(PaymentStatus::Pending),
        pb::PaymentStatus::Processing => Some(PaymentStatus::Processing),
        pb::PaymentStatus::Succeeded => Some(PaymentStatus::Succeeded),
        pb::PaymentStatus::Failed => Some(PaymentStatus::Failed),
        pb::PaymentStatus::Cancelled => Some(PaymentStatus::Cancelled),
        pb::PaymentStatus::Expired => Some(PaymentStatus::Expired),
    }
}

/// The protobuf enum value of a status.
pub fn status_to_pb(s: PaymentStatus) -> pb::PaymentStatus {
    match s {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Processing => pb::PaymentStatus::Processing,
        PaymentStatus::Succeeded => pb::PaymentStatus::Succeeded,
        PaymentStatus::Failed => pb::PaymentStatus::Failed,
        PaymentStatus::Cancelled => pb::PaymentStatus::Cancelled,
        PaymentStatus::Expired => pb::PaymentStatus::Expired,
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos().try_into().unwrap_or(0) }
}

/// A payment as its protobuf message.
pub fn payment_to_pb(p: &Payment) -> pb::Payment {
    pb::Payment {
        id: p.id.to_string(),
        provider: p.provider.clone(),
        account: p.account.clone(),
        merchant_reference: p.merchant_reference.clone(),
        amount: Some(pb::Money { amount_minor: p.amount.minor, currency: p.amount.currency.code().to_owned() }),
        status: status_to_pb(p.status).into(),
        checkout_url: p.checkout_url.clone().unwrap_or_default(),
        provider_checkout_id: p.provider_checkout_id.clone().unwrap_or_default(),
        provider_payment_id: p.provider_payment_id.clone().unwrap_or_default(),
        payment_method: p.payment_method.clone().unwrap_or_default(),
        failure_code: p.failure_code.clone().unwrap_or_default(),
        failure_message: p.failure_message.clone().unwrap_or_default(),
        metadata: p.metadata.clone().into_iter().collect(),
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
        expires_at: p.expires_at.map(timestamp),
        version: p.version,
    }
}

/// A streamed event as its protobuf message.
pub fn event_to_pb(e: &crate::watch::WatchEvent) -> pb::PaymentEvent {
    pb::PaymentEvent {
        sequence: e.sequence,
        payment: Some(payment_to_pb(&e.payment)),
        previous_status: e.previous_status.map_or(pb::PaymentStatus::Unspecified, status_to_pb).into(),
        occurred_at: Some(timestamp(e.occurred_at)),
        source: e.source.clone(),
    }
}
