//! TLS for the gRPC listener and the caller name a client certificate carries.

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::TlsConfig;

/// The server's TLS settings: its identity, and with `client_ca` optional client certificates
/// (callers may still authenticate with a token alone). Err names what is wrong, never the key.
pub fn server_tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, String> {
    if !tls.cert.contains("-----BEGIN CERTIFICATE-----") {
        return Err("cert: not a PEM certificate".into());
    }
    if !tls.key.expose().contains("PRIVATE KEY-----") {
        return Err("key: not a PEM private key".into());
    }
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(tls.cert.as_bytes(), tls.key.expose().as_bytes()));
    if !tls.client_ca.is_empty() {
        if !tls.client_ca.contains("-----BEGIN CERTIFICATE-----") {
            return Err("client_ca: not a PEM certificate".into());
        }
        config = config.client_ca_root(Certificate::from_pem(tls.client_ca.as_bytes())).client_auth_optional(true);
    }
    Ok(config)
}

/// The caller a client certificate (DER) names: its subject common name, else its first DNS
/// subject alternative name.
pub fn certificate_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}
