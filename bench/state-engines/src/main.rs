//! Benchmark of embedded on-disk storage engines for weir's keyed state backend.
//!
//! Workload: a keyed state backend with a write-back cache in front of the engine.
//! Keys are `key_group (u16 BE) ++ key (u64 BE)` (10 bytes), values are 100 bytes.
//!
//! Phases, per engine:
//! 1. bulk load of N distinct keys in random key order, in write batches of 10 000,
//!    followed by a "checkpoint" (memtables flushed / durable commit) and a close;
//!    then the on-disk size is measured and the database is reopened (timed);
//! 2. random read-modify-write: 1 M x (get, then put of a new value) on uniformly random
//!    existing keys, the puts written in batches of 1 000 (a cache flush), then a sync;
//! 3. 1 M random point reads;
//! 4. one full ordered scan of all entries.
//!
//! Each engine runs in its own child process (the binary re-executes itself with
//! `--child`), so that one engine's memory footprint, allocator state or background
//! threads cannot affect the next one, and so that the peak RSS can be reported per engine.
//!
//! Usage: `state-engines [N] [--engines fjall,redb,rocksdb,rocksdb-nowal,sled] [--dir /tmp]
//! [--max-rss-mib 8192]`

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY_LEN: usize = 10;
const VALUE_LEN: usize = 100;
/// Raw key+value bytes of the default data set: 1 GiB.
const DEFAULT_RAW_BYTES: u64 = 1 << 30;
const LOAD_BATCH: usize = 10_000;
const RMW_OPS: usize = 1_000_000;
const RMW_BATCH: usize = 1_000;
const READ_OPS: usize = 1_000_000;
/// Engine cache budget (block cache / page cache / node cache).
const CACHE_BYTES: usize = 64 << 20;
/// Number of key groups (max parallelism) the keys are spread over.
const KEY_GROUPS: u64 = 128;
/// An engine process whose RSS exceeds this is killed (override: `--max-rss-mib`).
const DEFAULT_MAX_RSS: u64 = 8 << 30;

const ALL_ENGINES: &[&str] = &["fjall", "redb", "rocksdb", "rocksdb-nowal", "sled"];

type Key = [u8; KEY_LEN];
type Value = [u8; VALUE_LEN];

// ---------------------------------------------------------------------------
// Data generation (deterministic, no dependencies)

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Small, fast PRNG (xorshift64*), used for choosing keys and filling values.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(splitmix64(seed) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n far below 2^32, so the modulo bias is negligible).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// The key of the i-th entry. `splitmix64` is a bijection on u64, so keys are distinct,
/// and ascending `i` visits them in random key order (the bulk load relies on this).
fn key_of(i: u64) -> Key {
    let user_key = splitmix64(i);
    let key_group = (splitmix64(user_key ^ 0x5EED) % KEY_GROUPS) as u16;
    let mut k = [0u8; KEY_LEN];
    k[..2].copy_from_slice(&key_group.to_be_bytes());
    k[2..].copy_from_slice(&user_key.to_be_bytes());
    k
}

/// A value: 8-byte version (LE) followed by 92 pseudo-random bytes.
fn value_of(i: u64, version: u64) -> Value {
    let mut v = [0u8; VALUE_LEN];
    v[..8].copy_from_slice(&version.to_le_bytes());
    let mut rng = Rng::new(i ^ version.rotate_left(40));
    for chunk in v[8..].chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    v
}

// ---------------------------------------------------------------------------
// Engine abstraction

trait Engine {
    /// Writes all pairs atomically with the engine's batch / transaction API, without fsync.
    fn write_batch(&mut self, items: &[(Key, Value)]);
    /// Point lookup; returns the value's first 8 bytes (the version) if found.
    fn get(&mut self, key: &Key) -> Option<u64>;
    /// Full ordered scan: (entries, key+value bytes, whether keys were ascending).
    fn scan(&mut self) -> (u64, u64, bool);
    /// Makes everything written so far durable. With `full`, also moves buffered data
    /// (memtables) into the engine's main on-disk structure, as a checkpoint would.
    fn sync(&mut self, full: bool);
}

fn version_of(v: &[u8]) -> u64 {
    assert_eq!(v.len(), VALUE_LEN, "unexpected value length");
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

#[cfg(feature = "fjall")]
mod fjall_engine {
    use super::*;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

    pub const VERSION: &str = "3.1.13";

    pub struct Fjall {
        db: Database,
        ks: Keyspace,
    }

    pub fn open(path: &Path) -> Fjall {
        // Defaults otherwise: 64 MiB memtable, 4 KiB blocks, bloom filters, leveled
        // compaction, LZ4 from L2 down, worker threads = min(cores, 4) = 2 here.
        // Write batches are written to the journal (OS buffers) without fsync.
        let db = Database::builder(path).cache_size(CACHE_BYTES as u64).open().unwrap();
        let ks = db.keyspace("state", KeyspaceCreateOptions::default).unwrap();
        Fjall { db, ks }
    }

    impl Engine for Fjall {
        fn write_batch(&mut self, items: &[(Key, Value)]) {
            let mut b = self.db.batch();
            for (k, v) in items {
                b.insert(&self.ks, &k[..], &v[..]);
            }
            b.commit().unwrap();
        }
        fn get(&mut self, key: &Key) -> Option<u64> {
            self.ks.get(key).unwrap().map(|v| version_of(&v))
        }
        fn scan(&mut self) -> (u64, u64, bool) {
            let (mut n, mut bytes, mut sorted) = (0u64, 0u64, true);
            let mut prev: Option<fjall::Slice> = None;
            for g in self.ks.iter() {
                let (k, v) = g.into_inner().unwrap();
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                if let Some(p) = &prev {
                    sorted &= p[..] < k[..];
                }
                prev = Some(k);
            }
            (n, bytes, sorted)
        }
        fn sync(&mut self, full: bool) {
            if full {
                self.ks.rotate_memtable_and_wait().unwrap();
            }
            self.db.persist(PersistMode::SyncAll).unwrap();
        }
    }
}

#[cfg(feature = "redb")]
mod redb_engine {
    use super::*;
    use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

    pub const VERSION: &str = "4.4.0";
    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");

    pub struct Redb {
        db: Database,
        /// Read snapshot reused by `get` until the next write commit (opening a read
        /// transaction per lookup would penalise redb for no reason).
        reader: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    }

    pub fn open(path: &Path) -> Redb {
        let file = path.join("state.redb");
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap();
        txn.commit().unwrap();
        Redb { db, reader: None }
    }

    impl Redb {
        fn commit_empty(&mut self, durability: Durability) {
            let mut txn = self.db.begin_write().unwrap();
            txn.set_durability(durability).unwrap();
            txn.commit().unwrap();
        }
    }

    impl Engine for Redb {
        fn write_batch(&mut self, items: &[(Key, Value)]) {
            self.reader = None;
            // Durability::None: no fsync; made durable by the next Immediate commit (sync()).
            let mut txn = self.db.begin_write().unwrap();
            txn.set_durability(Durability::None).unwrap();
            {
                let mut t = txn.open_table(TABLE).unwrap();
                for (k, v) in items {
                    t.insert(&k[..], &v[..]).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        fn get(&mut self, key: &Key) -> Option<u64> {
            if self.reader.is_none() {
                let txn = self.db.begin_read().unwrap();
                self.reader = Some(txn.open_table(TABLE).unwrap());
            }
            let t = self.reader.as_ref().unwrap();
            t.get(&key[..]).unwrap().map(|g| version_of(g.value()))
        }
        fn scan(&mut self) -> (u64, u64, bool) {
            let txn = self.db.begin_read().unwrap();
            let t = txn.open_table(TABLE).unwrap();
            let (mut n, mut bytes, mut sorted) = (0u64, 0u64, true);
            let mut prev = [0u8; KEY_LEN];
            for e in t.iter().unwrap() {
                let (k, v) = e.unwrap();
                let (k, v) = (k.value(), v.value());
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                if n > 1 {
                    sorted &= prev[..] < k[..];
                }
                prev.copy_from_slice(k);
            }
            (n, bytes, sorted)
        }
        fn sync(&mut self, _full: bool) {
            self.reader = None;
            self.commit_empty(Durability::Immediate);
        }
    }
}

#[cfg(feature = "rocksdb")]
mod rocksdb_engine {
    use super::*;
    use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, Options, WriteBatch, WriteOptions};

    pub const VERSION: &str = "0.25.0 (RocksDB 11.8.1)";

    pub struct Rocks {
        db: DB,
        wo: WriteOptions,
        wal: bool,
        _cache: Cache,
    }

    pub fn open(path: &Path, wal: bool) -> Rocks {
        let cache = Cache::new_lru_cache(CACHE_BYTES);
        let mut bbo = BlockBasedOptions::default();
        bbo.set_block_cache(&cache);
        bbo.set_block_size(4 << 10);
        bbo.set_bloom_filter(10.0, false);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&bbo);
        opts.set_write_buffer_size(64 << 20);
        opts.set_max_background_jobs(2);
        // Same as fjall's default: L0 and L1 uncompressed, LZ4 below.
        use DBCompressionType::{Lz4, None as No};
        opts.set_compression_per_level(&[No, No, Lz4, Lz4, Lz4, Lz4, Lz4]);
        let db = DB::open(&opts, path).unwrap();
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        wo.disable_wal(!wal);
        Rocks { db, wo, wal, _cache: cache }
    }

    impl Engine for Rocks {
        fn write_batch(&mut self, items: &[(Key, Value)]) {
            let mut b = WriteBatch::default();
            for (k, v) in items {
                b.put(k, v);
            }
            self.db.write_opt(b, &self.wo).unwrap();
        }
        fn get(&mut self, key: &Key) -> Option<u64> {
            self.db.get_pinned(key).unwrap().map(|v| version_of(&v))
        }
        fn scan(&mut self) -> (u64, u64, bool) {
            let mut it = self.db.raw_iterator();
            it.seek_to_first();
            let (mut n, mut bytes, mut sorted) = (0u64, 0u64, true);
            let mut prev = [0u8; KEY_LEN];
            while it.valid() {
                let (k, v) = (it.key().unwrap(), it.value().unwrap());
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                if n > 1 {
                    sorted &= prev[..] < k[..];
                }
                prev.copy_from_slice(k);
                it.next();
            }
            it.status().unwrap();
            (n, bytes, sorted)
        }
        fn sync(&mut self, full: bool) {
            if full || !self.wal {
                self.db.flush().unwrap();
            }
            if self.wal {
                self.db.flush_wal(true).unwrap();
            }
        }
    }
}

#[cfg(feature = "sled")]
mod sled_engine {
    use super::*;

    pub const VERSION: &str = "0.34.7";

    pub struct Sled {
        db: sled::Db,
    }

    pub fn open(path: &Path) -> Sled {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES as u64)
            // flush_every_ms stays at its default (500 ms background flush): disabling it did not
            // bound memory either. Mode is left at its default (it is a no-op in 0.34).
            .open()
            .unwrap();
        Sled { db }
    }

    impl Engine for Sled {
        fn write_batch(&mut self, items: &[(Key, Value)]) {
            let mut b = sled::Batch::default();
            for (k, v) in items {
                b.insert(&k[..], &v[..]);
            }
            self.db.apply_batch(b).unwrap();
        }
        fn get(&mut self, key: &Key) -> Option<u64> {
            self.db.get(key).unwrap().map(|v| version_of(&v))
        }
        fn scan(&mut self) -> (u64, u64, bool) {
            let (mut n, mut bytes, mut sorted) = (0u64, 0u64, true);
            let mut prev = [0u8; KEY_LEN];
            for e in self.db.iter() {
                let (k, v) = e.unwrap();
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                if n > 1 {
                    sorted &= prev[..] < k[..];
                }
                prev.copy_from_slice(&k);
            }
            (n, bytes, sorted)
        }
        fn sync(&mut self, _full: bool) {
            self.db.flush().unwrap();
        }
    }
}

fn engine_version(name: &str) -> &'static str {
    match name {
        #[cfg(feature = "fjall")]
        "fjall" => fjall_engine::VERSION,
        #[cfg(feature = "redb")]
        "redb" => redb_engine::VERSION,
        #[cfg(feature = "rocksdb")]
        "rocksdb" | "rocksdb-nowal" => rocksdb_engine::VERSION,
        #[cfg(feature = "sled")]
        "sled" => sled_engine::VERSION,
        _ => "?",
    }
}

fn open_engine(name: &str, path: &Path) -> Box<dyn Engine> {
    match name {
        #[cfg(feature = "fjall")]
        "fjall" => Box::new(fjall_engine::open(path)),
        #[cfg(feature = "redb")]
        "redb" => Box::new(redb_engine::open(path)),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocksdb_engine::open(path, true)),
        #[cfg(feature = "rocksdb")]
        "rocksdb-nowal" => Box::new(rocksdb_engine::open(path, false)),
        #[cfg(feature = "sled")]
        "sled" => Box::new(sled_engine::open(path)),
        _ => panic!("engine {name:?} unknown or not compiled in"),
    }
}

// ---------------------------------------------------------------------------
// Measurement helpers

/// Disk usage of a directory tree like `du`: allocated blocks, not apparent size.
fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        total += md.blocks() * 512;
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    total
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Current resident set size of another process.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn loadavg() -> f64 {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn log(engine: &str, msg: impl AsRef<str>) {
    eprintln!("[{engine}] {}", msg.as_ref());
}

/// Results of one engine, exchanged between child and parent as `key=value` pairs.
#[derive(Default, Debug)]
struct Results {
    n: u64,
    load_s: f64,
    disk_load: u64,
    reopen_s: f64,
    rmw_s: f64,
    /// Part of `rmw_s` spent in batch writes (and the final sync), the rest is gets.
    rmw_write_s: f64,
    read_s: f64,
    scan_s: f64,
    scan_n: u64,
    disk_end: u64,
    peak_rss: u64,
    /// 5-minute load average of the machine when the engine finished (filled by the parent).
    loadavg: f64,
}

impl Results {
    fn encode(&self) -> String {
        format!(
            "n={} load_s={} disk_load={} reopen_s={} rmw_s={} rmw_write_s={} read_s={} scan_s={} scan_n={} disk_end={} peak_rss={}",
            self.n,
            self.load_s,
            self.disk_load,
            self.reopen_s,
            self.rmw_s,
            self.rmw_write_s,
            self.read_s,
            self.scan_s,
            self.scan_n,
            self.disk_end,
            self.peak_rss
        )
    }
    fn decode(line: &str) -> Option<Results> {
        let mut r = Results::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "n" => r.n = v.parse().ok()?,
                "load_s" => r.load_s = v.parse().ok()?,
                "disk_load" => r.disk_load = v.parse().ok()?,
                "reopen_s" => r.reopen_s = v.parse().ok()?,
                "rmw_s" => r.rmw_s = v.parse().ok()?,
                "rmw_write_s" => r.rmw_write_s = v.parse().ok()?,
                "read_s" => r.read_s = v.parse().ok()?,
                "scan_s" => r.scan_s = v.parse().ok()?,
                "scan_n" => r.scan_n = v.parse().ok()?,
                "disk_end" => r.disk_end = v.parse().ok()?,
                "peak_rss" => r.peak_rss = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }
}

// ---------------------------------------------------------------------------
// The workload (runs in the child process)

fn run_engine(name: &str, n: u64, dir: &Path) -> Results {
    let mut r = Results { n, ..Default::default() };
    std::fs::create_dir_all(dir).unwrap();

    // 1. Bulk load, random key order, batches of 10 000, then checkpoint and close.
    let mut engine = open_engine(name, dir);
    let mut batch: Vec<(Key, Value)> = Vec::with_capacity(LOAD_BATCH);
    let t = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let mut i = 0u64;
    while i < n {
        batch.clear();
        let end = (i + LOAD_BATCH as u64).min(n);
        for j in i..end {
            batch.push((key_of(j), value_of(j, 0)));
        }
        engine.write_batch(&batch);
        i = end;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            log(name, format!("load {:.1}% after {:.0?}", 100.0 * i as f64 / n as f64, t.elapsed()));
        }
    }
    engine.sync(true);
    r.load_s = t.elapsed().as_secs_f64();
    log(name, format!("load done in {:.1}s", r.load_s));
    drop(engine);
    r.disk_load = du(dir);

    let t = Instant::now();
    let mut engine = open_engine(name, dir);
    r.reopen_s = t.elapsed().as_secs_f64();

    // 2. Random read-modify-write; puts are flushed in batches of 1 000.
    let mut rng = Rng::new(1);
    let t = Instant::now();
    let mut batch: Vec<(Key, Value)> = Vec::with_capacity(RMW_BATCH);
    let mut write_time = Duration::ZERO;
    for op in 0..RMW_OPS {
        let idx = rng.below(n);
        let key = key_of(idx);
        let version = engine.get(&key).expect("RMW: key missing");
        batch.push((key, value_of(idx, version + 1)));
        if batch.len() == RMW_BATCH || op + 1 == RMW_OPS {
            let tw = Instant::now();
            engine.write_batch(&batch);
            write_time += tw.elapsed();
            batch.clear();
        }
    }
    let tw = Instant::now();
    engine.sync(false);
    write_time += tw.elapsed();
    r.rmw_s = t.elapsed().as_secs_f64();
    r.rmw_write_s = write_time.as_secs_f64();
    log(name, format!("rmw done in {:.1}s", r.rmw_s));

    // 3. Random point reads.
    let mut rng = Rng::new(2);
    let t = Instant::now();
    let mut checksum = 0u64;
    for _ in 0..READ_OPS {
        let key = key_of(rng.below(n));
        checksum = checksum.wrapping_add(engine.get(&key).expect("read: key missing"));
    }
    r.read_s = t.elapsed().as_secs_f64();
    log(name, format!("reads done in {:.1}s (versions sum {checksum})", r.read_s));

    // 4. Full ordered scan.
    let t = Instant::now();
    let (count, bytes, sorted) = engine.scan();
    r.scan_s = t.elapsed().as_secs_f64();
    r.scan_n = count;
    assert!(sorted, "{name}: scan was not in key order");
    assert_eq!(count, n, "{name}: scan saw {count} entries, expected {n}");
    assert_eq!(bytes, n * (KEY_LEN + VALUE_LEN) as u64);
    log(name, format!("scan done in {:.1}s", r.scan_s));

    drop(engine);
    r.disk_end = du(dir);
    r.peak_rss = peak_rss_bytes();
    r
}

// ---------------------------------------------------------------------------
// Parent: spawn one child per engine and print the table

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let name = &args[2];
        let n: u64 = args[3].parse().unwrap();
        let dir = PathBuf::from(&args[4]);
        let r = run_engine(name, n, &dir);
        println!("RESULT {}", r.encode());
        return;
    }

    let mut n = DEFAULT_RAW_BYTES / (KEY_LEN + VALUE_LEN) as u64;
    let mut engines: Vec<String> =
        ALL_ENGINES.iter().filter(|e| engine_version(e) != "?").map(|s| s.to_string()).collect();
    let mut base = std::env::temp_dir();
    let mut max_rss: u64 = DEFAULT_MAX_RSS;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--engines" => engines = it.next().expect("--engines needs a list").split(',').map(String::from).collect(),
            "--max-rss-mib" => max_rss = it.next().expect("--max-rss-mib needs a number").parse::<u64>().unwrap() << 20,
            "--dir" => base = PathBuf::from(it.next().expect("--dir needs a path")),
            s => {
                n = s
                    .replace('_', "")
                    .parse()
                    .expect("usage: state-engines [N] [--engines a,b] [--dir D] [--max-rss-mib M]")
            }
        }
    }
    let run_dir = base.join(format!("state-engines-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).unwrap();

    eprintln!(
        "N = {n} keys, {:.2} GiB raw key+value bytes; engines: {}; data under {}",
        (n * (KEY_LEN + VALUE_LEN) as u64) as f64 / (1u64 << 30) as f64,
        engines.join(", "),
        run_dir.display()
    );

    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for name in &engines {
        let dir = run_dir.join(name);
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["--child", name, &n.to_string(), dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        // Memory guard: an engine whose RSS exceeds the limit is killed and reported as failed
        // (the machine must stay usable; sled 0.34 grows without bound at full size).
        let mut killed = None;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            let rss = rss_of(child.id());
            if killed.is_none() && rss > max_rss {
                log(name, format!("RSS {:.0} MiB exceeds limit, killing", mib(rss)));
                killed = Some(format!(
                    "killed: RSS {:.1} GiB > limit after {:.0} s",
                    rss as f64 / (1u64 << 30) as f64,
                    started.elapsed().as_secs_f64()
                ));
                child.kill().unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let res = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).and_then(Results::decode);
        match (res, killed) {
            (_, Some(why)) => rows.push((name.clone(), Err(why))),
            (Some(mut r), None) if status.success() => {
                r.loadavg = loadavg();
                rows.push((name.clone(), Ok(r)))
            }
            _ => rows.push((name.clone(), Err(format!("failed: {status}")))),
        }
        // Let write-back of the deleted files settle before the next engine starts.
        let _ = Command::new("sync").status();
        std::thread::sleep(Duration::from_secs(5));
    }
    let _ = std::fs::remove_dir_all(&run_dir);

    let mut table = String::new();
    table += &format!(
        "N = {n} keys ({:.2} GiB raw), load batch {LOAD_BATCH}, RMW {RMW_OPS} ops in batches of {RMW_BATCH}, {READ_OPS} reads, cache {} MiB\n\n",
        (n * (KEY_LEN + VALUE_LEN) as u64) as f64 / (1u64 << 30) as f64,
        CACHE_BYTES >> 20
    );
    table += "| engine | version | load s | load keys/s | disk after load MiB | reopen s | RMW ops/s | RMW % in writes | get ops/s | scan s | scan keys/s | disk at end MiB | peak RSS MiB | loadavg 5m |\n";
    table += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (name, r) in &rows {
        match r {
            Ok(r) => {
                table += &format!(
                    "| {name} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} |\n",
                    engine_version(name),
                    r.load_s,
                    r.n as f64 / r.load_s,
                    mib(r.disk_load),
                    r.reopen_s,
                    RMW_OPS as f64 / r.rmw_s,
                    100.0 * r.rmw_write_s / r.rmw_s,
                    READ_OPS as f64 / r.read_s,
                    r.scan_s,
                    r.scan_n as f64 / r.scan_s,
                    mib(r.disk_end),
                    mib(r.peak_rss),
                    r.loadavg
                )
            }
            Err(e) => table += &format!("| {name} | {} | {e} | | | | | | | | | | | |\n", engine_version(name)),
        }
    }
    print!("{table}");
    std::io::stdout().flush().unwrap();
}
