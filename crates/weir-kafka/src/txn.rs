//! Finishing a transaction that another process opened: the one step of Flink's exactly-once
//! protocol that librdkafka cannot take.
//!
//! A transaction is pre-committed at a checkpoint barrier and committed once the checkpoint
//! completes. If the process dies in between, the job restores from that checkpoint and has to
//! commit the transaction, whose producer is gone. Kafka allows it: the transaction coordinator
//! accepts `EndTxn` from anyone who names the transactional id, producer id and epoch (Flink does
//! the same through its `resumeTransaction`). librdkafka has no such call (and
//! `init_transactions` on the id would abort the transaction), so this module sends the two
//! requests itself, over one short-lived connection per broker: `FindCoordinator` for the id, then
//! `EndTxn` to the coordinator.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ProducerId, RequestHeader, ResponseHeader, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use weir_core::{Error, Result};

/// Kafka's error codes this module tells apart.
const NONE: i16 = 0;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const PRODUCER_FENCED: i16 = 90;

/// How an `EndTxn` for a transaction of an earlier process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The transaction is committed (now, or it was already).
    Committed,
    /// The coordinator no longer knows the transaction under this producer epoch: it was finished
    /// before (committed by an earlier recovery, or aborted when it timed out:
    /// `transaction.timeout.ms`), and the id has been used again since.
    Gone(i16),
}

/// A connection speaking Kafka's protocol, for a handful of requests.
struct Conn {
    stream: TcpStream,
    peer: String,
    correlation: i32,
    versions: Vec<(i16, i16, i16)>,
}

impl Conn {
    fn open(addr: &str, timeout: Duration) -> Result<Conn> {
        let net = |e: std::io::Error| Error::Network {
            context: "cannot connect to the Kafka broker".into(),
            peer: addr.to_string(),
            source: e,
        };
        let sock =
            addr.to_socket_addrs().map_err(net)?.next().ok_or_else(|| {
                net(std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to nothing"))
            })?;
        let stream = TcpStream::connect_timeout(&sock, timeout).map_err(net)?;
        stream.set_read_timeout(Some(timeout)).map_err(net)?;
        stream.set_write_timeout(Some(timeout)).map_err(net)?;
        let mut conn = Conn { stream, peer: addr.to_string(), correlation: 0, versions: Vec::new() };
        let resp: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if resp.error_code != NONE {
            return Err(conn.refused("ApiVersions", resp.error_code));
        }
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        Ok(conn)
    }

    /// The highest version of `api` both sides speak, at most `cap`.
    fn version<M: Message>(&self, api: ApiKey, cap: i16) -> Result<i16> {
        let (_, lo, hi) = self.versions.iter().copied().find(|(k, _, _)| *k == api as i16).ok_or_else(|| {
            Error::external(
                format!("the Kafka broker at {}", self.peer),
                format!("it does not support the {api:?} request, which committing a transaction needs"),
                false,
            )
        })?;
        let v = hi.min(M::VERSIONS.max).min(cap);
        if v < lo.max(M::VERSIONS.min) {
            return Err(Error::external(
                format!("the Kafka broker at {}", self.peer),
                format!("no version of the {api:?} request is spoken by both the broker ({lo}..={hi}) and weir"),
                false,
            ));
        }
        Ok(v)
    }

    fn refused(&self, what: &str, code: i16) -> Error {
        Error::external(
            format!("the Kafka broker at {}", self.peer),
            format!("it answered {what} with error code {code}"),
            true,
        )
    }

    fn call<Req, Resp>(&mut self, api: ApiKey, version: i16, req: &Req) -> Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let proto = |e: anyhow::Error| {
            Error::external(
                format!("the Kafka broker at {}", self.peer),
                format!("cannot encode or decode a {api:?} message: {e}"),
                false,
            )
        };
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir")));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version)).map_err(proto)?;
        req.encode(&mut body, version).map_err(proto)?;
        let net = |e: std::io::Error, peer: &str| Error::Network {
            context: format!("{api:?} request to the Kafka broker"),
            peer: peer.to_string(),
            source: e,
        };
        let len = i32::try_from(body.len()).map_err(|_| Error::internal("Kafka request too large"))?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).map_err(|e| net(e, &self.peer))?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(|e| net(e, &self.peer))?;
        let size = i32::from_be_bytes(size);
        if !(0..=64 << 20).contains(&size) {
            return Err(Error::external(
                format!("the Kafka broker at {}", self.peer),
                format!("it sent a response frame of {size} bytes; is this a Kafka broker?"),
                false,
            ));
        }
        let mut buf = vec![0u8; size as usize];
        self.stream.read_exact(&mut buf).map_err(|e| net(e, &self.peer))?;
        let mut buf = bytes::Bytes::from(buf);
        let head = ResponseHeader::decode(&mut buf, Resp::header_version(version)).map_err(proto)?;
        if head.correlation_id != self.correlation {
            return Err(Error::external(
                format!("the Kafka broker at {}", self.peer),
                "it answered another request than the one sent",
                true,
            ));
        }
        let resp = Resp::decode(&mut buf, version).map_err(proto)?;
        let _ = buf.remaining();
        Ok(resp)
    }
}

/// Commits the transaction `id` (producer `pid`, `epoch`) that an earlier process pre-committed, by
/// way of any of `brokers` (comma-separated `host:port`), within `timeout`.
pub fn commit(brokers: &str, id: &str, pid: i64, epoch: i16, timeout: Duration) -> Result<Ended> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    // Coordinators move and load; try again (bounded by the deadline) as Kafka's clients do.
    for attempt in 0u32.. {
        if Instant::now() >= deadline {
            break;
        }
        match try_commit(brokers, id, pid, epoch, deadline) {
            Ok(Some(ended)) => return Ok(ended),
            Ok(None) => last = None,
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(50 * u64::from(attempt.min(10) + 1)));
    }
    Err(last.unwrap_or_else(|| {
        Error::external(
            format!("committing the Kafka transaction '{id}' of an earlier attempt"),
            format!(
                "its coordinator did not finish it within {} ms (busy or moving); the job restarts and tries again",
                timeout.as_millis()
            ),
            true,
        )
    }))
}

/// One try: `Ok(None)` when the coordinator asks to try again.
fn try_commit(brokers: &str, id: &str, pid: i64, epoch: i16, deadline: Instant) -> Result<Option<Ended>> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let mut errors = Vec::new();
    let mut coordinator = None;
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match find_coordinator(broker, id, left()) {
            Ok(Some(c)) => {
                coordinator = Some(c);
                break;
            }
            Ok(None) => return Ok(None),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let Some(coordinator) = coordinator else {
        return Err(Error::external(
            format!("cannot reach any Kafka broker of '{brokers}' to commit transaction '{id}'"),
            errors.join("; "),
            true,
        ));
    };
    let mut conn = Conn::open(&coordinator, left())?;
    let v = conn.version::<EndTxnRequest>(ApiKey::EndTxn, 3)?;
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let resp: EndTxnResponse = conn.call(ApiKey::EndTxn, v, &req)?;
    match resp.error_code {
        NONE => Ok(Some(Ended::Committed)),
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR | CONCURRENT_TRANSACTIONS => {
            Ok(None)
        }
        code @ (INVALID_PRODUCER_EPOCH | PRODUCER_FENCED | INVALID_TXN_STATE) => Ok(Some(Ended::Gone(code))),
        code => Err(conn.refused(&format!("EndTxn (commit of '{id}')"), code)),
    }
}

/// The `host:port` of the transaction coordinator of `id`, asked of `broker`; `None` when it is
/// not available yet.
fn find_coordinator(broker: &str, id: &str, timeout: Duration) -> Result<Option<String>> {
    let mut conn = Conn::open(broker, timeout)?;
    let v = conn.version::<FindCoordinatorRequest>(ApiKey::FindCoordinator, 3)?;
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(id.to_string())).with_key_type(1);
    let resp: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, v, &req)?;
    match resp.error_code {
        NONE => Ok(Some(format!("{}:{}", resp.host.as_str(), resp.port))),
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR => Ok(None),
        code => Err(conn.refused("FindCoordinator (transaction)", code)),
    }
}
