//! Builds the application from its configuration and runs the gRPC and HTTP servers until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::config::{EventsConfig, RetentionConfig, Secret};
use crate::gateway::{Gateway, run_check_worker};
use crate::grpc::PaymentApi;
use crate::http::{HttpState, router};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::pb::payment_service_server::PaymentServiceServer;
use crate::providers::{Provider, ProviderContext, Registry};
use crate::store::{Store, settings};
use crate::watch::Hub;

/// A built, bound, not yet running application.
pub struct Application {
    gateway: Gateway,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    /// `server.metrics_addr`'s listener; `None` when metrics are off.
    metrics_listener: Option<TcpListener>,
    public_base_url: String,
    client: reqwest::Client,
    grace: Duration,
    hub: Hub,
    max_streams: u32,
    /// Cancelled when the server stops; ends streams and background jobs.
    stop: CancellationToken,
    events: EventsConfig,
    auth: Authenticator,
    tls: Option<tonic::transport::ServerTlsConfig>,
    retention: RetentionConfig,
}

impl Application {
    /// Connects to the database (creating it when configured to, and applying migrations or,
    /// with `database.migrate_on_start = false`, waiting until they are applied), binds both
    /// listeners and builds the provider registry.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Vec::new()).await
    }

    /// Like [`Application::build`], with extra provider accounts registered besides the configured
    /// ones (test doubles, embedders' own adapters).
    pub async fn build_with(config: Config, extra: Vec<std::sync::Arc<dyn Provider>>) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database).await?;
        let grpc_listener = TcpListener::bind(&config.server.grpc_addr)
            .await
            .with_context(|| format!("cannot bind server.grpc_addr {}", config.server.grpc_addr))?;
        let http_listener = TcpListener::bind(&config.server.http_addr)
            .await
            .with_context(|| format!("cannot bind server.http_addr {}", config.server.http_addr))?;
        let metrics_listener = match config.server.metrics_addr.as_str() {
            "" => None,
            addr => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("cannot bind server.metrics_addr {addr}"))?)
            }
        };
        let public_base_url = public_base_url(&config.server.public_base_url, http_listener.local_addr()?);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the HTTP client")?;
        let ctx = ProviderContext { public_base_url: public_base_url.clone(), client: client.clone() };
        let mut registry = build_registry(&config, &store, &ctx).await?;
        for provider in extra {
            registry.add(provider);
        }
        let auth = Authenticator::new(&config.auth);
        if !auth.enabled() {
            tracing::warn!(
                "no [auth.callers] configured: caller authentication is OFF and every client may call the API"
            );
        }
        let tls = if config.server.tls.cert.is_empty() {
            None
        } else {
            // rustls is built with more than one crypto provider in this tree: pick one.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Some(crate::auth::server_tls_config(&config.server.tls).map_err(|e| anyhow::anyhow!("server.tls: {e}"))?)
        };
        let stop = CancellationToken::new();
        let hub = Hub::start(&store, config.events.stream_pool_size, config.events.stream_buffer, stop.clone()).await?;
        let gateway = Gateway::new(store, registry, config.reconciler.clone());
        gateway.metrics().register_streams(hub.metrics());
        Ok(Self {
            gateway,
            grpc_listener,
            http_listener,
            metrics_listener,
            public_base_url,
            client,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            hub,
            max_streams: config.server.http2_max_concurrent_streams,
            stop,
            events: config.events.clone(),
            auth,
            tls,
            retention: config.retention.clone(),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound `/metrics` address; `None` when `server.metrics_addr` is empty.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn public_base_url(&self) -> &str {
        &self.public_base_url
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The stream hub (subscriber counts, catch-up counters).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests (bounded by the grace period).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<PaymentServiceServer<PaymentApi>>().await;
        // v1 and v1alpha: grpcurl 1.8 and Python's reflection client only speak v1alpha. The
        // google.rpc types let clients decode the ErrorInfo details of errors.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let metrics_addr = self.metrics_addr().map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(grpc = %self.grpc_addr(), http = %self.http_addr(), metrics = %metrics_addr, public_base_url = %self.public_base_url, "paygate listening");

        let grpc_shutdown = shutdown.clone();
        // HTTP/2 keep-alive pings keep idle streams alive through proxies and detect dead peers.
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let api = PaymentServiceServer::new(PaymentApi::new(self.gateway.clone(), self.hub.clone(), self.auth))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let grpc = server
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(self.max_streams))
            .layer(crate::grpc::layer::GrpcTelemetryLayer::new(self.gateway.metrics().clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(crate::listener::grpc_incoming(self.grpc_listener), async move {
                grpc_shutdown.cancelled().await;
                health_reporter.set_not_serving::<PaymentServiceServer<PaymentApi>>().await;
            });
        let http_state = HttpState { gateway: self.gateway.clone(), client: self.client };
        let http = axum::serve(crate::listener::http_listener(self.http_listener), router(http_state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        // Prometheus scrapes on its own port; it stops with the process, after the drain.
        let metrics_server = self.metrics_listener.map(|listener| {
            let state = crate::metrics::server::ScrapeState {
                metrics: self.gateway.metrics().clone(),
                store: self.gateway.store().clone(),
                hub: self.hub.clone(),
            };
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, crate::metrics::server::router(state))
                    .with_graceful_shutdown(stop.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            })
        });
        // Provider checks (lookups, retries, expiry) are rows in Postgres; this replica's worker
        // runs its share of them until shutdown.
        let checker = tokio::spawn(run_check_worker(self.gateway.clone(), shutdown.clone()));
        let pruner =
            tokio::spawn(run_event_pruner(self.gateway.store().clone(), self.events.clone(), shutdown.clone()));
        let retention =
            tokio::spawn(run_retention(self.gateway.store().clone(), self.retention.clone(), shutdown.clone()));
        // Stream positions for committed events: one leader per database, this replica stands by
        // otherwise. It runs until the drain is over, so in-flight writes still get positions.
        let sequencer_stop = CancellationToken::new();
        let sequencer = tokio::spawn(crate::watch::run_sequencer(
            (*self.gateway.store().pool().connect_options()).clone(),
            Duration::from_millis(self.events.sequencer_poll_ms.max(1)),
            sequencer_stop.clone(),
        ));
        // Streams end as soon as shutdown starts, so clients resume on another replica and the
        // drain below is not held up by long-lived streams.
        let stop = self.stop.clone();
        let stop_on_shutdown = shutdown.clone();
        tokio::spawn(async move {
            stop_on_shutdown.cancelled().await;
            stop.cancel();
        });

        let mut grpc = tokio::spawn(grpc);
        let mut http = tokio::spawn(async move { http.await });
        // A server that stops on its own (bind lost, accept error) takes the process down with it,
        // rather than leaving it half-served behind a green readiness probe.
        // `biased`: once shutdown has started, the servers ending is the drain, never an error
        // (without it the select could pick a server that just finished and exit 1).
        let early_exit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            r = &mut grpc => Some(("gRPC", r.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)))),
            r = &mut http => Some(("HTTP", r.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)))),
        };
        if let Some((which, result)) = early_exit {
            shutdown.cancel();
            if let Some(m) = &metrics_server {
                m.abort();
            }
            checker.abort();
            pruner.abort();
            retention.abort();
            sequencer_stop.cancel();
            grpc.abort();
            http.abort();
            let error = result.err().unwrap_or_else(|| anyhow::anyhow!("server ended unexpectedly"));
            return Err(error.context(format!("{which} server stopped")));
        }
        tracing::info!("shutting down: draining in-flight requests");
        let drained = tokio::time::timeout(self.grace, async {
            let (g, h) = tokio::join!(grpc, http);
            g??;
            h??;
            anyhow::Ok(())
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(6), checker).await;
        pruner.abort();
        retention.abort();
        self.stop.cancel();
        sequencer_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), sequencer).await;
        if let Some(m) = metrics_server {
            let _ = tokio::time::timeout(Duration::from_secs(1), m).await;
        }
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("grace period over; stopping with requests in flight");
                Ok(())
            }
        }
    }
}

/// Deletes events past `events.retention_days` every `events.prune_interval_secs`.
async fn run_event_pruner(store: Store, events: EventsConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(events.prune_interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let age = i64::try_from(events.retention_days).ok().and_then(chrono::TimeDelta::try_days);
                let Some(cutoff) = age.and_then(|age| chrono::Utc::now().checked_sub_signed(age)) else { continue };
                let result = async {
                    let mut tx = store.begin().await?;
                    let n = crate::store::events::prune(&mut tx, cutoff).await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(n)
                }
                .await;
                match result {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "pruned old payment events"),
                    Err(e) => tracing::warn!(error = %e, "event pruning failed"),
                }
            }
        }
    }
}

/// Every `retention.interval_secs`: deletes completed idempotency keys, callback receipts and
/// rejected-callback audit rows past their `[retention]` age, in batches. Any replica may run
/// it at the same time as another: the deletes are idempotent.
async fn run_retention(store: Store, retention: RetentionConfig, shutdown: CancellationToken) {
    use crate::store::retention::{BATCH, Kept, delete_older};
    let mut tick = tokio::time::interval(Duration::from_secs(retention.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let jobs = [
        (Kept::CompletedIdempotencyKeys, retention.idempotency_days),
        (Kept::CallbackReceipts, retention.callback_receipts_days),
        (Kept::RejectedCallbacks, retention.rejected_callbacks_days),
    ];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                for (kept, days) in jobs {
                    match delete_older(store.pool(), kept, days, BATCH).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(table = kept.table(), deleted = n, days, "retention: deleted old rows"),
                        Err(e) => tracing::warn!(table = kept.table(), error = %e, "retention job failed; retrying next interval"),
                    }
                }
            }
        }
    }
}

/// `public_base_url`, or `http://` + the bound HTTP address (unspecified host → 127.0.0.1).
pub fn public_base_url(configured: &str, bound: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.trim_end_matches('/').to_owned();
    }
    let host = match bound.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    format!("http://{host}:{}", bound.port())
}

/// Builds the registry of enabled provider accounts from the provider list. Sandbox secrets
/// that are not configured are generated once and kept in Postgres (so every replica and restart
/// signs with the same one) and handed to the sandbox through its account.
async fn build_registry(config: &Config, store: &Store, ctx: &ProviderContext) -> anyhow::Result<Registry> {
    let mut providers = config.providers.clone();
    if providers.sandbox.enabled {
        for (name, account) in &mut providers.sandbox.accounts {
            if account.webhook_secret.as_ref().is_some_and(|s| !s.is_empty()) {
                continue;
            }
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let candidate = format!("whsec_{}", hex::encode(bytes));
            let mut conn = store.pool().acquire().await?;
            let key = format!("sandbox.webhook_secret.{name}");
            let secret = settings::get_or_insert(&mut conn, &key, &candidate).await?;
            let origin = if secret == candidate { "generated and stored" } else { "loaded from the database" };
            tracing::info!(account = %name, "sandbox webhook secret {origin}");
            account.webhook_secret = Some(Secret::new(secret));
        }
    }
    let mut registry = Registry::new();
    providers.register_all(&mut registry, ctx)?;
    Ok(registry)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_from_bound_address() {
        assert_eq!(public_base_url("", "0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(public_base_url("", "[::]:9000".parse().unwrap()), "http://127.0.0.1:9000");
        assert_eq!(public_base_url("", "10.1.2.3:81".parse().unwrap()), "http://10.1.2.3:81");
        assert_eq!(public_base_url("", "[::1]:81".parse().unwrap()), "http://[::1]:81");
        assert_eq!(public_base_url("https://pay.example.com", "0.0.0.0:1".parse().unwrap()), "https://pay.example.com");
    }
}
