//! A TCP listener whose connections a handler can sever without answering.
//!
//! `drop_connection` faults must close the socket with no response at all.
//! Each accepted stream shares a [`ConnectionHandle`] with the request
//! (through axum's `ConnectInfo`); killing it makes every further read or
//! write on the socket fail, so hyper abandons the connection before it
//! writes a single byte of the response.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Per-connection kill switch, reachable from handlers via `ConnectInfo`.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHandle {
    killed: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// Makes the connection fail on its next read or write.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Wraps a [`TcpListener`] so every stream carries a [`ConnectionHandle`].
#[derive(Debug)]
pub(crate) struct KillableListener {
    inner: TcpListener,
}

impl KillableListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnectionHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, _peer) = Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let handle = ConnectionHandle {
            killed: Arc::new(AtomicBool::new(false)),
        };
        let io = KillableStream {
            inner: stream,
            killed: handle.killed.clone(),
        };
        (io, handle)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        // Only used by axum for logging; a detached handle is fine.
        self.inner
            .local_addr()
            .map(|_: SocketAddr| ConnectionHandle {
                killed: Arc::new(AtomicBool::new(false)),
            })
    }
}

/// A [`TcpStream`] that errors once its connection was killed.
#[derive(Debug)]
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by emulator fault",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
