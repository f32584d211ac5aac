//! TLS on a blocking socket, for the data plane's threads.
//!
//! The data plane shares one socket between threads (a writer, a reader of credits, a closer),
//! which a TLS session cannot be: its state is one object. So a TLS connection is carried by two
//! threads of its own, one per direction, that hold the session, and the code above sees the
//! other end of a local socket pair: a stream it can clone, shut down and time out exactly as it
//! does a TCP socket. Records leave in the order the session made them (the writer lock is taken
//! before the session lock is released).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::Connection;

struct Session {
    tls: Mutex<Connection>,
    /// Writes of TLS records to the socket, in order.
    out: Mutex<TcpStream>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Sends what the session has to send, releasing the session before the socket write.
    fn send(&self, mut tls: MutexGuard<'_, Connection>) -> std::io::Result<()> {
        let mut records = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut records)?;
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut out = lock(&self.out);
        drop(tls);
        out.write_all(&records)
    }
}

/// The application's end of a TLS connection.
#[derive(Debug)]
pub struct TlsPipe {
    app: UnixStream,
    peer: SocketAddr,
}

impl TlsPipe {
    /// Carries `tls` (its handshake done) over `tcp` on two threads.
    pub(crate) fn start(mut tls: Connection, tcp: TcpStream) -> std::io::Result<TlsPipe> {
        // Whatever the application writes is encrypted at once and sent after; flow control is the
        // data plane's credits, not this buffer.
        tls.set_buffer_limit(None);
        let peer = tcp.peer_addr()?;
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        let (app, inner) = UnixStream::pair()?;
        let session = Arc::new(Session { tls: Mutex::new(tls), out: Mutex::new(tcp.try_clone()?) });
        let (reader, inner_in) = (tcp, inner.try_clone()?);
        let s = session.clone();
        std::thread::Builder::new().name("tls-in".into()).spawn(move || inbound(&s, reader, inner_in))?;
        std::thread::Builder::new().name("tls-out".into()).spawn(move || outbound(&session, inner))?;
        Ok(TlsPipe { app, peer })
    }

    /// Another handle to the same connection.
    pub fn try_clone(&self) -> std::io::Result<TlsPipe> {
        Ok(TlsPipe { app: self.app.try_clone()?, peer: self.peer })
    }

    /// Shuts the connection down as `TcpStream::shutdown` does: what was written still goes out,
    /// then the TLS session ends (close_notify) and the socket's writing side closes; reading
    /// stops.
    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        self.app.shutdown(how)
    }

    /// A read timeout, as on a socket.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.app.set_read_timeout(d)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl Read for TlsPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.app.read(buf)
    }
}

impl Write for TlsPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.app.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.app.flush()
    }
}

/// Socket to application: decrypts what arrives.
fn inbound(session: &Session, mut tcp: TcpStream, mut app: UnixStream) {
    let mut buf = vec![0u8; 1 << 16];
    let mut chunk = vec![0u8; 1 << 16];
    let mut plain = Vec::new();
    'connection: loop {
        let n = match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut closed = false;
        let mut data = &buf[..n];
        let mut tls = lock(&session.tls);
        while !data.is_empty() {
            if tls.read_tls(&mut data).is_err() {
                break 'connection;
            }
            if tls.process_new_packets().is_err() {
                // The alert the session queued tells the peer why.
                let _ = session.send(tls);
                break 'connection;
            }
            loop {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => plain.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if session.send(tls).is_err() {
            break;
        }
        if !plain.is_empty() && app.write_all(&plain).is_err() {
            // The application stopped reading (its writing, if any, still drains on the other
            // thread, as a TCP socket's send buffer does after a shutdown).
            let _ = tcp.shutdown(Shutdown::Read);
            break;
        }
        plain.clear();
        if closed {
            break;
        }
    }
    let _ = app.shutdown(Shutdown::Write);
}

/// Application to socket: encrypts what the application writes; its end of writing ends the
/// session.
fn outbound(session: &Session, mut app: UnixStream) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match app.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            let mut tls = lock(&session.tls);
            tls.send_close_notify();
            let _ = session.send(tls);
            let _ = lock(&session.out).shutdown(Shutdown::Write);
            return;
        }
        let mut tls = lock(&session.tls);
        if tls.writer().write_all(&buf[..n]).is_err() || session.send(tls).is_err() {
            // The socket broke: the application sees its reads end.
            let _ = app.shutdown(Shutdown::Both);
            let _ = lock(&session.out).shutdown(Shutdown::Both);
            return;
        }
    }
}
