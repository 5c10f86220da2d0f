//! The double over TLS as `discord.com`: a certificate for `discord.com` (and `127.0.0.1`)
//! signed by a test CA kept in `tls/` ([`CA_PEM`]; its key was thrown away). A client that
//! trusts that CA and resolves `discord.com` to [`crate::Double::tls_addr`] talks to the
//! double at Discord's own base URL, so serenity runs unchanged: no proxy, ratelimiter on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The test CA's certificate (PEM): give it to the client as an extra trusted root.
pub const CA_PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tls/ca.pem");
const CERT_PEM: &[u8] = include_bytes!("../tls/discord.com.pem");
const KEY_PEM: &[u8] = include_bytes!("../tls/discord.com.key");

pub(crate) fn acceptor() -> anyhow::Result<TlsAcceptor> {
    let cert = CertificateDer::from_pem_slice(CERT_PEM)?;
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM)?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener whose connections are TLS, for `axum::serve`.
pub(crate) struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(target: "discord_double", "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(target: "discord_double", "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
