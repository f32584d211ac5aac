//! A source reading lines of text from a TCP socket (Flink's `socketTextStream`). It ends when the
//! peer closes the connection.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use weir_core::{Error, Result};
use weir_runtime::source::Source;
use weir_runtime::{OperatorContext, SourceReader, SourceStatus};

/// Lines from `host:port`, one reader (parallelism 1).
#[derive(Clone, Debug)]
pub struct SocketText {
    address: String,
}

impl SocketText {
    /// Lines from `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        SocketText { address: address.into() }
    }

    fn resolve(&self) -> Result<SocketAddr> {
        let bad = |e: std::io::Error| {
            if e.kind() == ErrorKind::InvalidInput {
                // Not an address at all: the job gives its source an impossible setting.
                Error::InvalidJob(format!(
                    "cannot resolve socket source address '{}': {e}; expected host:port, e.g. localhost:9999",
                    self.address
                ))
            } else {
                Error::Network {
                    context: "cannot resolve socket source address".into(),
                    peer: self.address.clone(),
                    source: e,
                }
            }
        };
        self.address
            .to_socket_addrs()
            .map_err(bad)?
            .next()
            .ok_or_else(|| bad(std::io::Error::new(ErrorKind::NotFound, "no address found")))
    }
}

impl Source<String> for SocketText {
    fn name(&self) -> String {
        format!("Socket {}", self.address)
    }
    fn validate(&self) -> Result<()> {
        self.resolve().map(|_| ())
    }
    fn max_parallelism(&self) -> Option<u32> {
        Some(1)
    }
    fn create_reader(&self, _ctx: &OperatorContext) -> Result<Box<dyn SourceReader<String>>> {
        let addr = self.resolve()?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| Error::Network {
            context: "socket source cannot connect to".into(),
            peer: self.address.clone(),
            source: e,
        })?;
        // Short reads let the task notice cancellation while the peer is quiet.
        stream.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| Error::Network {
            context: "cannot configure socket to".into(),
            peer: self.address.clone(),
            source: e,
        })?;
        Ok(Box::new(SocketReader { stream, peer: self.address.clone(), pending: Vec::new(), chunk: vec![0; 1 << 16] }))
    }
}

struct SocketReader {
    stream: TcpStream,
    peer: String,
    pending: Vec<u8>,
    chunk: Vec<u8>,
}

impl SocketReader {
    fn emit_lines(&mut self, out: &mut Vec<String>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(i) = self.pending.iter().position(|&b| b == b'\n') else {
                break;
            };
            let mut line: Vec<u8> = self.pending.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push(String::from_utf8_lossy(&line).into_owned());
            n += 1;
        }
        n
    }
}

impl SourceReader<String> for SocketReader {
    fn poll(&mut self, out: &mut Vec<String>, max: usize) -> Result<SourceStatus> {
        if self.emit_lines(out, max) == max {
            return Ok(SourceStatus::Continue);
        }
        match self.stream.read(&mut self.chunk) {
            Ok(0) => {
                self.emit_lines(out, usize::MAX);
                if !self.pending.is_empty() {
                    out.push(String::from_utf8_lossy(&self.pending).into_owned());
                    self.pending.clear();
                }
                Ok(SourceStatus::Finished)
            }
            Ok(n) => {
                self.pending.extend_from_slice(&self.chunk[..n]);
                Ok(SourceStatus::Continue)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                Ok(SourceStatus::Wait(Duration::ZERO))
            }
            Err(e) => Err(Error::Network {
                context: "socket source lost its connection to".into(),
                peer: self.peer.clone(),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ctx, read_all};
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn reads_lines_until_the_peer_closes() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", "127.0.0.1", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("addr", "127.0.0.1", e))?;
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"hello\r\nworld\n");
                std::thread::sleep(Duration::from_millis(80));
                let _ = s.write_all(b"last");
            }
        });
        let src = SocketText::new(addr.to_string());
        src.validate()?;
        let lines = read_all(src.create_reader(&ctx(0, 1))?);
        let _ = server.join();
        assert_eq!(lines, vec!["hello", "world", "last"]);
        Ok(())
    }

    #[test]
    fn a_refused_connection_names_the_address() {
        // Bind then drop, so the port is very likely closed.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
        let src = SocketText::new(format!("127.0.0.1:{port}"));
        let e = src.create_reader(&ctx(0, 1)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("127.0.0.1:{port}")) && e.contains("cannot connect"), "{e}");
        assert!(SocketText::new("no-port-here").validate().is_err());
    }
}
