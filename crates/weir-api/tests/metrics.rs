//! Metrics of a job on the embedded cluster: Flink's task and operator metrics with their
//! variables, and metrics a user function registers through its context, in the process's
//! registry while the job runs and gone once it ends.

use std::time::{Duration, Instant};

use weir_api::{Counter, Driver, Job, KeyedContext, KeyedProcessFunction, Registry, StreamEnv};
use weir_core::Result;
use weir_core::metric::{GroupSample, Sample};

/// Counts what it sees in a metric of its own, and in a user group with a variable.
#[derive(Clone, Default)]
struct Tally {
    seen: Option<Counter>,
    eu: Option<Counter>,
}

impl KeyedProcessFunction<u32, u32> for Tally {
    type Out = u32;
    fn process_element(&mut self, record: u32, ctx: &mut KeyedContext<'_, u32, u32>) -> Result<()> {
        self.seen.get_or_insert_with(|| ctx.metric_group().counter("userRecords")).inc();
        if record.is_multiple_of(2) {
            self.eu
                .get_or_insert_with(|| ctx.metric_group().add_group_with("region", "eu").counter("evenRecords"))
                .inc();
        }
        ctx.collect(record);
        Ok(())
    }
}

fn tallied(env: &mut StreamEnv, _: ()) -> Result<()> {
    env.datagen(None, Some(2000.0), |i| i as u32).key_by(|x: &u32| x % 3).process(Tally::default()).discard();
    Ok(())
}

static TALLIED: Job<()> = Job::new("tallied", tallied);

fn number(g: &GroupSample, name: &str) -> f64 {
    g.metric(name).map(Sample::number).unwrap_or(f64::NAN)
}

#[test]
fn a_running_job_reports_flinks_metrics_and_its_functions_own() -> Result<()> {
    let driver = Driver::local(Registry::new().register(&TALLIED)).with_parallelism(2)?;
    let job = driver.execute_async(&TALLIED, ())?;
    let id = job.job_id().to_string();
    let registry = weir_metrics::global();
    let deadline = Instant::now() + Duration::from_secs(30);
    let groups = loop {
        let groups = registry.samples_where("job_id", &id);
        let user: f64 = groups.iter().map(|g| number(g, "userRecords")).filter(|v| !v.is_nan()).sum();
        let even = groups.iter().any(|g| g.var("region") == Some("eu") && number(g, "evenRecords") > 0.0);
        if (user > 100.0 && even) || Instant::now() > deadline {
            break groups;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    job.cancel()?;
    let _ = job.wait();
    let scopes: Vec<&str> = groups.iter().map(|g| g.scope.as_str()).collect();
    // The user's counter sits in the keyed operator's group, with every variable Flink gives it.
    let process: Vec<&GroupSample> = groups.iter().filter(|g| g.metric("userRecords").is_some()).collect();
    assert_eq!(process.len(), 2, "one per subtask: {scopes:?}");
    for g in &process {
        assert_eq!(g.scope, "taskmanager.job.task.operator");
        for var in ["host", "tm_id", "job_id", "job_name", "task_id", "task_name", "subtask_index", "operator_name"] {
            assert!(g.var(var).is_some_and(|v| !v.is_empty()), "{var} missing: {g:?}");
        }
        assert_eq!(g.var("job_name"), Some("tallied"));
        // Its own records count as numRecordsIn, and every one passed the function. The two
        // counters are read a moment apart while records flow (2000 a second), so the later one
        // may be ahead by the records of that moment: a few, never hundreds.
        let (seen, counted) = (number(g, "numRecordsIn"), number(g, "userRecords"));
        assert!(counted > 0.0 && (counted - seen).abs() <= 100.0, "{g:?}");
    }
    let even = groups.iter().find(|g| g.var("region") == Some("eu")).map(|g| g.scope.clone());
    assert_eq!(even.as_deref(), Some("taskmanager.job.task.operator.region"));
    // The tasks have Flink's I/O figures.
    let Some(task) = groups.iter().find(|g| g.scope == "taskmanager.job.task") else {
        panic!("no task group among {scopes:?}")
    };
    for m in
        ["numRecordsIn", "numRecordsOut", "idleTimeMsPerSecond", "busyTimeMsPerSecond", "backPressuredTimeMsPerSecond"]
    {
        assert!(task.metric(m).is_some(), "{m} missing: {task:?}");
    }
    // Once the job has ended, nothing of it is reported any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.samples_where("job_id", &id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(registry.samples_where("job_id", &id).is_empty(), "an ended job's metrics stay");
    Ok(())
}
