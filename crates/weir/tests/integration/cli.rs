//! The `weir` executable and a user binary's reserved `--info` flag, run as processes.

use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run weir: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bundled() -> String {
    format!("{{\"input\": \"{}/../../examples/data/gettysburg.txt\"}}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn run_prints_rolling_counts_with_subtask_prefixes() {
    let out = weir(&["run", "wordcount", "--args", &bundled(), "-p", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 272, "one update per word");
    assert!(lines.iter().all(|l| l.starts_with("1> (") || l.starts_with("2> (")), "{stdout}");
    assert!(lines.iter().any(|l| l.ends_with("(\"that\", 13)")), "{stdout}");
    assert!(text(&out.stderr).contains("FINISHED"));
}

#[test]
fn bad_input_exits_2_with_a_message_that_says_what_to_do() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["run", "wc"],
            "unknown job 'wc'; this artifact registers: generate, kafka-to-parquet, kafka-wordcount, keyed-sums, wordcount",
        ),
        (&["run", "wordcount", "--args", "{oops"], "--args is not valid JSON"),
        (&["run", "wordcount", "--args", "{\"input\": \"/nope\"}"], "pass an existing file or directory"),
        (&["run", "wordcount", "--args", "{\"inptu\": \"x\"}"], "unknown field `inptu`"),
        (&["run", "wordcount", "-D", "parallelism.defualt=2", "--args", "{}"], "unknown configuration key"),
        (&["run", "wordcount", "-p", "0", "--args", "{}"], "parallelism.default must be between 1 and 32768, not 0"),
    ];
    for (args, want) in cases {
        let out = weir(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{args:?}: {}", text(&out.stderr));
    }
    let out = weir(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn info_prints_the_plan_as_json_and_dot() {
    let out = weir(&["info", "wordcount", "--args", &bundled(), "-p", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(j) => j,
        Err(e) => panic!("not JSON ({e}): {}", text(&out.stdout)),
    };
    let nodes = json["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 2, "source+tokenizer chained, count+print chained: {json}");
    assert_eq!(nodes[1]["inputs"][0]["ship_strategy"], "HASH");
    assert_eq!(nodes[0]["parallelism"], 3);
    assert_eq!(json["fingerprint"].as_str().map(str::len), Some(32));

    let out = weir(&["info", "wordcount", "--args", &bundled(), "--format", "dot"]);
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph \"wordcount\"") && dot.contains("[label=\"HASH\"]"), "{dot}");

    let out = weir(&["info"]);
    assert!(text(&out.stdout).contains("wordcount"));
}

#[test]
fn a_user_binary_answers_info_and_runs_its_driver() {
    let bin = crate::example("wordcount");
    let out = Command::new(&bin).args(["--info", "wordcount", "--args", &bundled()]).output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run {}: {e} (cargo test builds examples)", bin.display()),
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"Tokenizer\""), "{}", text(&out.stdout));

    let out = Command::new(&bin).args(["--info", "nope"]).output();
    let err = out.map(|o| text(&o.stderr)).unwrap_or_default();
    assert!(err.contains("unknown job 'nope'; this artifact registers: wordcount"), "{err}");
}

/// The word counts of the bundled text, computed here without weir, as the example prints them.
fn expected_counts() -> Vec<String> {
    let path = format!("{}/../../examples/data/gettysburg.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts: std::collections::HashMap<String, u64> = Default::default();
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(w.to_lowercase()).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().map(|(w, c)| format!("{c:>6}  {w}")).collect()
}

#[test]
fn the_wordcount_example_counts_like_an_independent_count_at_parallelism_1_and_4() {
    let want = expected_counts();
    assert!(want.len() > 100 && want[0] == "    13  that", "{:?}", &want[..3]);
    for p in ["1", "4"] {
        let out = match Command::new(crate::example("wordcount")).args(["-p", p]).output() {
            Ok(o) => o,
            Err(e) => panic!("cannot run the wordcount example: {e}"),
        };
        assert!(out.status.success(), "p={p}: {}", text(&out.stderr));
        let got: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
        assert_eq!(got, want, "p={p}");
        assert!(text(&out.stderr).contains("138 distinct words, 272 in all"), "{}", text(&out.stderr));
    }
    let out = Command::new(crate::example("wordcount")).arg("/no/such/dir").output();
    let (code, err) = out.map(|o| (o.status.code(), text(&o.stderr))).unwrap_or_default();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/no/such/dir"), "{err}");
}

fn prefixes(out: &Output) -> std::collections::BTreeSet<String> {
    text(&out.stdout).lines().filter_map(|l| l.split_once("> ").map(|(p, _)| p.to_string())).collect()
}

#[test]
fn a_configuration_file_sets_parallelism_and_d_overrides_it() -> weir::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", "/tmp", e))?;
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "parallelism:\n  default: 3\n").map_err(|e| weir::Error::io("write", &file, e))?;
    let path = file.to_string_lossy().to_string();
    let out = weir(&["run", "wordcount", "--args", &bundled(), "--config", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(prefixes(&out), ["1", "2", "3"].iter().map(|s| s.to_string()).collect());
    let out = weir(&["run", "wordcount", "--args", &bundled(), "--config", &path, "-D", "parallelism.default=2"]);
    assert_eq!(prefixes(&out), ["1", "2"].iter().map(|s| s.to_string()).collect());
    // The same file found through WEIR_CONF_DIR.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "wordcount", "--args", &bundled()])
        .env("WEIR_CONF_DIR", dir.path())
        .output()
        .map_err(|e| weir::Error::io("run", "weir", e))?;
    assert_eq!(prefixes(&out), ["1", "2", "3"].iter().map(|s| s.to_string()).collect());

    std::fs::write(&file, "parallelism.default: 2\ntaskmanager.numberOfTaskSlot: 4\n")
        .map_err(|e| weir::Error::io("write", &file, e))?;
    let out = weir(&["run", "wordcount", "--args", &bundled(), "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&path) && err.contains("unknown configuration key 'taskmanager.numberOfTaskSlot'"), "{err}");

    let empty = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", "/tmp", e))?;
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "wordcount", "--args", &bundled()])
        .env("WEIR_CONF_DIR", empty.path())
        .output()
        .map_err(|e| weir::Error::io("run", "weir", e))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds no config.yaml"), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn an_attached_local_run_shows_progress() {
    // 2.5 s of generated records: at least one progress line, and the count it shows is real.
    let out = weir(&["run", "generate", "--args", r#"{"count": 2500, "rate": 1000}"#, "-p", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let shown: Vec<u64> = err
        .lines()
        .filter_map(|l| l.split(" is RUNNING: ").nth(1))
        .filter_map(|r| r.strip_suffix(" records read"))
        .filter_map(|n| n.replace(',', "").parse().ok())
        .collect();
    assert!(!shown.is_empty(), "no progress line: {err}");
    assert!(shown.windows(2).all(|w| w[0] < w[1]) && shown.iter().all(|&n| n > 0 && n < 2500), "{err}");
}
