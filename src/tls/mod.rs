//! TLS, and optionally mTLS, on the gRPC listener (`[server.tls]`).
//!
//! [`TlsIncoming`] turns the bound TCP listener into the stream of TLS
//! connections tonic serves (`serve_with_incoming_shutdown`):
//! - an accepted socket gets TCP_NODELAY, then its handshake runs in a task
//!   of its own, at most `max_handshakes` at once, each within
//!   `handshake_timeout`; a failed, slow or garbage handshake is dropped
//!   (logged at debug) and never blocks accepting;
//! - the rustls server configuration (certificate, key, client verifier)
//!   sits behind a lock ([`TlsMaterial`]): every `reload_interval` the files
//!   are read again and, when their contents changed and parse, a new
//!   configuration replaces the old one at once. New handshakes use it;
//!   open connections keep their sessions. Files that do not parse (a
//!   half-written rotation, a key that does not match) keep the old
//!   configuration and log a warning with the path and the reason, once per
//!   content, never any key material, and count it in
//!   `flowgate.config.reload_failures{kind="tls"}` (the mechanism is
//!   [`crate::reload`]'s, shared with the secret files);
//! - with mTLS the verified client certificate's URI and DNS SANs become
//!   the connection's [`PeerIdentity`](crate::auth::peer::PeerIdentity),
//!   which [`PeerIdentityLayer`] copies into every request's extensions.
//!
//! TLS 1.2 and 1.3, ALPN `h2` only, the ring provider. With `[server.tls]`
//! absent none of this is on the path: the plaintext listener is tonic's
//! own `TcpIncoming`, as before.

mod incoming;
mod material;
mod peer;

pub use incoming::{TlsConnectInfo, TlsConnection, TlsIncoming};
pub use material::TlsMaterial;
pub use peer::{PeerIdentityLayer, PeerIdentityService};
