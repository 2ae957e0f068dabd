//! Black-box tests: the real server on ephemeral ports against a fresh Postgres database per
//! test, providers mocked with wiremock on 127.0.0.1. One test binary (zero2prod style), one
//! module per behaviour area; what every provider must do is the conformance suite, run against
//! each provider's double (`conformance::<provider>::<behaviour>`).

mod common;
mod conformance;

mod api_errors;
mod auth;
mod browser;
mod callbacks;
mod cancel;
mod cli;
mod concurrency;
mod embedder;
mod eximpe;
mod exirom;
mod forged_callbacks;
mod hitpay;
mod idempotency;
mod lifecycle;
mod limits;
mod list;
mod metrics;
mod migrate;
mod outage;
mod recovery;
mod retention;
mod returns;
mod sandbox_flow;
mod secrets;
mod telemetry;
mod transitions;
mod watch;
mod xpay;
mod xstak;
