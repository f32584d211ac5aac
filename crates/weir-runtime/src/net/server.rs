//! The receiving side: a process's data server, inbound connections, and credits going back.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use weir_core::{Error, JobId, Result};
use weir_security::{Internal, Stream};

use super::proto::{DATA_PROTOCOL_VERSION, HELLO, MAGIC, MAX_DATA_FRAME, REGISTRATION_WAIT, io_error, lock};
use super::wire::Decoder;

/// The receiving side's way back to a sender: credits for one connection.
#[derive(Default)]
pub struct CreditLink {
    stream: Mutex<Option<Stream>>,
}

impl CreditLink {
    fn grant(&self, channel: u32, n: u32) {
        let mut frame = [0u8; 8];
        frame[..4].copy_from_slice(&channel.to_be_bytes());
        frame[4..].copy_from_slice(&n.to_be_bytes());
        if let Some(s) = lock(&self.stream).as_mut() {
            // A sender that went away needs no more credit; its end shows on the data side.
            let _ = s.write_all(&frame);
        }
    }
}

/// Returns one channel's credits as its receiving task takes messages: in groups of half the
/// queue while the task is busy (one small write per group instead of one per message), and
/// whatever is pending as soon as the task is about to wait for input, so a sender is never kept
/// waiting for credits the receiver owes it.
pub struct CreditReturn {
    link: Arc<CreditLink>,
    channel: u32,
    pending: u32,
    group: u32,
    bytes: weir_metrics::Counter,
}

impl CreditReturn {
    /// Returns credits for `channel` over `link`, in groups of `group`.
    pub(super) fn new(link: Arc<CreditLink>, channel: u32, group: u32, bytes: weir_metrics::Counter) -> CreditReturn {
        CreditReturn { link, channel, pending: 0, group, bytes }
    }

    /// The bytes that arrived on the channel so far (its share of the task's `numBytesIn`).
    pub fn bytes(&self) -> weir_metrics::Counter {
        self.bytes.clone()
    }

    /// One message left the channel's queue.
    pub fn returned(&mut self) {
        self.pending += 1;
        if self.pending >= self.group {
            self.flush();
        }
    }

    /// Returns every credit still owed.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            self.link.grant(self.channel, self.pending);
            self.pending = 0;
        }
    }
}

/// The inbound channels of one part from one sending part.
struct InboundGroup {
    decoders: HashMap<u32, Decoder>,
    credits: Arc<CreditLink>,
}

#[derive(Default)]
struct InboundPart {
    groups: HashMap<u32, InboundGroup>,
    streams: Vec<Stream>,
    /// The digest of each sending part's key (none: no key is asked for).
    sender_digests: Vec<Vec<u8>>,
}

pub(super) type PartKey = (JobId, u32, u32);

/// A process's data server: accepts connections from the parts that send to its parts.
pub struct DataServer {
    address: String,
    parts: Mutex<HashMap<PartKey, InboundPart>>,
    /// Job runs whose part here runs in a worker process, with the worker's data address. Locked
    /// after `parts` only.
    redirects: Mutex<HashMap<(JobId, u32), String>>,
    registered: Condvar,
    security: Arc<Internal>,
}

impl std::fmt::Debug for DataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataServer").field("address", &self.address).finish()
    }
}

impl DataServer {
    /// Listens on `bind` (`host:port`, port 0 for any free one); `advertise` is the host other
    /// processes reach this one by; connections in and out are secured by `security`. The server
    /// lives as long as the process.
    pub fn start(bind: &str, advertise: &str, security: Arc<Internal>) -> Result<Arc<DataServer>> {
        let listener = TcpListener::bind(bind).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "the data port is in use (taskmanager.data.port): pick another port, or 0 for any free one;"
            } else {
                "cannot listen for data connections on"
            };
            io_error(hint, bind, e)
        })?;
        let port = listener.local_addr().map_err(|e| io_error("cannot read the address of", bind, e))?.port();
        let server = Arc::new(DataServer {
            address: format!("{advertise}:{port}"),
            parts: Default::default(),
            redirects: Default::default(),
            registered: Condvar::new(),
            security,
        });
        let s = server.clone();
        std::thread::Builder::new()
            .name("data-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let s = s.clone();
                            let spawned = std::thread::Builder::new().name("data-in".into()).spawn(move || {
                                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                                if let Err(e) = s.inbound(stream) {
                                    warn!(%peer, error = %e, "data connection ended with an error");
                                }
                            });
                            if let Err(e) = spawned {
                                warn!(error = %e, "cannot start a thread for a data connection");
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot accept a data connection"),
                    }
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the data server thread: {e}")))?;
        Ok(server)
    }

    /// How this process's data connections are secured.
    pub fn security(&self) -> &Arc<Internal> {
        &self.security
    }

    /// The address other processes send to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends the senders of a job run's part here on to `address` (the data server of the worker
    /// process that runs the part), including senders already waiting for the part.
    pub fn redirect(&self, job: JobId, attempt: u32, address: &str) {
        let _parts = lock(&self.parts);
        lock(&self.redirects).insert((job, attempt), address.to_string());
        self.registered.notify_all();
    }

    /// Stops redirecting a job run's senders.
    pub fn forget_redirect(&self, job: JobId, attempt: u32) {
        let _parts = lock(&self.parts);
        lock(&self.redirects).remove(&(job, attempt));
    }

    /// Makes a part's inbound channels reachable: `groups` maps each sending part to its channels'
    /// decoders and the credit link they return credits through.
    pub(super) fn register(
        &self,
        key: PartKey,
        groups: HashMap<u32, (HashMap<u32, Decoder>, Arc<CreditLink>)>,
        sender_digests: Vec<Vec<u8>>,
    ) {
        let part = InboundPart {
            groups: groups
                .into_iter()
                .map(|(from, (decoders, credits))| (from, InboundGroup { decoders, credits }))
                .collect(),
            streams: Vec::new(),
            sender_digests,
        };
        lock(&self.parts).insert(key, part);
        self.registered.notify_all();
    }

    /// Forgets a part, closing its connections; channels never connected are dropped, which ends
    /// their receivers.
    pub(super) fn unregister(&self, key: PartKey) {
        if let Some(part) = lock(&self.parts).remove(&key) {
            for s in part.streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn inbound(&self, tcp: std::net::TcpStream) -> Result<()> {
        let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "a peer".into());
        let _ = tcp.set_nodelay(true);
        let mut stream = self.security.accept(tcp, &format!("sender at {peer}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| io_error("cannot configure", &peer, e))?;
        let mut hello = [0u8; HELLO];
        stream.read_exact(&mut hello).map_err(|e| io_error("no data handshake from", &peer, e))?;
        let refuse = |stream: &mut Stream, why: String| -> Result<()> {
            let mut answer = vec![1u8];
            answer.extend_from_slice(&(why.len() as u32).to_be_bytes());
            answer.extend_from_slice(why.as_bytes());
            let _ = stream.write_all(&answer);
            Err(Error::external(format!("a data connection from {peer}"), why, false))
        };
        if hello[..4] != MAGIC {
            return refuse(&mut stream, "not a weir data connection".into());
        }
        let u32_at = |i: usize| u32::from_be_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
        let version = u32_at(4);
        if version != DATA_PROTOCOL_VERSION {
            return refuse(
                &mut stream,
                format!(
                    "data protocol version {version}, this TaskManager speaks {DATA_PROTOCOL_VERSION}; run the \
                     same weir version everywhere"
                ),
            );
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hello[8..24]);
        let (job, attempt, from, to) = (JobId(u128::from_be_bytes(id)), u32_at(24), u32_at(28), u32_at(32));
        let key = (job, attempt, to);
        // Wait until the part is deployed here (or in a worker process), then take the sender's channels.
        let deadline = Instant::now() + REGISTRATION_WAIT;
        let group = {
            let mut parts = lock(&self.parts);
            loop {
                if let Some(address) = lock(&self.redirects).get(&(job, attempt)) {
                    let mut answer = vec![2u8];
                    answer.extend_from_slice(&(address.len() as u32).to_be_bytes());
                    answer.extend_from_slice(address.as_bytes());
                    drop(parts);
                    debug!(job_id = %job, attempt, from, to, %address, "data connection redirected to a worker");
                    return stream.write_all(&answer).map_err(|e| io_error("cannot answer", &peer, e));
                }
                if let Some(part) = parts.get_mut(&key) {
                    // Only the part the JobManager deployed as `from` holds the key of `from`.
                    if let Some(expected) = part.sender_digests.get(from as usize)
                        && !key_matches(&hello[36..], expected)
                    {
                        drop(parts);
                        let why = format!(
                            "it claims to send as part {from} of job {job} (attempt {attempt}) without that part's key: \
                             only the TaskManager the JobManager deployed the part to may"
                        );
                        return refuse(&mut stream, why);
                    }
                    match (part.groups.remove(&from), stream.try_clone()) {
                        (Some(g), Ok(clone)) => {
                            part.streams.push(clone);
                            break Some(g);
                        }
                        _ => break None,
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break None;
                }
                parts = self.registered.wait_timeout(parts, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
        };
        let Some(InboundGroup { mut decoders, credits }) = group else {
            return refuse(
                &mut stream,
                format!("part {to} of job {job} (attempt {attempt}) does not run here or already has that sender"),
            );
        };
        *lock(&credits.stream) = Some(stream.try_clone().map_err(|e| io_error("cannot use", &peer, e))?);
        stream.write_all(&[0u8]).map_err(|e| io_error("cannot answer", &peer, e))?;
        stream.set_read_timeout(None).map_err(|e| io_error("cannot configure", &peer, e))?;
        debug!(job_id = %job, attempt, from, to, %peer, channels = decoders.len(), "data connection open");
        let mut reader = std::io::BufReader::with_capacity(1 << 16, stream);
        let outcome = receive(&mut reader, &mut decoders, &peer);
        // Whatever channel did not end now ends with an error at its receiver (its sender is dropped).
        if !decoders.is_empty() && outcome.is_ok() {
            debug!(job_id = %job, from, to, open = decoders.len(), "data connection closed with channels open");
        }
        drop(decoders);
        let stream = reader.into_inner();
        let _ = stream.shutdown(Shutdown::Both);
        *lock(&credits.stream) = None;
        outcome
    }
}

/// Whether `key` hashes to `expected` (SHA-256), compared in constant time.
fn key_matches(key: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    digest.len() == expected.len() && digest.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Reads a sender's frames from `reader` and hands each to its channel's decoder, until the
/// sender closes the connection (`Ok`) or breaks the protocol or the connection (`Err`). A
/// channel whose last message arrived leaves `decoders`.
fn receive(reader: &mut impl Read, decoders: &mut HashMap<u32, Decoder>, peer: &str) -> Result<()> {
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io_error("lost the data connection from", peer, e)),
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let channel = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_DATA_FRAME {
            return Err(Error::external(peer.to_string(), format!("it announced a data frame of {len} bytes"), false));
        }
        body.resize(len, 0);
        if let Err(e) = reader.read_exact(&mut body) {
            return Err(io_error("the data connection closed in the middle of a frame from", peer, e));
        }
        let Some(decode) = decoders.get_mut(&channel) else {
            return Err(Error::external(
                peer.to_string(),
                format!("it sent on channel {channel}, which it does not own"),
                false,
            ));
        };
        match decode(&body) {
            Ok(true) => {
                decoders.remove(&channel);
            }
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
}
