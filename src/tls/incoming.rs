//! The TLS acceptor: TCP connections in, finished TLS connections out.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{TlsMaterial, peer::identity};
use crate::auth::peer::PeerIdentity;

/// The TLS connections of a listener, for tonic's
/// `serve_with_incoming_shutdown`. Handshakes run in tasks of their own,
/// at most `max_handshakes` at once, each bounded by `handshake_timeout`;
/// only connections whose handshake succeeded come out. Dropping it (tonic
/// does when it stops accepting) closes the listener, cancels the
/// handshakes in progress and stops re-reading the files.
#[derive(Debug)]
pub struct TlsIncoming {
    listener: TcpListener,
    material: TlsMaterial,
    handshakes: JoinSet<Option<TlsConnection>>,
    max_handshakes: usize,
    handshake_timeout: Duration,
    _reload: AbortOnDropHandle<()>,
}

impl TlsIncoming {
    /// Serves `material` on `listener`, re-reading its files in the
    /// background. Must run inside a Tokio runtime.
    pub fn new(listener: TcpListener, material: TlsMaterial) -> Self {
        let settings = material.settings();
        Self {
            max_handshakes: settings.max_handshakes.max(1),
            handshake_timeout: settings.handshake_timeout,
            _reload: material.spawn_reload(),
            handshakes: JoinSet::new(),
            listener,
            material,
        }
    }

    fn start_handshake(&mut self, stream: TcpStream) {
        // As on the plaintext path: small gRPC frames must not wait on
        // Nagle and delayed ACKs.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY on an accepted connection");
        }
        let tcp = stream.connect_info();
        let acceptor = TlsAcceptor::from(self.material.current());
        let timeout = self.handshake_timeout;
        self.handshakes.spawn(async move {
            let remote = tcp.remote_addr();
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let peer = identity(tls.get_ref().1.peer_certificates()).map(Arc::new);
                    Some(TlsConnection {
                        inner: tls,
                        info: TlsConnectInfo { tcp, peer },
                    })
                }
                Ok(Err(err)) => {
                    tracing::debug!(
                        remote = remote.map(tracing::field::display),
                        %err,
                        "TLS handshake failed"
                    );
                    None
                }
                Err(_) => {
                    tracing::debug!(
                        remote = remote.map(tracing::field::display),
                        "TLS handshake timed out"
                    );
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
                match done {
                    Ok(Some(connection)) => return Poll::Ready(Some(Ok(connection))),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(%err, "a TLS handshake task failed"),
                }
            }
            // At the bound, wait for a handshake to end (poll_join_next
            // wakes this task); meanwhile connections queue in the backlog.
            if this.handshakes.len() >= this.max_handshakes {
                return Poll::Pending;
            }
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => this.start_handshake(stream),
                // tonic logs it and polls again, as with its TcpIncoming.
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What tonic puts in each request's extensions for a TLS connection;
/// [`PeerIdentityLayer`](super::PeerIdentityLayer) turns it into the
/// `TcpConnectInfo` tonic's `remote_addr()` reads and, for a verified
/// client certificate, a [`PeerIdentity`].
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The TCP addresses.
    pub tcp: TcpConnectInfo,
    /// The verified client certificate's SANs (mTLS), if one was presented.
    pub peer: Option<Arc<PeerIdentity>>,
}

/// One TLS connection whose handshake succeeded.
#[derive(Debug)]
pub struct TlsConnection {
    inner: TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
