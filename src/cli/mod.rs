//! The operator commands that talk to a running paygate over gRPC: `watch`, `list`, `cancel`.
//! They share one way to connect: `--addr` and, when given, `--token-file` (its content, one
//! trailing newline removed, is sent as `authorization: Bearer <token>` on every call).

pub mod cancel;
pub mod list;
pub mod watch;

use std::path::PathBuf;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::pb::payment_service_client::PaymentServiceClient;

/// How a client command reaches paygate.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// gRPC endpoint of paygate.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Send `authorization: Bearer <token>` with the token read from this file (one trailing
    /// newline removed).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// A PaymentService client that adds the caller's credentials to every call.
pub type Client = PaymentServiceClient<InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Bearer <token>` when a token was given.
#[derive(Clone, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Credentials(<redacted>)" } else { "Credentials(none)" })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The token in `text` (a token file's content): one trailing newline (`\n` or `\r\n`) removed.
pub fn token_from_file_text(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.strip_suffix('\r').unwrap_or(text)
}

impl ConnectArgs {
    /// The credentials to send (never printed: errors name the file, not its content).
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let Some(path) = &self.token_file else { return Ok(Credentials(None)) };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let token = token_from_file_text(&text);
        anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("{} holds characters a token cannot have", path.display()))?;
        Ok(Credentials(Some(value)))
    }

    /// Connects with the credentials.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let credentials = self.credentials()?;
        let channel = Channel::from_shared(self.addr.clone())
            .with_context(|| format!("--addr {} is not a URL", self.addr))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        Ok(PaymentServiceClient::with_interceptor(channel, credentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_lose_one_trailing_newline_only() {
        assert_eq!(token_from_file_text("abc\n"), "abc");
        assert_eq!(token_from_file_text("abc\r\n"), "abc");
        assert_eq!(token_from_file_text("abc"), "abc");
        assert_eq!(token_from_file_text("abc\n\n"), "abc\n");
    }

    #[test]
    fn credentials_add_the_bearer_header() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"tok_123\n").unwrap();
        let args = ConnectArgs { addr: "http://127.0.0.1:1".into(), token_file: Some(file.path().into()) };
        let mut credentials = args.credentials().unwrap();
        let request = credentials.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer tok_123");
        assert!(!format!("{credentials:?}").contains("tok_123"));

        let none = ConnectArgs { token_file: None, ..args };
        let request = none.credentials().unwrap().call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}
