//! Exchanges between tasks: bounded channels of batches, partitioned by a ship strategy.
//!
//! Every pair (upstream subtask, downstream subtask) that an edge connects gets its own bounded
//! channel. A full channel blocks its sender: that is backpressure, and it bounds memory to
//! `capacity` batches per channel. A receiving subtask reads all its channels through an
//! [`InputGate`]; end of input arrives in-band on each channel, and the gate ends when every
//! channel has ended.

use std::sync::Arc;

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, TrySendError};
use weir_core::keygroup::{key_group_of_hash, subtask_for_key_group};
use weir_core::{Error, Result, ShipStrategy};

use crate::context::CancelToken;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::source::TaskBody;

pub use crate::output::Message;

/// The sending end of one channel: to a task in this process, or over the network.
pub enum ChannelTx<T> {
    /// A bounded channel to a task of this process.
    Local(Sender<Message<T>>),
    /// A channel to a task of another process, with credit-based flow control.
    Remote(crate::net::RemoteTx<T>),
}

impl<T> From<Sender<Message<T>>> for ChannelTx<T> {
    fn from(s: Sender<Message<T>>) -> Self {
        ChannelTx::Local(s)
    }
}

/// The receiving end of one channel: a bounded queue, and for a channel from another process the
/// credits to return as messages leave it.
pub struct ChannelRx<T> {
    /// The queue.
    pub rx: Receiver<Message<T>>,
    /// Credits back to a remote sender.
    pub credit: Option<crate::net::CreditReturn>,
}

impl<T> From<Receiver<Message<T>>> for ChannelRx<T> {
    fn from(rx: Receiver<Message<T>>) -> Self {
        ChannelRx { rx, credit: None }
    }
}

/// The hash of a record's key, for [`ShipStrategy::Hash`].
pub type KeyHashFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// The sending side of one edge, in one upstream subtask.
pub struct ExchangeOutput<T> {
    strategy: ShipStrategy,
    senders: Vec<ChannelTx<T>>,
    buffers: Vec<Batch<T>>,
    key_hash: Option<KeyHashFn<T>>,
    max_parallelism: u32,
    next: usize,
    rng: u64,
    cancel: CancelToken,
    /// For channels to other processes: how many records a batch collects before it is sent.
    fill: usize,
    /// The sending task's figures.
    io: Arc<crate::metrics::TaskIo>,
}

impl<T: Clone + serde::Serialize> ExchangeOutput<T> {
    /// An output that distributes over `senders` (indexed by downstream subtask).
    pub fn new(
        strategy: ShipStrategy,
        senders: Vec<ChannelTx<T>>,
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
        let buffers = senders.iter().map(|_| Batch::default()).collect();
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
            fill: 0,
            io: crate::metrics::TaskIo::detached(),
        })
    }

    /// Lets batches to other processes collect up to `records` records before they are sent (a
    /// partitioned batch is split `P` ways, and every message over the network costs a frame and
    /// a credit). They are sent at the latest with the next control event or processing-time
    /// tick, so a record waits at most one tick (`pipeline.auto-watermark-interval`), as Flink's
    /// buffer timeout bounds it.
    pub fn with_fill(mut self, records: usize) -> Self {
        self.fill = records;
        self
    }

    /// Counts what this output sends in `io` (`numRecordsOut`, `numBytesOut`,
    /// `backPressuredTimeMsPerSecond`).
    pub fn with_io(mut self, io: Arc<crate::metrics::TaskIo>) -> Self {
        self.io = io;
        self
    }

    fn send(&mut self, i: usize, batch: Batch<T>) -> Result<()> {
        self.send_message(i, Message::Records(batch))
    }

    fn send_message(&mut self, i: usize, m: Message<T>) -> Result<()> {
        match &mut self.senders[i] {
            // A full channel is backpressure: the time until it has room is counted as such.
            ChannelTx::Local(s) => match s.try_send(m) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(m)) => {
                    let since = Instant::now();
                    let sent = s.send(m);
                    self.io.back_pressured_since(since);
                    sent.map_err(|_| self.closed())
                }
                Err(TrySendError::Disconnected(_)) => Err(self.closed()),
            },
            // Waiting for credit, or for the connection to take the bytes, is backpressure too.
            ChannelTx::Remote(r) => {
                let since = Instant::now();
                let bytes = r.send(m)?;
                self.io.bytes_out.add(bytes as u64);
                if since.elapsed() > std::time::Duration::from_micros(50) {
                    self.io.back_pressured_since(since);
                }
                Ok(())
            }
        }
    }

    fn closed(&self) -> Error {
        if self.cancel.is_cancelled() {
            Error::Cancelled("(exchange closed by cancellation)".into())
        } else {
            Error::ChannelClosed("a downstream task stopped reading before the end of input".into())
        }
    }

    /// Sends the buffered batches: all of them, or (`force` false) all but those to other
    /// processes that are not full yet.
    fn flush_buffers(&mut self, force: bool) -> Result<()> {
        for i in 0..self.buffers.len() {
            let wait = !force && matches!(self.senders[i], ChannelTx::Remote(_)) && self.buffers[i].len() < self.fill;
            if !self.buffers[i].is_empty() && !wait {
                let b = self.buffers[i].take();
                self.send(i, b)?;
            }
        }
        Ok(())
    }
}

impl<T: Clone + serde::Serialize> Output<T> for ExchangeOutput<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.io.records_out.add(batch.len() as u64);
        let n = self.senders.len();
        match self.strategy {
            _ if n == 1 => {
                let b = batch.take();
                return self.send(0, b);
            }
            ShipStrategy::Forward => {
                return Err(Error::internal("forward exchange with more than one receiver"));
            }
            ShipStrategy::Broadcast => {
                for i in 1..n {
                    self.send(i, batch.clone())?;
                }
                let b = batch.take();
                return self.send(0, b);
            }
            ShipStrategy::Rebalance => {
                for (r, t) in batch.drain() {
                    self.buffers[self.next].push(r, t);
                    self.next += 1;
                    if self.next == n {
                        self.next = 0;
                    }
                }
            }
            ShipStrategy::Shuffle => {
                for (r, t) in batch.drain() {
                    // xorshift64*: cheap, and good enough to spread records uniformly.
                    self.rng ^= self.rng >> 12;
                    self.rng ^= self.rng << 25;
                    self.rng ^= self.rng >> 27;
                    let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
                    self.buffers[(x % n as u64) as usize].push(r, t);
                }
            }
            ShipStrategy::Hash => {
                let key_hash = self.key_hash.as_ref().ok_or_else(|| Error::internal("hash exchange without a key"))?;
                let (maxp, p) = (self.max_parallelism, n as u32);
                for (r, t) in batch.drain() {
                    let kg = key_group_of_hash(key_hash(&r), maxp);
                    self.buffers[subtask_for_key_group(kg, maxp, p) as usize].push(r, t);
                }
            }
        }
        self.flush_buffers(false)
    }

    fn control(&mut self, event: Control) -> Result<()> {
        let message = |e| match e {
            Control::Watermark(w) => Some(Message::Watermark(w)),
            Control::Idle(i) => Some(Message::Idle(i)),
            Control::Barrier(id) => Some(Message::Barrier(id)),
            // Processing time is each task's own business.
            Control::Tick(_) => None,
        };
        // Records buffered before an event must arrive before it; a tick bounds their wait.
        self.flush_buffers(true)?;
        if message(event).is_some() {
            for i in 0..self.senders.len() {
                if let Some(m) = message(event) {
                    self.send_message(i, m)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_buffers(true)?;
        for i in 0..self.senders.len() {
            self.send_message(i, Message::EndOfInput)?;
        }
        Ok(())
    }
}

/// What an input gate yields.
#[derive(Debug)]
pub enum GateEvent<T> {
    /// Records.
    Records(Batch<T>),
    /// A change of the combined watermark or idleness of all input channels.
    Control(Control),
    /// Nothing arrived before the deadline.
    Timeout,
}

/// The receiving side of all channels into one subtask.
///
/// It combines the channels' watermarks: the task's event time is the minimum over the channels
/// that are neither idle nor ended, and advances only when that minimum does. When every open
/// channel is idle, the task is idle itself.
pub struct InputGate<T> {
    channels: Vec<Receiver<Message<T>>>,
    credits: Vec<Option<crate::net::CreditReturn>>,
    open: Vec<bool>,
    idle: Vec<bool>,
    watermarks: Vec<Timestamp>,
    open_count: usize,
    cursor: usize,
    combined: Timestamp,
    all_idle: bool,
    pending: VecDeque<Control>,
    cancel: CancelToken,
    /// Channels whose barrier arrived, for the checkpoint being aligned.
    barrier_seen: Vec<bool>,
    /// The checkpoint being aligned.
    aligning: Option<crate::checkpoint::CheckpointId>,
    /// Whether channels that delivered the barrier wait for the others (exactly-once).
    align: bool,
    /// The reading task's figures.
    io: Arc<crate::metrics::TaskIo>,
}

impl<T> InputGate<T> {
    /// A gate over `channels`.
    pub fn new(channels: Vec<ChannelRx<T>>, cancel: CancelToken) -> Self {
        let n = channels.len();
        let (channels, credits) = channels.into_iter().map(|c| (c.rx, c.credit)).unzip();
        InputGate {
            channels,
            credits,
            open: vec![true; n],
            idle: vec![false; n],
            watermarks: vec![Timestamp::MIN; n],
            open_count: n,
            cursor: 0,
            combined: Timestamp::MIN,
            all_idle: false,
            pending: VecDeque::new(),
            cancel,
            barrier_seen: vec![false; n],
            aligning: None,
            align: true,
            io: crate::metrics::TaskIo::detached(),
        }
    }

    /// Counts the gate's waits and its bytes from other processes in `io`
    /// (`idleTimeMsPerSecond`, `numBytesIn`).
    pub fn with_io(mut self, io: Arc<crate::metrics::TaskIo>) -> Self {
        for c in self.credits.iter().flatten() {
            io.add_inbound(c.bytes());
        }
        self.io = io;
        self
    }

    /// Lets channels go on after their barrier (at-least-once checkpoints): the barrier is passed
    /// on once every channel delivered it, but nothing waits.
    pub fn unaligned(mut self) -> Self {
        self.align = false;
        self
    }

    /// Whether channel `i` is held back by an alignment in progress.
    fn blocked(&self, i: usize) -> bool {
        self.align && self.barrier_seen[i]
    }

    /// Barrier `id` arrived on channel `i`.
    fn barrier(&mut self, i: usize, id: crate::checkpoint::CheckpointId) {
        match self.aligning {
            // A barrier of an older, abandoned checkpoint.
            Some(current) if id < current => return,
            Some(current) if id == current => {}
            // A newer checkpoint supersedes one that never completed here.
            _ => {
                self.aligning = Some(id);
                self.barrier_seen.iter_mut().for_each(|b| *b = false);
            }
        }
        self.barrier_seen[i] = true;
        self.check_aligned();
    }

    /// Passes the barrier on once every open channel delivered it.
    fn check_aligned(&mut self) {
        let Some(id) = self.aligning else { return };
        if (0..self.channels.len()).all(|c| !self.open[c] || self.barrier_seen[c]) {
            self.aligning = None;
            self.barrier_seen.iter_mut().for_each(|b| *b = false);
            self.pending.push_back(Control::Barrier(id));
        }
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Recomputes the combined watermark and idleness after channel `i` changed.
    fn update(&mut self) {
        let active: Vec<usize> = (0..self.channels.len()).filter(|&c| self.open[c] && !self.idle[c]).collect();
        let all_idle = self.open_count > 0 && active.is_empty();
        if all_idle != self.all_idle {
            self.all_idle = all_idle;
            self.pending.push_back(Control::Idle(all_idle));
        }
        // Ended channels no longer hold event time back; when all have ended, time is complete.
        let min = if self.open_count == 0 {
            Timestamp::MAX
        } else if all_idle {
            return;
        } else {
            active.iter().map(|&c| self.watermarks[c]).min().unwrap_or(Timestamp::MAX)
        };
        if min > self.combined {
            self.combined = min;
            self.pending.push_back(Control::Watermark(min));
        }
    }

    /// Handles a message from channel `i`; records are returned, control changes queued.
    fn accept(&mut self, i: usize, m: Message<T>) -> Option<Batch<T>> {
        match m {
            Message::Records(b) => return Some(b),
            Message::Watermark(w) => {
                self.idle[i] = false;
                self.watermarks[i] = self.watermarks[i].max(w);
            }
            Message::Idle(idle) => self.idle[i] = idle,
            Message::EndOfInput => {
                self.open[i] = false;
                self.open_count -= 1;
                // An ended channel has nothing more to align.
                self.check_aligned();
            }
            Message::Barrier(id) => {
                self.barrier(i, id);
                return None;
            }
        }
        self.update();
        None
    }

    /// The next batch or control change; `Ok(None)` at the end of all input or on cancellation.
    pub fn next_batch(&mut self) -> Result<Option<Batch<T>>> {
        loop {
            match self.next_event(None)? {
                Some(GateEvent::Records(b)) => return Ok(Some(b)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next event, waiting at most until `deadline`; `Ok(None)` at the end of all input or on
    /// cancellation.
    pub fn next_event(&mut self, deadline: Option<Instant>) -> Result<Option<GateEvent<T>>> {
        let n = self.channels.len();
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(Some(GateEvent::Control(c)));
            }
            if self.open_count == 0 || self.cancel.is_cancelled() {
                return Ok(None);
            }
            // Fast path: take whatever is ready, round-robin so that no channel starves.
            for k in 0..n {
                let i = (self.cursor + k) % n;
                if !self.open[i] || self.blocked(i) {
                    continue;
                }
                match self.channels[i].try_recv() {
                    Ok(m) => {
                        if let Some(c) = &mut self.credits[i] {
                            c.returned();
                        }
                        self.cursor = i + 1;
                        if let Some(b) = self.accept(i, m) {
                            return Ok(Some(GateEvent::Records(b)));
                        }
                        break;
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
            if !self.pending.is_empty() {
                continue;
            }
            // Nothing ready: hand back every credit owed, then block until a channel or the
            // cancellation is, or the deadline.
            for c in self.credits.iter_mut().flatten() {
                c.flush();
            }
            let mut sel = Select::new();
            for i in 0..n {
                if self.open[i] && !self.blocked(i) {
                    sel.recv(&self.channels[i]);
                }
            }
            sel.recv(self.cancel.receiver());
            let since = Instant::now();
            let ready = match deadline {
                None => Ok(sel.ready()),
                Some(d) => sel.ready_deadline(d),
            };
            self.io.idle_for(since.elapsed());
            if ready.is_err() {
                return Ok(Some(GateEvent::Timeout));
            }
        }
    }
}

/// A task whose head reads from an input gate, and ticks its chain with processing time.
pub struct InputTask<T> {
    gate: InputGate<T>,
    head: Box<dyn Output<T>>,
    tick: Option<std::time::Duration>,
    checkpoint: crate::checkpoint::task::TaskCheckpoint,
}

impl<T> InputTask<T> {
    /// A task feeding `gate` into `head`, ticking every `tick` (if any); its snapshots go through
    /// `checkpoint`.
    pub fn new(
        gate: InputGate<T>,
        head: Box<dyn Output<T>>,
        tick: Option<std::time::Duration>,
        checkpoint: crate::checkpoint::task::TaskCheckpoint,
    ) -> Self {
        let gate = if checkpoint.enabled() && !checkpoint.exactly_once() { gate.unaligned() } else { gate };
        InputTask { gate, head, tick, checkpoint }
    }
}

/// Wall-clock milliseconds since the epoch.
pub use weir_core::clock::now_millis;

impl<T> TaskBody for InputTask<T> {
    fn run(&mut self) -> Result<()> {
        let mut next_tick = self.tick.map(|t| Instant::now() + t);
        loop {
            match self.gate.next_event(next_tick)? {
                Some(GateEvent::Records(mut b)) => self.head.push(&mut b)?,
                Some(GateEvent::Control(Control::Barrier(id))) => {
                    self.head.control(Control::Barrier(id))?;
                    self.checkpoint.barrier_passed(id);
                }
                Some(GateEvent::Control(c)) => self.head.control(c)?,
                Some(GateEvent::Timeout) => {}
                None => break,
            }
            if let (Some(at), Some(every)) = (next_tick, self.tick)
                && Instant::now() >= at
            {
                self.head.control(Control::Tick(now_millis()))?;
                next_tick = Some(Instant::now() + every);
            }
        }
        if self.gate.is_cancelled() {
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
        let tx = tx.into_iter().map(ChannelTx::from).collect();
        let out = ExchangeOutput::new(strategy, tx, key, 128, 0, CancelToken::new());
        (out.unwrap_or_else(|e| panic!("{e}")), rx)
    }

    fn drain(rx: &Receiver<Message<u64>>) -> (Vec<u64>, bool) {
        let mut v = Vec::new();
        let mut ended = false;
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Records(b) => v.extend(b.records),
                Message::EndOfInput => ended = true,
                _ => {}
            }
        }
        (v, ended)
    }

    #[test]
    fn hash_sends_each_key_to_its_key_group_owner() -> Result<()> {
        let key: KeyHashFn<u64> = Arc::new(|x| stable_hash(&(x % 10)));
        let (mut out, rx) = wire(3, ShipStrategy::Hash, Some(key));
        out.push(&mut Batch::of((0..1000).collect()))?;
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
        out.push(&mut Batch::of((0..400).collect()))?;
        out.finish()?;
        for r in &rx {
            assert_eq!(drain(r).0.len(), 100);
        }
        let (mut out, rx) = wire(4, ShipStrategy::Shuffle, None);
        out.push(&mut Batch::of((0..4000).collect()))?;
        out.finish()?;
        let sizes: Vec<usize> = rx.iter().map(|r| drain(r).0.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4000);
        assert!(sizes.iter().all(|&s| s > 800), "{sizes:?}");
        let (mut out, rx) = wire(3, ShipStrategy::Broadcast, None);
        out.push(&mut Batch::of((0..10).collect()))?;
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
        let mut gate = InputGate::new(vec![rx1.into(), rx2.into()], CancelToken::new());
        tx1.send(Message::Records(Batch::of(vec![1u64]))).ok();
        tx1.send(Message::EndOfInput).ok();
        tx2.send(Message::Records(Batch::of(vec![2u64]))).ok();
        tx2.send(Message::EndOfInput).ok();
        let mut seen = Vec::new();
        while let Some(b) = gate.next_batch()? {
            seen.extend(b.records);
        }
        seen.sort();
        assert_eq!(seen, vec![1, 2]);

        let cancel = CancelToken::new();
        let (_tx, rx) = crossbeam_channel::bounded::<Message<u64>>(4);
        let mut gate = InputGate::new(vec![rx.into()], cancel.clone());
        let h = std::thread::spawn(move || gate.next_batch().map(|b| b.is_none()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        cancel.cancel();
        assert!(matches!(h.join(), Ok(Ok(true))));
        Ok(())
    }

    #[test]
    fn the_gate_combines_watermarks_as_the_minimum_over_active_channels() -> Result<()> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| crossbeam_channel::bounded::<Message<u64>>(16)).unzip();
        let mut gate = InputGate::new(rxs.into_iter().map(ChannelRx::from).collect(), CancelToken::new());
        let controls = |gate: &mut InputGate<u64>| -> Result<Vec<Control>> {
            let mut out = Vec::new();
            while let Some(GateEvent::Control(c)) =
                gate.next_event(Some(Instant::now() + std::time::Duration::from_millis(5)))?
            {
                out.push(c);
            }
            Ok(out)
        };
        txs[0].send(Message::Watermark(10)).ok();
        txs[1].send(Message::Watermark(5)).ok();
        assert_eq!(controls(&mut gate)?, vec![], "channel 2 has no watermark yet");
        txs[2].send(Message::Watermark(7)).ok();
        assert_eq!(controls(&mut gate)?, vec![Control::Watermark(5)]);
        // An idle channel no longer holds time back.
        txs[1].send(Message::Idle(true)).ok();
        assert_eq!(controls(&mut gate)?, vec![Control::Watermark(7)]);
        // Watermarks never go back, even when an idle channel returns behind.
        txs[1].send(Message::Watermark(6)).ok();
        assert_eq!(controls(&mut gate)?, vec![]);
        // An ended channel counts as complete.
        txs[2].send(Message::EndOfInput).ok();
        txs[1].send(Message::Watermark(20)).ok();
        assert_eq!(controls(&mut gate)?, vec![Control::Watermark(10)]);
        txs[0].send(Message::Idle(true)).ok();
        txs[1].send(Message::Idle(true)).ok();
        assert_eq!(controls(&mut gate)?, vec![Control::Watermark(20), Control::Idle(true)]);
        txs[0].send(Message::Watermark(30)).ok();
        assert_eq!(controls(&mut gate)?, vec![Control::Idle(false), Control::Watermark(30)]);
        txs[0].send(Message::EndOfInput).ok();
        txs[1].send(Message::EndOfInput).ok();
        // Whichever end is read first, event time ends complete and the task is not left idle.
        let last = controls(&mut gate)?;
        assert_eq!(last.last(), Some(&Control::Watermark(Timestamp::MAX)), "{last:?}");
        let idles = last.iter().filter(|c| matches!(c, Control::Idle(_))).count();
        assert!(idles % 2 == 0, "unbalanced idleness: {last:?}");
        Ok(())
    }
}
