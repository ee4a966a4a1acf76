//! `onair push` as a user runs it: the binary's exit codes, help and output.
#![cfg(feature = "source")]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// Runs `onair push ARGS` off the async runtime's threads.
async fn onair_push(args: Vec<String>) -> Output {
    let run = move || {
        Command::new(ONAIR)
            .arg("push")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    within_secs(30, tokio::task::spawn_blocking(run)).await.unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn exit_codes_tell_usage_key_and_stream_errors_apart() {
    let relay = TestRelay::start().await;
    let url = relay.url("/ingest/radio");
    let (tone, broken, nope) =
        (sample_arg("tone-1k.m4a"), sample_arg("broken.mp3"), relay.url("/ingest/nope"));
    let cases: [(Vec<&str>, i32, &str); 6] = [
        (vec!["--to", &url, "--key", "SECRET", "--fast", &tone], 0, "playlist finished"),
        (vec!["--to", &url, "--key", "WRONG", "--fast", &tone], 3, "401"),
        (vec!["--to", &nope, "--key", "SECRET", &tone], 4, "404"),
        (vec!["--to", &url, "--channels", "5", &tone], 2, "--channels"),
        (vec!["--to", &url, "/no/such/file.flac"], 2, "no such file"),
        (vec!["--to", &url, "--key", "SECRET", &broken], 1, "could not be decoded"),
    ];
    for (args, code, message) in cases {
        let out = onair_push(args.iter().map(|a| a.to_string()).collect()).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn help_documents_flags_exit_codes_and_examples() {
    let out = onair_push(vec!["--help".into()]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["--to <URL>", "--key", "--loop", "--shuffle", "--bitrate", "--fast", "--pcm"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    assert!(help.contains("Exit codes:") && help.contains("Examples:"), "{help}");
}
