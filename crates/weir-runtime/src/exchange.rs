//! Exchanges between tasks: bounded channels of batches, partitioned by a ship strategy.
//!
//! Every pair (upstream subtask, downstream subtask) that an edge connects gets its own bounded
//! channel. A full channel blocks its sender: that is backpressure, and it bounds memory to
//! `capacity` batches per channel. A receiving subtask reads all its channels through an
//! [`InputGate`]; end of input arrives in-band on each channel, and the gate ends when every
//! channel has ended.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use weir_core::keygroup::{key_group_of_hash, subtask_for_key_group};
use weir_core::{Error, Result, ShipStrategy};

use crate::context::CancelToken;
use crate::output::Output;
use crate::source::TaskBody;

/// What travels on a channel.
#[derive(Debug)]
pub enum Message<T> {
    /// A batch of records.
    Records(Vec<T>),
    /// The sender has no more records.
    EndOfInput,
}

/// The hash of a record's key, for [`ShipStrategy::Hash`].
pub type KeyHashFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// The sending side of one edge, in one upstream subtask.
pub struct ExchangeOutput<T> {
    strategy: ShipStrategy,
    senders: Vec<Sender<Message<T>>>,
    buffers: Vec<Vec<T>>,
    key_hash: Option<KeyHashFn<T>>,
    max_parallelism: u32,
    next: usize,
    rng: u64,
    cancel: CancelToken,
}

impl<T: Clone> ExchangeOutput<T> {
    /// An output that distributes over `senders` (indexed by downstream subtask).
    pub fn new(
        strategy: ShipStrategy,
        senders: Vec<Sender<Message<T>>>,
        key_hash: Option<KeyHashFn<T>>,
        max_parallelism: u32,
        subtask: u32,
        cancel: CancelToken,
    ) -> Result<Self> {
        if senders.is_empty() {
            return Err(Error::internal("exchange with no receivers"));
        }
        if strategy == ShipStrategy::Hash && key_hash.is_none() {
            return Err(Error::internal("hash exchange without a key"));
        }
        let senders_len = senders.len();
        let buffers = senders.iter().map(|_| Vec::new()).collect();
        Ok(ExchangeOutput {
            strategy,
            senders,
            buffers,
            key_hash,
            max_parallelism,
            // Start round-robin at a subtask-dependent receiver, as Flink does, to spread load.
            next: subtask as usize % senders_len,
            rng: 0x2545_f491_4f6c_dd1d ^ (u64::from(subtask) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            cancel,
        })
    }

    fn send(&self, i: usize, batch: Vec<T>) -> Result<()> {
        self.senders[i].send(Message::Records(batch)).map_err(|_| self.closed())
    }

    fn closed(&self) -> Error {
        if self.cancel.is_cancelled() {
            Error::Cancelled("(exchange closed by cancellation)".into())
        } else {
            Error::ChannelClosed("a downstream task stopped reading before the end of input".into())
        }
    }

    fn flush_buffers(&mut self) -> Result<()> {
        for i in 0..self.buffers.len() {
            if !self.buffers[i].is_empty() {
                let b = std::mem::take(&mut self.buffers[i]);
                self.send(i, b)?;
            }
        }
        Ok(())
    }
}

impl<T: Clone> Output<T> for ExchangeOutput<T> {
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = self.senders.len();
        match self.strategy {
            _ if n == 1 => {
                let b = std::mem::take(batch);
                return self.send(0, b);
            }
            ShipStrategy::Forward => {
                return Err(Error::internal("forward exchange with more than one receiver"));
            }
            ShipStrategy::Broadcast => {
                for i in 1..n {
                    self.send(i, batch.clone())?;
                }
                let b = std::mem::take(batch);
                return self.send(0, b);
            }
            ShipStrategy::Rebalance => {
                for r in batch.drain(..) {
                    self.buffers[self.next].push(r);
                    self.next += 1;
                    if self.next == n {
                        self.next = 0;
                    }
                }
            }
            ShipStrategy::Shuffle => {
                for r in batch.drain(..) {
                    // xorshift64*: cheap, and good enough to spread records uniformly.
                    self.rng ^= self.rng >> 12;
                    self.rng ^= self.rng << 25;
                    self.rng ^= self.rng >> 27;
                    let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
                    self.buffers[(x % n as u64) as usize].push(r);
                }
            }
            ShipStrategy::Hash => {
                let key_hash = self.key_hash.as_ref().ok_or_else(|| Error::internal("hash exchange without a key"))?;
                let (maxp, p) = (self.max_parallelism, n as u32);
                for r in batch.drain(..) {
                    let kg = key_group_of_hash(key_hash(&r), maxp);
                    self.buffers[subtask_for_key_group(kg, maxp, p) as usize].push(r);
                }
            }
        }
        self.flush_buffers()
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_buffers()?;
        for s in &self.senders {
            s.send(Message::EndOfInput).map_err(|_| self.closed())?;
        }
        Ok(())
    }
}

/// The receiving side of all channels into one subtask.
pub struct InputGate<T> {
    channels: Vec<Receiver<Message<T>>>,
    open: Vec<bool>,
    open_count: usize,
    cursor: usize,
    cancel: CancelToken,
}

impl<T> InputGate<T> {
    /// A gate over `channels`.
    pub fn new(channels: Vec<Receiver<Message<T>>>, cancel: CancelToken) -> Self {
        let n = channels.len();
        InputGate { channels, open: vec![true; n], open_count: n, cursor: 0, cancel }
    }

    /// The next batch, `Ok(None)` at the end of all input or on cancellation.
    pub fn next_batch(&mut self) -> Result<Option<Vec<T>>> {
        let n = self.channels.len();
        loop {
            if self.open_count == 0 || self.cancel.is_cancelled() {
                return Ok(None);
            }
            // Fast path: take whatever is ready, round-robin so that no channel starves.
            for k in 0..n {
                let i = (self.cursor + k) % n;
                if !self.open[i] {
                    continue;
                }
                match self.channels[i].try_recv() {
                    Ok(Message::Records(b)) => {
                        self.cursor = i + 1;
                        return Ok(Some(b));
                    }
                    Ok(Message::EndOfInput) => {
                        self.open[i] = false;
                        self.open_count -= 1;
                        if self.open_count == 0 {
                            return Ok(None);
                        }
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => {
                        if self.cancel.is_cancelled() {
                            return Ok(None);
                        }
                        return Err(Error::ChannelClosed(
                            "an upstream task stopped before sending its end of input".into(),
                        ));
                    }
                }
            }
            // Nothing ready: block until a channel or the cancellation is.
            let mut sel = Select::new();
            for i in 0..n {
                if self.open[i] {
                    sel.recv(&self.channels[i]);
                }
            }
            sel.recv(self.cancel.receiver());
            sel.ready();
        }
    }
}

/// A task whose head reads from an input gate.
pub struct InputTask<T> {
    gate: InputGate<T>,
    head: Box<dyn Output<T>>,
}

impl<T> InputTask<T> {
    /// A task feeding `gate` into `head`.
    pub fn new(gate: InputGate<T>, head: Box<dyn Output<T>>) -> Self {
        InputTask { gate, head }
    }
}

impl<T> TaskBody for InputTask<T> {
    fn run(&mut self) -> Result<()> {
        while let Some(mut batch) = self.gate.next_batch()? {
            self.head.push(&mut batch)?;
        }
        if self.gate.cancel.is_cancelled() {
            return Ok(());
        }
        self.head.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::keygroup::stable_hash;

    fn wire(
        n: usize,
        strategy: ShipStrategy,
        key: Option<KeyHashFn<u64>>,
    ) -> (ExchangeOutput<u64>, Vec<Receiver<Message<u64>>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::bounded(64)).unzip();
        let out = ExchangeOutput::new(strategy, tx, key, 128, 0, CancelToken::new());
        (out.unwrap_or_else(|e| panic!("{e}")), rx)
    }

    fn drain(rx: &Receiver<Message<u64>>) -> (Vec<u64>, bool) {
        let mut v = Vec::new();
        let mut ended = false;
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Records(b) => v.extend(b),
                Message::EndOfInput => ended = true,
            }
        }
        (v, ended)
    }

    #[test]
    fn hash_sends_each_key_to_its_key_group_owner() -> Result<()> {
        let key: KeyHashFn<u64> = Arc::new(|x| stable_hash(&(x % 10)));
        let (mut out, rx) = wire(3, ShipStrategy::Hash, Some(key));
        out.push(&mut (0..1000).collect())?;
        out.finish()?;
        let mut total = 0;
        for (i, r) in rx.iter().enumerate() {
            let (v, ended) = drain(r);
            assert!(ended);
            total += v.len();
            for x in v {
                let kg = key_group_of_hash(stable_hash(&(x % 10)), 128);
                assert_eq!(subtask_for_key_group(kg, 128, 3) as usize, i);
            }
        }
        assert_eq!(total, 1000);
        Ok(())
    }

    #[test]
    fn rebalance_shuffle_and_broadcast_distribute_as_named() -> Result<()> {
        let (mut out, rx) = wire(4, ShipStrategy::Rebalance, None);
        out.push(&mut (0..400).collect())?;
        out.finish()?;
        for r in &rx {
            assert_eq!(drain(r).0.len(), 100);
        }
        let (mut out, rx) = wire(4, ShipStrategy::Shuffle, None);
        out.push(&mut (0..4000).collect())?;
        out.finish()?;
        let sizes: Vec<usize> = rx.iter().map(|r| drain(r).0.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4000);
        assert!(sizes.iter().all(|&s| s > 800), "{sizes:?}");
        let (mut out, rx) = wire(3, ShipStrategy::Broadcast, None);
        out.push(&mut (0..10).collect())?;
        out.finish()?;
        for r in &rx {
            assert_eq!(drain(r).0, (0..10).collect::<Vec<_>>());
        }
        Ok(())
    }

    #[test]
    fn gate_ends_after_every_channel_ended_and_wakes_on_cancel() -> Result<()> {
        let (tx1, rx1) = crossbeam_channel::bounded(4);
        let (tx2, rx2) = crossbeam_channel::bounded(4);
        let mut gate = InputGate::new(vec![rx1, rx2], CancelToken::new());
        tx1.send(Message::Records(vec![1u64])).ok();
        tx1.send(Message::EndOfInput).ok();
        tx2.send(Message::Records(vec![2u64])).ok();
        tx2.send(Message::EndOfInput).ok();
        let mut seen = Vec::new();
        while let Some(b) = gate.next_batch()? {
            seen.extend(b);
        }
        seen.sort();
        assert_eq!(seen, vec![1, 2]);

        let cancel = CancelToken::new();
        let (_tx, rx) = crossbeam_channel::bounded::<Message<u64>>(4);
        let mut gate = InputGate::new(vec![rx], cancel.clone());
        let h = std::thread::spawn(move || gate.next_batch().map(|b| b.is_none()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        cancel.cancel();
        assert!(matches!(h.join(), Ok(Ok(true))));
        Ok(())
    }
}
