//! Timers on the disk backend: one time domain's timers of an operator instance kept in its store,
//! so that their number is bounded by the disk, not by memory (Flink's RocksDB backend does the
//! same with `timer-service.factory: ROCKSDB`, its default).
//!
//! A timer is an empty value under `key group (2 bytes) ++ tag ++ time (8 bytes, sign bit flipped
//! so that times sort as bytes) ++ payload` (the payload is the encoded key the timer belongs to).
//! The tag (a reserved name, as a process function's states are stored under their names) keeps
//! timers apart from the states in the same store. Within a key group, timers therefore sort by
//! time, and popping the earliest is a seek.
//!
//! Stores whose value keys are `key group ++ encoded key` ([`super::DiskKeyed`]) have no room for a
//! tag beside their values: their queues are kept *aside* ([`DiskTimerQueue::aside`]), under the
//! key group with its top bit set ([`super::ASIDE`]), which no value key has (key groups are below
//! 32768). Entries aside belong to their key group as any other (a snapshot's chunks and a restore
//! at another parallelism go by the key group without the bit), and readers of values skip them.
//!
//! Memory holds, per key group that has timers, one store key at or before its earliest live timer
//! (where the next seek starts), and an ordered set of those positions' times: a number of entries
//! bounded by the key groups of the instance, whatever the number of timers. A popped timer moves
//! its key group's position just past it, so firing many timers of one time never seeks over the
//! tombstones of those already fired.

use std::collections::{BTreeSet, HashMap};

use weir_core::{Error, Result};

use super::RawStore;
use crate::time::Timestamp;

/// One time domain's timers in a [`RawStore`], under a tag of their own.
pub struct DiskTimerQueue {
    /// Set on the key group of every store key of this queue (0, or [`super::ASIDE`]).
    mark: u16,
    /// What follows the key group in every store key of this queue.
    tag: Vec<u8>,
    /// Per key group with timers: a store key at or before its earliest live timer.
    from: HashMap<u32, Vec<u8>>,
    /// The times of the positions in `from`, with their key group: the earliest first.
    heads: BTreeSet<(Timestamp, u32)>,
}

/// The 8 bytes of a time in a store key: big-endian with the sign bit flipped, so that times sort
/// as bytes as they do as numbers.
fn time_bytes(at: Timestamp) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

impl DiskTimerQueue {
    /// An empty queue whose store keys carry `tag` after the key group.
    pub fn new(tag: Vec<u8>) -> Self {
        DiskTimerQueue { mark: 0, tag, from: HashMap::new(), heads: BTreeSet::new() }
    }

    /// An empty queue kept aside from the store's values, its store keys carrying `tag` after the
    /// marked key group.
    pub fn aside(tag: Vec<u8>) -> Self {
        DiskTimerQueue { mark: super::ASIDE, ..Self::new(tag) }
    }

    /// The store key prefix of this queue's timers in key group `kg`.
    fn prefix(&self, kg: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.tag.len() + 8);
        out.extend_from_slice(&(kg as u16 | self.mark).to_be_bytes());
        out.extend_from_slice(&self.tag);
        out
    }

    /// The store key of a timer at `at` in key group `kg` with `payload`.
    pub fn key(&self, kg: u32, at: Timestamp, payload: &[u8]) -> Vec<u8> {
        let mut out = self.prefix(kg);
        out.extend_from_slice(&time_bytes(at));
        out.extend_from_slice(payload);
        out
    }

    /// The time and payload of `key` if it is a store key of this queue; `None` for any other key.
    pub fn parse<'k>(&self, key: &'k [u8]) -> Option<(Timestamp, &'k [u8])> {
        parse_key(self.mark != 0, &self.tag, key)
    }

    /// The time of a position in the queue (a store key of it, or one just past one).
    fn time_of(&self, key: &[u8]) -> Result<Timestamp> {
        self.parse(key).map(|(at, _)| at).ok_or_else(|| Error::internal("a timer position is not a timer key"))
    }

    /// Moves key group `kg`'s position to `key`.
    fn set_from(&mut self, kg: u32, key: Vec<u8>) -> Result<()> {
        let at = self.time_of(&key)?;
        if let Some(old) = self.from.get(&kg) {
            let old_at = self.time_of(old)?;
            self.heads.remove(&(old_at, kg));
        }
        self.heads.insert((at, kg));
        self.from.insert(kg, key);
        Ok(())
    }

    /// Notes that the timer stored under `key` (in key group `kg`) was written: the key group's
    /// position moves back to it if it is earlier.
    pub fn noted(&mut self, kg: u32, key: &[u8]) -> Result<()> {
        match self.from.get(&kg) {
            Some(from) if from.as_slice() <= key => Ok(()),
            _ => self.set_from(kg, key.to_vec()),
        }
    }

    /// The earliest timer at or before `time`, removed from the store: its time and payload;
    /// `None` when there is none. Timers written (and [noted](Self::noted)) since are seen.
    pub fn pop_due(&mut self, store: &mut RawStore, time: Timestamp) -> Result<Option<(Timestamp, Vec<u8>)>> {
        while let Some(&(head, kg)) = self.heads.first() {
            if head > time {
                return Ok(None);
            }
            let from = self.from.get(&kg).ok_or_else(|| Error::internal("a timer head without a position"))?;
            let prefix = self.prefix(kg);
            match store.next_key(from)?.filter(|k| k.starts_with(&prefix)) {
                None => {
                    // No timers left in this key group.
                    self.heads.remove(&(head, kg));
                    self.from.remove(&kg);
                }
                Some(key) => {
                    let (at, payload) = self.parse(&key).ok_or_else(|| damaged(&key))?;
                    if at > head {
                        // The position was before the earliest timer: it moves up to it, and
                        // another key group's timer may come first.
                        self.set_from(kg, key)?;
                        continue;
                    }
                    let payload = payload.to_vec();
                    store.write(vec![(kg, key.clone(), None)])?;
                    // Just past the fired timer: the smallest key after it.
                    let mut past = key;
                    past.push(0);
                    self.set_from(kg, past)?;
                    return Ok(Some((at, payload)));
                }
            }
        }
        Ok(None)
    }

    /// Finds the earliest timer of every key group in `store` (after a restore wrote them there):
    /// at most two seeks per key group with entries.
    pub fn rebuild(&mut self, store: &RawStore) -> Result<()> {
        self.from.clear();
        self.heads.clear();
        let mut kg = 0u32;
        while kg <= u32::from(u16::MAX) {
            let Some(key) = store.next_key(&self.prefix(kg))? else { break };
            let found = super::group_of(&key);
            if super::is_aside(&key) != (self.mark != 0) {
                // Past the entries of this kind (values sort before entries aside).
                break;
            }
            if found != kg {
                // Nothing of this queue in the key groups before the one found.
                kg = found;
                continue;
            }
            if self.parse(&key).is_some() {
                self.set_from(kg, key)?;
            }
            kg += 1;
        }
        Ok(())
    }

    /// Key groups that may hold timers of this queue (what memory holds of it).
    pub fn key_groups(&self) -> usize {
        self.from.len()
    }
}

/// The live timers of the queue kept aside under `tag` in restored raw state (its chunks applied
/// in order, a later write or removal winning): time and payload each. For the heap backend
/// restoring what the disk backend wrote.
pub fn read_raw(raw: &weir_checkpoint::file::RawState, tag: &[u8]) -> Result<Vec<(Timestamp, Vec<u8>)>> {
    let mut latest: HashMap<Vec<u8>, bool> = HashMap::new();
    raw.for_each(|kg, bytes| {
        for (k, v) in weir_checkpoint::decode_raw_chunk(kg, bytes)? {
            if parse_key(true, tag, &k).is_some() {
                latest.insert(k, v.is_some());
            }
        }
        Ok(())
    })?;
    let mut out = Vec::new();
    for (k, live) in latest {
        if let (true, Some((at, payload))) = (live, parse_key(true, tag, &k)) {
            out.push((at, payload.to_vec()));
        }
    }
    Ok(out)
}

/// The time and payload of `key` if it is a store key of timers tagged `tag` (kept aside or not).
pub fn parse_key<'k>(aside: bool, tag: &[u8], key: &'k [u8]) -> Option<(Timestamp, &'k [u8])> {
    if super::is_aside(key) != aside {
        return None;
    }
    let rest = key.get(2..)?.strip_prefix(tag)?;
    let (time, payload) = rest.split_first_chunk::<8>()?;
    Some(((u64::from_be_bytes(*time) ^ (1 << 63)) as Timestamp, payload))
}

fn damaged(key: &[u8]) -> Error {
    Error::damaged(
        "the disk state backend's store",
        format!(
            "a timer key of {} bytes is too short to name its time (damaged, or written by another kind of operator \
             under this uid); restore with the program that wrote the snapshot",
            key.len()
        ),
    )
}
