//! Results checked against values computed independently in the test, at parallelism 1 and 4.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use weir::{AggregateFunction, Job, Registry, Result, StreamEnv};

use crate::driver;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct N {
    n: i64,
}

fn pipeline(env: &mut StreamEnv, a: N) -> Result<()> {
    let evens = env.from_sequence(0, a.n - 1).filter(|x| x % 2 == 0).name("evens");
    let odds = env.from_sequence(0, a.n - 1).filter(|x| x % 2 == 1).map(|x| x * 10).name("odds x10");
    evens
        .union(&[odds])
        .rebalance()
        .flat_map(|x: i64, out: &mut Vec<i64>| {
            if x % 3 != 0 {
                out.push(x);
                out.push(-x);
            }
        })
        .collect("out");
    Ok(())
}
static PIPELINE: Job<N> = Job::new("pipeline", pipeline);

#[test]
fn map_filter_flat_map_union_and_rebalance_match_a_direct_computation() -> Result<()> {
    let n = 5000;
    let mut want: Vec<i64> =
        (0..n).map(|x| if x % 2 == 0 { x } else { x * 10 }).filter(|x| x % 3 != 0).flat_map(|x| [x, -x]).collect();
    want.sort();
    for p in [1, 4] {
        let r = driver(Registry::new().register(&PIPELINE), p).execute(&PIPELINE, N { n })?;
        let mut got: Vec<i64> = r.collected("out")?;
        got.sort();
        assert_eq!(got, want, "p={p}");
    }
    Ok(())
}

fn partitions(env: &mut StreamEnv, a: N) -> Result<()> {
    let src = env.from_sequence(1, a.n).set_parallelism(2);
    src.broadcast().map(|x| x).set_parallelism(3).collect("broadcast").set_parallelism(3);
    src.shuffle().map(|x| x).set_parallelism(3).collect("shuffle").set_parallelism(3);
    src.rebalance().map(|x| x).set_parallelism(3).collect("rebalance").set_parallelism(3);
    src.forward().map(|x| x).collect("forward").set_parallelism(2);
    src.key_by(|x| x % 10).reduce(|a, _| a).set_parallelism(3).collect("hash").set_parallelism(3);
    Ok(())
}
static PARTITIONS: Job<N> = Job::new("partitions", partitions);

#[test]
fn broadcast_shuffle_rebalance_forward_and_hash_deliver_where_they_say() -> Result<()> {
    let n = 3000i64;
    let r = driver(Registry::new().register(&PARTITIONS), 2).execute(&PARTITIONS, N { n })?;
    let all: Vec<i64> = (1..=n).collect();
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    // Broadcast: every subtask gets every record.
    for part in r.collected_by_subtask::<i64>("broadcast")? {
        assert_eq!(sorted(part), all);
    }
    // Rebalance: round-robin from each of the two senders; each receiver within 2 of a third.
    let parts = r.collected_by_subtask::<i64>("rebalance")?;
    assert_eq!(sorted(parts.concat()), all);
    assert!(
        parts.iter().all(|p| (p.len() as i64 - n / 3).abs() <= 2),
        "{:?}",
        parts.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // Shuffle: random, yet every receiver gets a fair share.
    let parts = r.collected_by_subtask::<i64>("shuffle")?;
    assert_eq!(sorted(parts.concat()), all);
    assert!(parts.iter().all(|p| p.len() as i64 > n / 6), "{:?}", parts.iter().map(Vec::len).collect::<Vec<_>>());
    // Forward: subtask i gets exactly what source subtask i read, in order.
    let parts = r.collected_by_subtask::<i64>("forward")?;
    assert_eq!(parts, vec![(1..=n / 2).collect::<Vec<_>>(), (n / 2 + 1..=n).collect::<Vec<_>>()]);
    // Hash: every key on the subtask that owns its key group.
    let parts = r.collected_by_subtask::<i64>("hash")?;
    assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), n as usize);
    for (subtask, part) in parts.iter().enumerate() {
        for x in part {
            let kg = weir_core::keygroup::key_group(&(x % 10), 128);
            assert_eq!(weir_core::keygroup::subtask_for_key_group(kg, 128, 3) as usize, subtask, "key {}", x % 10);
        }
    }
    Ok(())
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Pairs {
    pairs: Vec<(u32, i64)>,
    p: u32,
}

/// Average as an AggregateFunction: (sum, count) -> (sum / count).
#[derive(Clone)]
struct Avg;
impl AggregateFunction<(u32, i64)> for Avg {
    type Acc = (i64, i64);
    type Out = (i64, i64);
    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, v: (u32, i64), acc: &mut (i64, i64)) {
        acc.0 += v.1;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, i64)) -> (i64, i64) {
        (acc.0, acc.1)
    }
    fn merge(&self, other: (i64, i64), acc: &mut (i64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

fn keyed(env: &mut StreamEnv, a: Pairs) -> Result<()> {
    // One ordered source: per key, outputs follow the input order.
    let src = env.from_collection(a.pairs);
    let keyed = src.key_by(|t: &(u32, i64)| t.0);
    keyed.reduce(|x, y| (x.0, x.1.wrapping_add(y.1))).set_parallelism(a.p).collect("reduce");
    keyed.sum(|t| &mut t.1).set_parallelism(a.p).collect("sum");
    keyed.min(|t| &mut t.1).set_parallelism(a.p).collect("min");
    keyed.max(|t| &mut t.1).set_parallelism(a.p).collect("max");
    keyed.fold(Vec::<i64>::new(), |acc, t| acc.push(t.1)).set_parallelism(a.p).collect("fold");
    keyed.aggregate(Avg).set_parallelism(a.p).collect("avg");
    Ok(())
}
static KEYED: Job<Pairs> = Job::new("keyed", keyed);

/// Runs KEYED and checks every output, per key, against running values computed here.
fn check_keyed(pairs: Vec<(u32, i64)>, p: u32) -> Result<()> {
    let r = driver(Registry::new().register(&KEYED), 1).execute(&KEYED, Pairs { pairs: pairs.clone(), p })?;
    let mut by_key: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for (k, v) in &pairs {
        by_key.entry(*k).or_default().push(*v);
    }
    let per_key = |name: &str| -> Result<BTreeMap<u32, Vec<(u32, i64)>>> {
        let mut m: BTreeMap<u32, Vec<(u32, i64)>> = BTreeMap::new();
        for t in r.collected::<(u32, i64)>(name)? {
            m.entry(t.0).or_default().push(t);
        }
        Ok(m)
    };
    let (reduce, sum, min, max) = (per_key("reduce")?, per_key("sum")?, per_key("min")?, per_key("max")?);
    let folds: Vec<Vec<i64>> = r.collected("fold")?;
    let avgs: Vec<(i64, i64)> = r.collected("avg")?;
    assert_eq!(folds.len(), pairs.len());
    assert_eq!(avgs.len(), pairs.len());
    let mut final_folds: HashMap<Vec<i64>, usize> = HashMap::new();
    for f in &folds {
        *final_folds.entry(f.clone()).or_default() += 1;
    }
    for (k, vs) in &by_key {
        let running = |f: fn(i64, i64) -> i64| -> Vec<(u32, i64)> {
            let mut acc = vs[0];
            let mut out = vec![(*k, acc)];
            for v in &vs[1..] {
                acc = f(acc, *v);
                out.push((*k, acc));
            }
            out
        };
        assert_eq!(reduce.get(k), Some(&running(i64::wrapping_add)), "reduce key {k} p={p}");
        assert_eq!(sum.get(k), Some(&running(i64::wrapping_add)), "sum key {k} p={p}");
        assert_eq!(min.get(k), Some(&running(i64::min)), "min key {k} p={p}");
        assert_eq!(max.get(k), Some(&running(i64::max)), "max key {k} p={p}");
        // The fold's states for this key are its prefixes.
        for i in 1..=vs.len() {
            assert!(final_folds.contains_key(&vs[..i]), "fold prefix {i} of key {k}");
        }
        let total: i64 = vs.iter().sum();
        assert!(avgs.contains(&(total, vs.len() as i64)), "avg of key {k}");
    }
    Ok(())
}

#[test]
fn keyed_rolling_aggregations_at_parallelism_1_and_4() -> Result<()> {
    let pairs: Vec<(u32, i64)> = (0..3000i64).map(|i| ((i * 7 % 23) as u32, (i * 31 % 1000) - 500)).collect();
    check_keyed(pairs.clone(), 1)?;
    check_keyed(pairs, 4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn keyed_reduce_equals_running_sums_per_key(
        pairs in proptest::collection::vec((0u32..12, -1000i64..1000), 1..400),
        p in 1u32..5,
    ) {
        prop_assert!(check_keyed(pairs, p).is_ok());
    }
}

fn text(env: &mut StreamEnv, dir: String) -> Result<()> {
    env.read_text_file(format!("{dir}/in"))
        .map(|l: String| l.to_uppercase())
        .set_parallelism(3)
        .write_text(format!("{dir}/out"))
        .set_parallelism(3);
    Ok(())
}
static TEXT: Job<String> = Job::new("text", text);

#[test]
fn text_files_in_and_one_part_file_per_subtask_out() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", "/tmp", e))?;
    let root = dir.path().to_string_lossy().to_string();
    std::fs::create_dir_all(dir.path().join("in")).map_err(|e| weir::Error::io("mkdir", dir.path(), e))?;
    let mut want = Vec::new();
    for f in 0..4 {
        let lines: Vec<String> = (0..250).map(|i| format!("file {f} line {i}")).collect();
        want.extend(lines.iter().map(|l| l.to_uppercase()));
        std::fs::write(dir.path().join(format!("in/{f}.txt")), lines.join("\n"))
            .map_err(|e| weir::Error::io("write", dir.path(), e))?;
    }
    driver(Registry::new().register(&TEXT), 2).execute(&TEXT, root)?;
    let mut got = Vec::new();
    for s in 0..3 {
        let part = dir.path().join(format!("out/part-{s}"));
        let text = std::fs::read_to_string(&part).map_err(|e| weir::Error::io("read", &part, e))?;
        assert!(!text.is_empty(), "part {s} is empty");
        got.extend(text.lines().map(String::from));
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
    Ok(())
}

fn socket(env: &mut StreamEnv, address: String) -> Result<()> {
    env.socket_text_stream(address)
        .flat_map(|l: String, out: &mut Vec<(String, u64)>| {
            out.extend(l.split_whitespace().map(|w| (w.to_string(), 1)))
        })
        .key_by(|t: &(String, u64)| t.0.clone())
        .sum(|t| &mut t.1)
        .collect("counts");
    Ok(())
}
static SOCKET: Job<String> = Job::new("socket", socket);

#[test]
fn socket_text_stream_reads_until_the_peer_closes() -> Result<()> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| weir::Error::io("bind", "127.0.0.1", e))?;
    let addr = listener.local_addr().map_err(|e| weir::Error::io("addr", "127.0.0.1", e))?;
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            for i in 0..100 {
                let _ = writeln!(s, "a b {}", if i % 2 == 0 { "c" } else { "d" });
            }
        }
    });
    let r = driver(Registry::new().register(&SOCKET), 2).execute(&SOCKET, addr.to_string())?;
    let _ = server.join();
    let mut last: HashMap<String, u64> = HashMap::new();
    for (w, c) in r.collected::<(String, u64)>("counts")? {
        let e = last.entry(w).or_default();
        *e = (*e).max(c);
    }
    let want: HashMap<String, u64> =
        [("a", 100), ("b", 100), ("c", 50), ("d", 50)].into_iter().map(|(w, c)| (w.to_string(), c)).collect();
    assert_eq!(last, want);
    Ok(())
}
