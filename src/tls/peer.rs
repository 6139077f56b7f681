//! The client certificate's identity, from the connection to each request.

use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tower::{Layer, Service};

use super::TlsConnectInfo;
use crate::auth::peer::PeerIdentity;

/// The URI and DNS SANs of the leaf of a client certificate chain that
/// rustls verified (it hands over no chain otherwise).
pub(super) fn identity(chain: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let leaf = chain?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    Some(PeerIdentity {
        uris: cert.valid_uri_names().map(str::to_owned).collect(),
        dns_names: cert.valid_dns_names().map(str::to_owned).collect(),
    })
}

/// Copies a TLS connection's [`TlsConnectInfo`] into each request: its
/// `TcpConnectInfo` (so `remote_addr()` works as over plaintext) and, for
/// a verified client certificate, its [`PeerIdentity`]. Only on the stack
/// when TLS is on.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIdentityLayer;

impl<S> Layer<S> for PeerIdentityLayer {
    type Service = PeerIdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerIdentityService { inner }
    }
}

/// The service of [`PeerIdentityLayer`].
#[derive(Debug, Clone)]
pub struct PeerIdentityService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for PeerIdentityService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(info) = request.extensions().get::<TlsConnectInfo>() {
            let tcp = info.tcp.clone();
            let peer = info.peer.clone();
            let extensions = request.extensions_mut();
            extensions.insert(tcp);
            if let Some(peer) = peer {
                tracing::debug!(
                    uris = %peer.uris.join(","),
                    dns_names = %peer.dns_names.join(","),
                    "mTLS client certificate identity"
                );
                extensions.insert(PeerIdentity::clone(&peer));
            }
        }
        self.inner.call(request)
    }
}
