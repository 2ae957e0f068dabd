//! Black-box tests: the real server on ephemeral ports against a fresh Postgres database per
//! test, providers mocked with wiremock on 127.0.0.1. One test binary (zero2prod style), one
//! module per behaviour area; what every provider must do is the conformance suite, run against
//! each provider's double (`conformance::<provider>::<behaviour>`).

mod common;
mod conformance;

mod api_errors;
mod browser;
mod callbacks;
mod cli;
mod concurrency;
mod embedder;
mod eximpe;
mod exirom;
mod forged_callbacks;
mod hitpay;
mod idempotency;
mod lifecycle;
mod outage;
mod recovery;
mod retention;
mod returns;
mod sandbox_flow;
mod transitions;
mod watch;
mod xpay;
mod xstak;
