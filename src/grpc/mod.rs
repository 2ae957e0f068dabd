//! The tonic gRPC service: converts between protobuf messages and the application layer.

pub mod codec;
mod convert;

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::gateway::{CancelRequest, Gateway, PaymentLookup};
use crate::pb;
use crate::pb::payment_service_server::PaymentService;
use crate::providers::RawCallback;
use crate::store::events::EventFilter;
use crate::watch::{Hub, WatchRequest, subscribe};

pub use convert::{payment_to_pb, status_to_pb};

/// `paygate.v1.PaymentService` backed by the [`Gateway`] and the stream [`Hub`].
#[derive(Debug, Clone)]
pub struct PaymentApi {
    gateway: Gateway,
    hub: Hub,
}

impl PaymentApi {
    pub fn new(gateway: Gateway, hub: Hub) -> Self {
        Self { gateway, hub }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PaymentEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn create_checkout(
        &self,
        request: Request<pb::CreateCheckoutRequest>,
    ) -> Result<Response<pb::CreateCheckoutResponse>, Status> {
        let input = convert::checkout_input(request.into_inner());
        let (payment, replayed) = self.gateway.create_checkout(input).await?;
        Ok(Response::new(pb::CreateCheckoutResponse { payment: Some(payment_to_pb(&payment)), replayed }))
    }

    async fn get_payment_status(
        &self,
        request: Request<pb::GetPaymentStatusRequest>,
    ) -> Result<Response<pb::GetPaymentStatusResponse>, Status> {
        let r = request.into_inner();
        let lookup = PaymentLookup::from_request(&r.payment_id, &r.merchant_reference)?;
        let payment = self.gateway.get_status(&lookup, r.refresh).await?;
        Ok(Response::new(pb::GetPaymentStatusResponse { payment: Some(payment_to_pb(&payment)) }))
    }

    async fn verify_callback(
        &self,
        request: Request<pb::VerifyCallbackRequest>,
    ) -> Result<Response<pb::VerifyCallbackResponse>, Status> {
        let r = request.into_inner();
        if r.provider.is_empty() {
            return Err(ApiError::invalid("provider", "is required").into());
        }
        let raw = RawCallback::new(r.headers, r.body, r.query);
        let outcome = self.gateway.handle_callback(&r.provider, &r.account, &raw).await?;
        if outcome.amount_mismatch && !outcome.duplicate {
            return Err(ApiError::AmountMismatch { payment_id: outcome.payment.id.to_string() }.into());
        }
        Ok(Response::new(pb::VerifyCallbackResponse {
            payment: Some(payment_to_pb(&outcome.payment)),
            event_id: outcome.event_id,
            duplicate: outcome.duplicate,
            status_changed: outcome.status_changed,
        }))
    }

    async fn cancel_checkout(
        &self,
        request: Request<pb::CancelCheckoutRequest>,
    ) -> Result<Response<pb::CancelCheckoutResponse>, Status> {
        let r = request.into_inner();
        let payment =
            self.gateway.cancel_checkout(CancelRequest { payment_id: r.payment_id, reason: r.reason }).await?;
        Ok(Response::new(pb::CancelCheckoutResponse { payment: Some(payment_to_pb(&payment)) }))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let page = self.gateway.list_payments(convert::list_request(request.into_inner())).await?;
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: page.payments.iter().map(payment_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchPaymentsStream = EventStream;

    async fn watch_payments(
        &self,
        request: Request<pb::WatchPaymentsRequest>,
    ) -> Result<Response<Self::WatchPaymentsStream>, Status> {
        let r = request.into_inner();
        let watch = WatchRequest {
            filter: EventFilter { payment_ids: r.payment_ids, providers: r.providers },
            after_sequence: r.after_sequence,
        };
        let stream = subscribe(&self.hub, watch).await?;
        let stream = stream.map(|item| item.map(|event| convert::event_to_pb(&event)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
