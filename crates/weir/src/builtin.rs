//! Jobs built into the stock `weir` executable.

use std::path::PathBuf;

use weir_api::{Job, Registry, StreamEnv};
use weir_core::Result;

/// Arguments of [`WORDCOUNT`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordCountArgs {
    /// A text file, or a directory of text files.
    pub input: PathBuf,
    /// A directory to write `word count` lines into (one file per subtask); standard output if
    /// absent.
    #[serde(default)]
    pub output: Option<PathBuf>,
}

/// Splits text into lower-case words (letters, digits and apostrophes).
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn wordcount(env: &mut StreamEnv, args: WordCountArgs) -> Result<()> {
    let counts = env
        .read_text_file(&args.input)
        .flat_map(|line: String, out: &mut Vec<(String, u64)>| out.extend(words(&line).map(|w| (w, 1))))
        .name("Tokenizer")
        .key_by(|t: &(String, u64)| t.0.clone())
        .sum(|t| &mut t.1)
        .name("Count");
    match args.output {
        Some(dir) => {
            counts.map(|(w, c)| format!("{w} {c}")).name("Format").write_text(dir);
        }
        None => {
            counts.print();
        }
    }
    Ok(())
}

/// Word count over text files: rolling counts per word, printed or written as text.
pub static WORDCOUNT: Job<WordCountArgs> = Job::new("wordcount", wordcount);

/// Arguments of [`GENERATE`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateArgs {
    /// Records per second in all (absent: as fast as possible).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Records in all (absent: without end).
    #[serde(default)]
    pub count: Option<u64>,
}

fn generate(env: &mut StreamEnv, args: GenerateArgs) -> Result<()> {
    env.datagen(args.count, args.rate, |i| i)
        .map(|i| (i % 1000, i))
        .name("Tag")
        .key_by(|t: &(u64, u64)| t.0)
        .sum(|t| &mut t.1)
        .name("Sum")
        .discard();
    Ok(())
}

/// Generated numbers, keyed and summed, into a discarding sink: a load or a long-running job to
/// try clusters with (`{"rate": 1000}`; `{"count": N}` ends it).
pub static GENERATE: Job<GenerateArgs> = Job::new("generate", generate);

/// The jobs of the stock executable.
pub fn registry() -> Registry {
    Registry::new().register(&WORDCOUNT).register(&GENERATE)
}
