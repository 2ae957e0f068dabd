//! Accepted sockets of both servers: one place that sets their options. `TCP_NODELAY` is on, so
//! small gRPC and HTTP/2 writes (a unary answer, one stream event) are sent at once instead of
//! waiting for the peer's delayed ACK (Nagle's algorithm: ~40 ms per exchange).

use axum::serve::ListenerExt;
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// Applies our socket options to an accepted connection.
pub fn configure(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
    }
}

/// The gRPC server's incoming connections, configured.
pub fn grpc_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            configure(stream);
        }
        accepted
    })
}

/// The HTTP server's listener, configured.
pub fn http_listener(listener: TcpListener) -> impl axum::serve::Listener<Io = TcpStream, Addr = std::net::SocketAddr> {
    listener.tap_io(|stream: &mut TcpStream| configure(stream))
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    async fn bound() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn grpc_connections_are_accepted_with_nodelay() {
        let (listener, addr) = bound().await;
        let mut incoming = Box::pin(grpc_incoming(listener));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn http_connections_are_accepted_with_nodelay() {
        let (listener, addr) = bound().await;
        let mut listener = http_listener(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap());
    }
}
