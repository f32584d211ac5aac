//! The sending side: one connection per receiving part, credits, and the channels' senders.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use weir_security::{Internal, Stream};

use serde::Serialize;
use weir_core::{Error, Result};

use crate::context::CancelToken;
use crate::output::Message;

use super::proto::{CONNECT_WAIT, HELLO, MAX_DATA_FRAME, REGISTRATION_WAIT, io_error, lock};
use super::wire::encode_message;

/// A sender's credits for one channel.
pub struct Credits {
    available: Mutex<u32>,
    changed: Condvar,
}

struct Connected {
    writer: Mutex<Stream>,
    control: Stream,
}

/// What opening a data connection gave.
enum Opened {
    /// A connection, handshake done.
    Stream(Stream),
    /// The part runs in a worker process at this address.
    Redirect(String),
}

/// The sending side of one connection (job attempt, this part, one receiving part), opened on
/// first use.
pub struct OutLink {
    peer: String,
    hello: [u8; HELLO],
    connected: Mutex<Option<Arc<Connected>>>,
    pub(super) credits: HashMap<u32, Arc<Credits>>,
    open: AtomicUsize,
    broken: AtomicBool,
    cancel: CancelToken,
    security: Arc<Internal>,
}

impl OutLink {
    pub(super) fn new(
        peer: String,
        hello: [u8; HELLO],
        channels: &[u32],
        capacity: u32,
        cancel: CancelToken,
        security: Arc<Internal>,
    ) -> Arc<OutLink> {
        let credits = channels
            .iter()
            .map(|&c| (c, Arc::new(Credits { available: Mutex::new(capacity), changed: Condvar::new() })))
            .collect();
        Arc::new(OutLink {
            peer,
            hello,
            connected: Mutex::new(None),
            credits,
            open: AtomicUsize::new(channels.len()),
            broken: AtomicBool::new(false),
            cancel,
            security,
        })
    }

    fn connection(self: &Arc<Self>) -> Result<Arc<Connected>> {
        let mut guard = lock(&self.connected);
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        // A TaskManager whose part runs in a worker process redirects to the worker, once.
        let mut peer = self.peer.clone();
        let stream = loop {
            match self.open(&peer)? {
                Opened::Stream(s) => break s,
                Opened::Redirect(to) if peer == self.peer => peer = to,
                Opened::Redirect(to) => {
                    return Err(Error::internal(format!("the data server at {peer} redirected again, to {to}")));
                }
            }
        };
        let control = stream.try_clone().map_err(|e| io_error("cannot use", &self.peer, e))?;
        let reader = stream.try_clone().map_err(|e| io_error("cannot use", &self.peer, e))?;
        let link = self.clone();
        std::thread::Builder::new()
            .name("data-credits".into())
            .spawn(move || link.read_credits(reader))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        let c = Arc::new(Connected { writer: Mutex::new(stream), control });
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Connects to `peer` and exchanges the data handshake.
    fn open(&self, peer: &str) -> Result<Opened> {
        let deadline = Instant::now() + CONNECT_WAIT;
        let tcp = loop {
            let addrs: Vec<_> = peer.to_socket_addrs().map_err(|e| io_error("cannot resolve", peer, e))?.collect();
            let mut failure = std::io::Error::other("the address resolves to nothing");
            let mut opened = None;
            for a in &addrs {
                match TcpStream::connect_timeout(a, Duration::from_secs(2)) {
                    Ok(s) => {
                        opened = Some(s);
                        break;
                    }
                    Err(e) => failure = e,
                }
            }
            if let Some(s) = opened {
                break s;
            }
            if Instant::now() >= deadline || self.cancel.is_cancelled() {
                return Err(io_error("cannot open a data connection to the TaskManager at", peer, failure));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = tcp.set_nodelay(true);
        let mut stream = self.security.connect(tcp, &format!("TaskManager at {peer}"))?;
        stream.write_all(&self.hello).map_err(|e| io_error("cannot send the data handshake to", peer, e))?;
        // The receiver answers once its part is deployed: wait for that, but stay cancellable.
        let mut answer = [0u8; 1];
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| io_error("cannot configure", peer, e))?;
        let waited = Instant::now();
        loop {
            match stream.read(&mut answer) {
                Ok(1) => break,
                Ok(_) => {
                    return Err(Error::external(
                        format!("the TaskManager at {peer}"),
                        "it closed the data connection during the handshake",
                        true,
                    ));
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if self.cancel.is_cancelled() {
                        return Err(Error::Cancelled("(data connection closed by cancellation)".into()));
                    }
                    if waited.elapsed() > REGISTRATION_WAIT + Duration::from_secs(5) {
                        return Err(io_error("no data handshake answer from", peer, e));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("no data handshake answer from", peer, e)),
            }
        }
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| io_error("cannot configure", peer, e))?;
        if answer[0] == 0 {
            stream.set_read_timeout(None).map_err(|e| io_error("cannot configure", peer, e))?;
            return Ok(Opened::Stream(stream));
        }
        let mut len = [0u8; 4];
        let mut text = String::from("(no reason given)");
        if stream.read_exact(&mut len).is_ok() {
            let mut bytes = vec![0u8; (u32::from_be_bytes(len) as usize).min(4096)];
            if stream.read_exact(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        match answer[0] {
            2 => Ok(Opened::Redirect(text)),
            _ => Err(Error::external(format!("the TaskManager at {peer} refused a data connection"), text, false)),
        }
    }

    fn read_credits(&self, stream: Stream) {
        let mut reader = std::io::BufReader::new(stream);
        let mut frame = [0u8; 8];
        while reader.read_exact(&mut frame).is_ok() {
            let channel = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let n = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if let Some(c) = self.credits.get(&channel) {
                *lock(&c.available) += n;
                c.changed.notify_all();
            }
        }
        // The receiver closed: no more credit will come.
        self.broken.store(true, Ordering::SeqCst);
        for c in self.credits.values() {
            let _g = lock(&c.available);
            c.changed.notify_all();
        }
    }

    fn take_credit(&self, credits: &Credits) -> Result<()> {
        let mut available = lock(&credits.available);
        while *available == 0 {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled("(data connection closed by cancellation)".into()));
            }
            if self.broken.load(Ordering::SeqCst) {
                return Err(Error::ChannelClosed(format!(
                    "the TaskManager at {} stopped reading this channel before its end of input",
                    self.peer
                )));
            }
            available = credits
                .changed
                .wait_timeout(available, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *available -= 1;
        Ok(())
    }

    fn channel_ended(&self) {
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(c) = lock(&self.connected).as_ref()
        {
            // Everything is sent: the receiver sees the end of the connection after the last frame.
            let _ = c.control.shutdown(Shutdown::Write);
        }
    }

    pub(super) fn abort(&self) {
        self.broken.store(true, Ordering::SeqCst);
        if let Some(c) = lock(&self.connected).as_ref() {
            let _ = c.control.shutdown(Shutdown::Both);
        }
    }
}

/// The sending end of one channel to another process.
pub struct RemoteTx<T> {
    channel: u32,
    link: Arc<OutLink>,
    credits: Arc<Credits>,
    buf: Vec<u8>,
    ended: bool,
    _records: PhantomData<fn(T)>,
}

impl<T: Serialize> RemoteTx<T> {
    /// Sends one message once the channel has credit; the bytes it took on the connection.
    pub fn send(&mut self, m: Message<T>) -> Result<usize> {
        if self.ended {
            return Err(Error::internal("a message after the end of input"));
        }
        self.link.take_credit(&self.credits)?;
        let connection = self.link.connection()?;
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        encode_message(&m, &mut self.buf)?;
        let len = u32::try_from(self.buf.len() - 8)
            .ok()
            .filter(|&l| l as usize <= MAX_DATA_FRAME)
            .ok_or_else(|| Error::Config("a batch too large to send: lower execution.batch-size".into()))?;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4..8].copy_from_slice(&self.channel.to_be_bytes());
        lock(&connection.writer).write_all(&self.buf).map_err(|e| {
            if self.link.cancel.is_cancelled() {
                Error::Cancelled("(data connection closed by cancellation)".into())
            } else {
                io_error("lost the data connection to", &self.link.peer, e)
            }
        })?;
        if matches!(m, Message::EndOfInput) {
            self.ended = true;
            self.link.channel_ended();
        }
        Ok(self.buf.len())
    }
}

impl<T> Drop for RemoteTx<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.link.channel_ended();
        }
    }
}

/// A remote sending end for records of type `T`.
pub fn remote_tx<T>(link: &Arc<OutLink>, channel: u32) -> Result<RemoteTx<T>> {
    let credits = link
        .credits
        .get(&channel)
        .cloned()
        .ok_or_else(|| Error::internal(format!("channel {channel} was not noted on its link")))?;
    Ok(RemoteTx { channel, link: link.clone(), credits, buf: Vec::new(), ended: false, _records: PhantomData })
}
