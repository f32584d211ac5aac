//! Bad input of every kind: a clear error before the job starts.

use std::sync::atomic::{AtomicU32, Ordering};

use weir::{Error, Job, Registry, Result, StreamEnv};

use crate::driver;

fn message(r: Result<weir::JobClient>) -> String {
    match r {
        Ok(_) => panic!("expected an error before the job starts"),
        Err(e) => e.to_string(),
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Args {
    path: String,
    p: u32,
}

fn job(env: &mut StreamEnv, a: Args) -> Result<()> {
    env.read_text_file(&a.path).map(|l: String| l.len()).name("Length").set_parallelism(a.p).discard();
    Ok(())
}
static JOB: Job<Args> = Job::new("job", job);

#[test]
fn missing_input_parallelism_zero_unknown_job_and_bad_arguments() {
    let d = driver(Registry::new().register(&JOB), 1);
    let e = message(d.execute_async(&JOB, Args { path: "/no/such/input".into(), p: 1 }));
    assert!(e.contains("/no/such/input") && e.contains("pass an existing file or directory"), "{e}");

    let here = env!("CARGO_MANIFEST_DIR").to_string();
    let e = message(d.execute_async(&JOB, Args { path: here.clone(), p: 0 }));
    assert!(e.contains("'Length' was given parallelism 0"), "{e}");

    let e = message(d.execute_named("jbo", &serde_json::json!({})));
    assert!(e.contains("unknown job 'jbo'") && e.contains("registers: job"), "{e}");

    let e = message(d.execute_named("job", &serde_json::json!({"path": here, "p": "four"})));
    assert!(e.contains("invalid arguments for job 'job'"), "{e}");

    let mut d2 = d.clone();
    assert!(d2.set("parallelism.default", "0").is_err());
    let e = d2.set("no.such.key", "1").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("unknown configuration key 'no.such.key'"), "{e}");
}

fn sinks(env: &mut StreamEnv, out: String) -> Result<()> {
    env.from_sequence(0, 10).write_text(out);
    Ok(())
}
static SINKS: Job<String> = Job::new("sinks", sinks);

#[test]
fn an_unwritable_sink_path_is_refused_before_the_job_starts() -> Result<()> {
    let file = tempfile::NamedTempFile::new().map_err(|e| Error::io("tempfile", "/tmp", e))?;
    let path = file.path().to_string_lossy().to_string();
    let d = driver(Registry::new().register(&SINKS), 1);
    let e = message(d.execute_async(&SINKS, path.clone()));
    assert!(e.contains(&path) && e.contains("pass a directory path"), "{e}");
    let e = message(d.execute_async(&SINKS, format!("{path}/below-a-file")));
    assert!(e.contains("cannot create output directory"), "{e}");
    Ok(())
}

fn shapes(env: &mut StreamEnv, which: u32) -> Result<()> {
    let s = env.from_sequence(0, 10);
    match which {
        0 => {
            s.set_parallelism(2).forward().map(|x| x).set_parallelism(3).discard();
        }
        1 => {
            env.socket_text_stream("127.0.0.1:9").set_parallelism(2).discard();
        }
        2 => {
            s.map(|x| x).uid("a").discard().uid("a");
        }
        3 => {
            s.key_by(|x| *x).sum(|x| x).set_parallelism(4).set_max_parallelism(2).discard();
        }
        _ => {
            env.socket_text_stream("not an address").discard();
        }
    }
    Ok(())
}
static SHAPES: Job<u32> = Job::new("shapes", shapes);

#[test]
fn impossible_job_shapes_are_plan_errors() {
    let d = driver(Registry::new().register(&SHAPES), 1);
    let expect = [
        "forward partitioning needs equal parallelism",
        "supports at most parallelism 1",
        "uid 'a' is used by more than one operator",
        "above its max parallelism 2",
        "cannot resolve socket source address",
    ];
    for (i, want) in expect.iter().enumerate() {
        let e = message(d.execute_async(&SHAPES, i as u32));
        assert!(e.contains(want), "case {i}: {e}");
    }
}

static BUILDS: AtomicU32 = AtomicU32::new(0);

fn nondeterministic(env: &mut StreamEnv, _: ()) -> Result<()> {
    // Wrong on purpose: the plan depends on how often the builder ran.
    let p = 1 + BUILDS.fetch_add(1, Ordering::SeqCst) % 2;
    env.from_sequence(0, 10).map(|x| x).set_parallelism(p).discard();
    Ok(())
}
static NONDETERMINISTIC: Job<()> = Job::new("nondeterministic", nondeterministic);

fn fine(env: &mut StreamEnv, _: ()) -> Result<()> {
    env.from_sequence(0, 10).discard();
    Ok(())
}
static FINE: Job<()> = Job::new("fine", fine);

#[test]
fn a_rebuild_with_another_fingerprint_and_a_foreign_job_graph_are_refused() -> Result<()> {
    let d = driver(Registry::new().register(&NONDETERMINISTIC).register(&FINE), 1);
    let e = message(d.execute_async(&NONDETERMINISTIC, ()));
    assert!(e.contains("job graph mismatch") && e.contains("must be deterministic"), "{e}");

    let good = d.job_graph("fine", &serde_json::Value::Null)?;
    let mut other_build = good.clone();
    other_build.format_version += 1;
    let e = message(d.submit(other_build));
    assert!(e.contains("format version"), "{e}");
    let mut other_plan = good.clone();
    other_plan.fingerprint = "0123456789abcdef0123456789abcdef".into();
    let e = message(d.submit(other_plan));
    assert!(e.contains("fingerprint"), "{e}");
    let mut unknown = good.clone();
    unknown.job_name = "gone".into();
    let e = message(d.submit(unknown));
    assert!(e.contains("unknown job 'gone'"), "{e}");
    d.submit(good)?.wait()?;
    Ok(())
}

fn panicking_builder(_env: &mut StreamEnv, _: ()) -> Result<()> {
    panic!("the builder is broken")
}
static PANICKING_BUILDER: Job<()> = Job::new("panicking-builder", panicking_builder);

#[test]
fn a_panicking_builder_is_an_error_not_a_crash() {
    let d = driver(Registry::new().register(&PANICKING_BUILDER), 1);
    let e = message(d.execute_async(&PANICKING_BUILDER, ()));
    assert!(e.contains("the builder of job 'panicking-builder' panicked: the builder is broken"), "{e}");
}
