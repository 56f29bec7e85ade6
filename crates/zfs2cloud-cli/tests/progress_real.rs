//! Progress on real zfs-fuse, gpg and rclone: a live display under a
//! pseudo-terminal, and plain lines without escape codes otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use common::{text, Setup};
use nix::pty::{openpty, Winsize};
use zfs2cloud_testkit::harness::{run_ok, write_random_file, ZfsSession};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";

/// Runs `cmd` with its stderr on a pseudo-terminal; gives what the
/// terminal received and whether the command succeeded.
fn on_terminal(cmd: &mut Command) -> (Vec<u8>, bool) {
    let size = Winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut child = cmd
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // The command still holds the slave: replace it, so that reading the
    // master ends (EIO) when the child exits.
    cmd.stderr(Stdio::null());
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status.success())
}

/// The text without ANSI escape sequences (CSI `ESC [ … final`, and
/// two-byte `ESC x`) and carriage returns.
fn strip_escapes(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            _ => out.push(c),
        }
    }
    out
}

fn stderr_of(out: &std::process::Output) -> String {
    let err = &out.stderr;
    assert!(
        !err.contains(&0x1b),
        "escape codes without a terminal: {}",
        String::from_utf8_lossy(err)
    );
    String::from_utf8_lossy(err).into_owned()
}

#[test]
fn progress_on_a_terminal_and_plain_lines_without_one() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let pool = zfs.pool("pg");
    let data = pool.create_dataset("data");
    let ds = pool.dataset("data");
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    let remote = format!("cloud:{}", root.join("data").display());
    let setup = Setup::with_split(
        &ds,
        &remote,
        "16M",
        &format!(
            "rclone_config = {:?}\n",
            rclone.path().display().to_string()
        ),
    );
    // Random, so that nothing compresses it away.
    write_random_file(&data.join("big.bin"), 64 << 20, 7);
    run_ok(setup.cmd(DAY1).arg("snapshot"));

    // Under a terminal: a live bar with rate and ETA.
    let (raw, ok) = on_terminal(setup.cmd(DAY1).arg("export"));
    let shown = strip_escapes(&raw);
    assert!(ok, "{shown}");
    assert!(raw.contains(&0x1b), "no live display: {shown}");
    assert!(
        shown.contains("export ") && shown.contains("MiB/s") && shown.contains("ETA"),
        "{shown}"
    );
    assert!(shown.contains(".zfs.gpg.000"), "the current chunk: {shown}");

    // Through pipes: plain lines only, one per finished transfer.
    let out = run_ok(setup.cmd(DAY1).arg("upload"));
    let err = stderr_of(&out);
    assert!(
        err.contains("zfs2cloud: upload 20240101000000-full: "),
        "{err}"
    );
    assert!(err.contains(" in ") && err.contains("MiB/s"), "{err}");
    assert!(text(&out).contains("uploaded"), "stdout keeps the results");

    // A backup, with a line every 10 ms during the transfer: step lines,
    // and running lines with the expected total.
    write_random_file(&data.join("more.bin"), 8 << 20, 8);
    let out = run_ok(
        setup
            .cmd(DAY2)
            .env("ZFS2CLOUD_PROGRESS_INTERVAL", "0.01")
            .arg("backup"),
    );
    let err = stderr_of(&out);
    // Each step has one line, its result on stdout; none is repeated as
    // progress on stderr (under systemd both go to one journal).
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in ["snapshot", "export", "upload"] {
        let lines = stdout.lines().chain(err.lines());
        let of_step = lines.filter(|l| l.starts_with(step) || l.contains(&format!("step {step}")));
        assert_eq!(of_step.count(), 1, "{stdout}{err}");
    }
    assert!(
        err.contains(" MiB, ") || err.contains(" KiB, ") || err.contains(" of "),
        "{err}"
    );

    // -q on a terminal: plain lines too, no escape codes.
    let (raw, ok) = on_terminal(setup.cmd(DAY2).args(["-q", "verify"]));
    assert!(ok, "{}", strip_escapes(&raw));
    assert!(!raw.contains(&0x1b), "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("verify: listing"));

    let out = run_ok(setup.cmd(DAY2).args(["verify", "--deep"]));
    let err = stderr_of(&out);
    assert!(err.contains("receive 20240101000000-full: "), "{err}");

    // Restore: a bar on a terminal, plain lines without one.
    let (raw, ok) = on_terminal(setup.cmd(DAY2).args([
        "restore",
        "--to",
        &pool.dataset("back"),
        "--at",
        "20240101000000",
    ]));
    let shown = strip_escapes(&raw);
    assert!(ok, "{shown}");
    assert!(
        raw.contains(&0x1b) && shown.contains("receive ") && shown.contains("MiB/s"),
        "{shown}"
    );
    let out = run_ok(
        setup
            .cmd(DAY2)
            .args(["restore", "--to", &pool.dataset("back2")]),
    );
    let err = stderr_of(&out);
    assert!(err.contains("receive 20240102000000: "), "{err}");
}
