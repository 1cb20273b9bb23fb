//! `vncbot demo` as a user runs it: a clean environment, no config, no accounts; it plays the
//! tour against the built-in stand-ins and exits 0.
// Deploy builds (`--no-default-features`) have no `demo` command.
#![cfg(feature = "demo")]

use std::process::Command;

#[test]
fn the_demo_plays_the_whole_flow_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for expect in [
        // Autocomplete, from the catalog.
        "web-01 · ins-web00001 · RUNNING",
        // The grant, its DM and buttons.
        "is in your DMs until",
        "[Open console] [Done]",
        // A press: a fresh link in the DM.
        "[Connect → https://img.qcloud.com/qcloud/app/active_vnc/index.html?InstanceVncUrl=",
        // Scrubbed after 15 s, Open console back.
        "15 seconds later",
        // Refused, with the roles that may.
        "None of your roles may open ins-web00001",
        "These roles may: @on-call",
        // Stopped: refused before Tencent.
        "is STOPPED: start it first",
        "console action was called 1 time(s)",
        // Done.
        "(you pressed Done)",
        // The trail.
        "journal head: seq",
        "granted",
        ": intact, ",
        "The tour is over.",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in\n{stdout}");
    }
    // The link's secret part never reaches the transcript (the button shows its start only).
    assert!(!stdout.contains("wss%3A%2F%2F"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
