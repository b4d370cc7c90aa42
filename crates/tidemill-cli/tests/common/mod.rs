//! Running the `tidemill` binary from tests, and reading what it prints.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub fn tidemill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidemill"))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", tidemill::new_uuid().replace('-', ""))
}

pub fn run(args: &[&str]) -> Output {
    tidemill().args(args).output().expect("tidemill runs")
}

/// Runs with `input` on standard input (`None`: standard input is closed at once).
pub fn run_with_stdin(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = tidemill()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidemill runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tidemill failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "tidemill succeeded: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

pub fn payloads(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["payload"].as_str().expect("a text payload").to_owned()
        })
        .collect()
}
