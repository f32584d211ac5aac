//! Word count: the classic first streaming job.
//!
//! ```text
//! cargo run --release --example wordcount                 # the bundled text
//! cargo run --release --example wordcount -- FILE_OR_DIR -p 4
//! cargo run --release --example wordcount -- --info wordcount --args '{"input":"x.txt"}' --format dot
//! ```
//!
//! The job reads text, splits it into words, keys by word and keeps a running count per word,
//! emitting the updated count for every word it sees (as Flink's `sum` does). The driver collects
//! those updates and prints each word's final count, most frequent first.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use weir::{App, Error, Job, Result, StreamEnv};

/// The job's arguments.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    /// A text file or a directory of text files.
    input: PathBuf,
}

fn wordcount(env: &mut StreamEnv, args: Args) -> Result<()> {
    env.read_text_file(&args.input)
        .flat_map(|line: String, out: &mut Vec<(String, u64)>| {
            for word in line.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                out.push((word.to_lowercase(), 1));
            }
        })
        .name("Tokenizer")
        .key_by(|(word, _): &(String, u64)| word.clone())
        .sum(|(_, count)| count)
        .name("Count")
        .collect("counts");
    Ok(())
}

static WORDCOUNT: Job<Args> = Job::new("wordcount", wordcount);

/// The final count of every word: the largest running count seen for it.
fn final_counts(updates: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for (w, c) in updates {
        let e = last.entry(w).or_default();
        *e = (*e).max(c);
    }
    let mut v: Vec<_> = last.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn bundled_text() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/gettysburg.txt")
}

fn main() -> ExitCode {
    App::new("wordcount").job(&WORDCOUNT).run(|driver, args| {
        let mut input = bundled_text();
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "-p" => {
                    let p = rest.next().ok_or_else(|| Error::Config("-p needs a number".into()))?;
                    driver.set("parallelism.default", p)?;
                }
                flag if flag.starts_with('-') => {
                    return Err(Error::Config(format!("unknown flag '{flag}'; usage: wordcount [FILE_OR_DIR] [-p N]")));
                }
                path => input = PathBuf::from(path),
            }
        }
        let result = driver.execute(&WORDCOUNT, Args { input })?;
        let counts = final_counts(result.collected("counts")?);
        let mut out = std::io::stdout().lock();
        for (word, count) in &counts {
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "{count:>6}  {word}").is_err() {
                break;
            }
        }
        eprintln!(
            "{} distinct words, {} in all, counted in {:.1} ms (job {})",
            counts.len(),
            counts.iter().map(|c| c.1).sum::<u64>(),
            result.net_runtime().as_secs_f64() * 1e3,
            result.job_id()
        );
        Ok(())
    })
}
