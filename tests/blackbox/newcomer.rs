//! The README's "Try it without Discord", run as written: its shell block,
//! with the one build line left out (this test has built both binaries) and
//! the binaries it names taken from this build.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process group, sent SIGTERM when dropped.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process group this test started.
        unsafe { libc::kill(-self.0, libc::SIGTERM) };
    }
}

/// The README's `sh` block under "## Try it without Discord".
fn readme_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Try it without Discord").expect("the section")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    section[start..end].to_owned()
}

#[test]
fn the_readmes_try_it_without_discord_block_runs_as_written_and_verifies_a_key() {
    let block = readme_block();
    let (build, rest): (Vec<&str>, Vec<&str>) = block.lines().partition(|l| l.starts_with("cargo build"));
    assert_eq!(build.len(), 1, "one build line, first: {block}");
    assert!(!block.contains("--release"), "one build profile: {block}");

    // The binaries the block names, from this build, under target/debug of a scratch directory.
    let built = Path::new(env!("CARGO_BIN_EXE_guildkey")).parent().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
    for bin in ["guildkey", "discord-double"] {
        assert!(built.join(bin).exists(), "{bin} is built beside guildkey (cargo test --workspace builds it)");
        std::os::unix::fs::symlink(built.join(bin), dir.path().join("target/debug").join(bin)).unwrap();
    }
    // Run it in a process group of its own, which is stopped whatever
    // happens (the block leaves the double and guildkey running); its
    // output goes to files, which those two cannot hold open.
    let script = format!("set -e\n{}\n", rest.join("\n"));
    let (out_path, err_path) = (dir.path().join("block.out"), dir.path().join("block.err"));
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("DISCORD_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash");
    let group = Group(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(group);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let (out, err, log) = (read("block.out"), read("block.err"), read("guildkey.log"));
    let status = status.unwrap_or_else(|| panic!("the block did not finish in 90 s\n{out}\n{err}\n{log}"));
    assert!(status.success(), "exit {status}\nstdout: {out}\nstderr: {err}\nguildkey.log: {log}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "two answers, one a line: {out}");
    let verified: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!((verified["success"].as_bool(), verified["data"]["name"].as_str()), (Some(true), Some("try")), "{out}");
    assert_eq!(verified["data"]["guild_id"], "1000000000000000001", "{out}");
    let ban: serde_json::Value = serde_json::from_str(lines[1]).expect("JSON");
    assert_eq!(ban["data"]["banned"], false, "{out}");
    assert!(log.contains("connected to Discord"), "the bot connected to the double: {log}");
}
