//! The tonic gRPC service: converts between protobuf messages and the application layer.

pub mod codec;
mod convert;
pub mod layer;

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{Access, Authenticator, Permission, certificate_name};
use crate::error::ApiError;
use crate::gateway::{CancelRequest, Gateway, PaymentLookup};
use crate::pb;
use crate::pb::payment_service_server::PaymentService;
use crate::providers::RawCallback;
use crate::store::events::EventFilter;
use crate::watch::{Hub, WatchRequest, subscribe};

pub use convert::{payment_to_pb, status_to_pb};

/// `paygate.v1.PaymentService` backed by the [`Gateway`] and the stream [`Hub`]; every call is
/// authenticated and authorized here (health and reflection are other services and stay open).
#[derive(Debug, Clone)]
pub struct PaymentApi {
    gateway: Gateway,
    hub: Hub,
    auth: Authenticator,
}

impl PaymentApi {
    pub fn new(gateway: Gateway, hub: Hub, auth: Authenticator) -> Self {
        Self { gateway, hub, auth }
    }

    /// Who sent `request`: its bearer token and, over mTLS, its client certificate.
    fn access<T>(&self, request: &Request<T>) -> Result<Access, Status> {
        let authorization = request.metadata().get("authorization").map(|v| v.as_bytes());
        let certificate = request.peer_certs().and_then(|certs| certs.first().and_then(|c| certificate_name(c)));
        self.auth.authenticate(authorization, certificate.as_deref()).map_err(Status::from)
    }
}

/// Runs one RPC's work in its span, which names the caller in logs and traces, and maps its error.
async fn in_rpc_span<T>(
    method: &'static str,
    access: &Access,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, Status> {
    let span = tracing::info_span!("rpc", rpc.method = method, caller = access.caller().unwrap_or("-"));
    work.instrument(span).await.map_err(Status::from)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::PaymentEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn create_checkout(
        &self,
        request: Request<pb::CreateCheckoutRequest>,
    ) -> Result<Response<pb::CreateCheckoutResponse>, Status> {
        let access = self.access(&request)?;
        in_rpc_span("CreateCheckout", &access, async {
            access.require(Permission::Create)?;
            let input = convert::checkout_input(request.into_inner());
            access.require_provider(&input.provider)?;
            let (payment, replayed) = self.gateway.create_checkout(input, access.caller()).await?;
            Ok(Response::new(pb::CreateCheckoutResponse { payment: Some(payment_to_pb(&payment)), replayed }))
        })
        .await
    }

    async fn get_payment_status(
        &self,
        request: Request<pb::GetPaymentStatusRequest>,
    ) -> Result<Response<pb::GetPaymentStatusResponse>, Status> {
        let access = self.access(&request)?;
        in_rpc_span("GetPaymentStatus", &access, async {
            access.require_read(Permission::Read)?;
            let r = request.into_inner();
            let lookup = PaymentLookup::from_request(&r.payment_id, &r.merchant_reference)?;
            let payment = self.gateway.get_status(&lookup, r.refresh, &access.read_scope(), access.caller()).await?;
            Ok(Response::new(pb::GetPaymentStatusResponse { payment: Some(payment_to_pb(&payment)) }))
        })
        .await
    }

    async fn verify_callback(
        &self,
        request: Request<pb::VerifyCallbackRequest>,
    ) -> Result<Response<pb::VerifyCallbackResponse>, Status> {
        let access = self.access(&request)?;
        in_rpc_span("VerifyCallback", &access, async {
            access.require(Permission::Verify)?;
            let r = request.into_inner();
            if r.provider.is_empty() {
                return Err(ApiError::invalid("provider", "is required"));
            }
            access.require_provider(&r.provider)?;
            crate::limits::check_callback(&r.body, r.headers.iter())?;
            let raw = RawCallback::new(r.headers, r.body, r.query);
            let outcome = self.gateway.handle_callback(&r.provider, &r.account, &raw, access.caller()).await?;
            if outcome.amount_mismatch && !outcome.duplicate {
                return Err(ApiError::AmountMismatch { payment_id: outcome.payment.id.to_string() });
            }
            // A relay applies callbacks to any payment of its providers; it sees the payment only
            // when it may read it.
            let readable = access.may_read(outcome.payment.caller.as_deref(), &outcome.payment.provider);
            Ok(Response::new(pb::VerifyCallbackResponse {
                payment: readable.then(|| payment_to_pb(&outcome.payment)),
                event_id: outcome.event_id,
                duplicate: outcome.duplicate,
                status_changed: outcome.status_changed,
            }))
        })
        .await
    }

    async fn cancel_checkout(
        &self,
        request: Request<pb::CancelCheckoutRequest>,
    ) -> Result<Response<pb::CancelCheckoutResponse>, Status> {
        let access = self.access(&request)?;
        in_rpc_span("CancelCheckout", &access, async {
            access.require(Permission::Cancel)?;
            let r = request.into_inner();
            let caller = access.caller().map(str::to_owned);
            let payment = self
                .gateway
                .cancel_checkout(CancelRequest { payment_id: r.payment_id, reason: r.reason, caller })
                .await?;
            Ok(Response::new(pb::CancelCheckoutResponse { payment: Some(payment_to_pb(&payment)) }))
        })
        .await
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let access = self.access(&request)?;
        in_rpc_span("ListPayments", &access, async {
            access.require(Permission::List)?;
            let mut list = convert::list_request(request.into_inner());
            list.owner = access.read_scope().owner().map(str::to_owned);
            let page = self.gateway.list_payments(list).await?;
            Ok(Response::new(pb::ListPaymentsResponse {
                payments: page.payments.iter().map(payment_to_pb).collect(),
                next_page_token: page.next_page_token,
            }))
        })
        .await
    }

    type WatchPaymentsStream = EventStream;

    async fn watch_payments(
        &self,
        request: Request<pb::WatchPaymentsRequest>,
    ) -> Result<Response<Self::WatchPaymentsStream>, Status> {
        let access = self.access(&request)?;
        access.require_read(Permission::Watch)?;
        tracing::debug!(caller = access.caller().unwrap_or("-"), "WatchPayments subscribed");
        let r = request.into_inner();
        let owner = access.read_scope().owner().map(str::to_owned);
        let watch = WatchRequest {
            filter: EventFilter { payment_ids: r.payment_ids, providers: r.providers, owner },
            after_sequence: r.after_sequence,
        };
        let stream = subscribe(&self.hub, watch).await?;
        let stream = stream.map(|item| item.map(|event| convert::event_to_pb(&event)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
