//! Sessionization of a generated click stream with out-of-order events.
//!
//! ```text
//! cargo run --release --example sessions              # 200,000 clicks
//! cargo run --release --example sessions -- 1000000 -p 2
//! ```
//!
//! Clicks of 50 users arrive every 10 ms of event time, each up to 1.5 s late (out of order). A
//! user's session ends after 3 s without clicks. The job assigns event time with bounded
//! out-of-orderness (2 s), keys by user, cuts event-time session windows and reports each
//! session: user, start, end, clicks and distinct pages. The driver prints a summary.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use weir::{App, Error, EventTimeSessionWindows, Job, Result, StreamEnv, TimeWindow, WatermarkStrategy};

/// A click: (user, event time in ms, page).
type Click = (u32, i64, u32);
/// A session: (user, start, end, clicks, distinct pages).
type Session = (u32, i64, i64, usize, usize);

const USERS: u64 = 50;
const GAP_MS: u64 = 3_000;
const MAX_LATENESS_MS: i64 = 1_500;

/// Click number `i`: deterministic, so every parallel instance and every rerun agrees.
fn click(i: u64) -> Click {
    let h = weir_hash(i);
    // Users click in bursts: a user is picked from a small active group that drifts over time.
    let group = (i / 400) % USERS;
    let user = ((group + h % 7) % USERS) as u32;
    let jitter = (h >> 20) as i64 % MAX_LATENESS_MS;
    let page = ((h >> 40) % 25) as u32;
    (user, (i as i64) * 10 - jitter, page)
}

fn weir_hash(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    clicks: u64,
}

fn sessions(env: &mut StreamEnv, args: Args) -> Result<()> {
    env.datagen(Some(args.clicks), None, click)
        .name("Clicks")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(2_000))
                .with_timestamp_assigner(|c: &Click, _| c.1),
        )
        .key_by(|c: &Click| c.0)
        .window(EventTimeSessionWindows::with_gap(Duration::from_millis(GAP_MS)))
        .process(|user: &u32, w: &TimeWindow, clicks: &[Click], out: &mut Vec<Session>| {
            let pages: HashSet<u32> = clicks.iter().map(|c| c.2).collect();
            out.push((*user, w.start, w.end, clicks.len(), pages.len()));
        })
        .name("Sessions")
        .collect("sessions");
    Ok(())
}

static SESSIONS: Job<Args> = Job::new("sessions", sessions);

fn main() -> ExitCode {
    App::new("sessions").job(&SESSIONS).run(|driver, args| {
        let mut clicks = 200_000;
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "-p" => {
                    driver.set("parallelism.default", rest.next().map(String::as_str).unwrap_or(""))?;
                }
                n => {
                    clicks = n.parse().map_err(|_| {
                        Error::Config(format!("'{n}' is not a number of clicks; usage: sessions [CLICKS] [-p N]"))
                    })?
                }
            };
        }
        let result = driver.execute(&SESSIONS, Args { clicks })?;
        let mut sessions: Vec<Session> = result.collected("sessions")?;
        sessions.sort();
        let total: usize = sessions.iter().map(|s| s.3).sum();
        let longest = sessions.iter().max_by_key(|s| s.2 - s.1);
        println!("{} clicks of {} users in {} sessions", total, USERS, sessions.len());
        println!("average {:.1} clicks per session", total as f64 / sessions.len().max(1) as f64);
        if let Some(s) = longest {
            println!(
                "longest: user {} from {} ms to {} ms ({:.1} s, {} clicks, {} pages)",
                s.0,
                s.1,
                s.2,
                (s.2 - s.1) as f64 / 1000.0,
                s.3,
                s.4
            );
        }
        eprintln!("sessionized in {:.1} ms (job {})", result.net_runtime().as_secs_f64() * 1e3, result.job_id());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use weir::{Driver, Registry};

    /// Sessions computed directly: per user, clicks sorted by time, split at gaps of 3 s or more.
    fn expected(n: u64) -> Vec<Session> {
        let mut per_user: HashMap<u32, Vec<Click>> = HashMap::new();
        for i in 0..n {
            let c = click(i);
            per_user.entry(c.0).or_default().push(c);
        }
        let mut out = Vec::new();
        for (user, mut cs) in per_user {
            cs.sort_by_key(|c| c.1);
            let mut start = 0;
            for i in 1..=cs.len() {
                if i == cs.len() || cs[i].1 - cs[i - 1].1 >= GAP_MS as i64 {
                    let s = &cs[start..i];
                    let pages: HashSet<u32> = s.iter().map(|c| c.2).collect();
                    out.push((user, s[0].1, s[s.len() - 1].1 + GAP_MS as i64, s.len(), pages.len()));
                    start = i;
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn sessions_match_a_direct_computation_at_parallelism_1_and_4() -> Result<()> {
        // No click is later than the out-of-orderness bound, so none is dropped, however the
        // periodic watermarks fall: the result does not depend on timing.
        let n = 40_000;
        let want = expected(n);
        assert!(want.len() > 100, "the stream should form many sessions: {}", want.len());
        for p in [1, 4] {
            let d = Driver::local(Registry::new().register(&SESSIONS)).with_parallelism(p)?;
            let mut got: Vec<Session> = d.execute(&SESSIONS, Args { clicks: n })?.collected("sessions")?;
            got.sort();
            assert_eq!(got, want, "p={p}");
        }
        Ok(())
    }
}
