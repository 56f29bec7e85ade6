//! `zfs2cloud completions` and `zfs2cloud man`: generated from clap, and
//! what the shells and man load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::{Command, Stdio};

use common::text;
use zfs2cloud_testkit::harness::{require_tools, run_ok};

/// `zfs2cloud <args>` with no config anywhere: these commands need none.
fn zfs2cloud(args: &[&str]) -> String {
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_zfs2cloud"))
            .args(args)
            .env_remove("ZFS2CLOUD_CONFIG")
            .current_dir("/"),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `script` to a temp file and runs `shell` with `args` + the file.
fn shell_with(shell: &str, args: &[&str], script: &str, suffix: &str) -> std::process::Output {
    let file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    std::fs::write(file.path(), script).unwrap();
    Command::new(shell)
        .args(args)
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_flags() {
    let script = zfs2cloud(&["completions", "bash"]);
    let probe = format!(
        "{script}\ncomplete -p zfs2cloud || exit 1\n\
         COMP_WORDS=(zfs2cloud che); COMP_CWORD=1; COMP_LINE='zfs2cloud che'; COMP_POINT=13\n\
         _zfs2cloud zfs2cloud che zfs2cloud; echo \"words: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(zfs2cloud init --da); COMP_CWORD=2; COMP_LINE='zfs2cloud init --da'; COMP_POINT=19\n\
         _zfs2cloud zfs2cloud --da init; echo \"flags: ${{COMPREPLY[*]}}\"\n"
    );
    let out = shell_with("bash", &["--norc", "--noprofile"], &probe, ".bash");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("-F _zfs2cloud zfs2cloud"), "{shown}");
    assert!(shown.contains("words: check-config"), "{shown}");
    assert!(shown.contains("flags: --dataset"), "{shown}");
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand_and_parse() {
    for (shell, check) in [("zsh", "-n"), ("fish", "--no-execute")] {
        let script = zfs2cloud(&["completions", shell]);
        for sub in [
            "backup",
            "restore",
            "prune-remote",
            "init",
            "completions",
            "man",
        ] {
            assert!(script.contains(sub), "{shell}: {sub} missing");
        }
        if require_tools(&[shell]) {
            let out = shell_with(shell, &[check], &script, "");
            assert!(out.status.success(), "{shell} {check}: {}", text(&out));
        }
    }
}

#[test]
fn other_shells_get_a_script_too() {
    for shell in ["elvish", "powershell"] {
        assert!(zfs2cloud(&["completions", shell]).contains("prune-snapshots"));
    }
}

#[test]
fn the_man_page_documents_every_subcommand_and_its_flags() {
    let page = zfs2cloud(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH zfs2cloud 1"),
        "{page}"
    );
    for expected in [
        ".SS \"zfs2cloud restore\"",
        "\\-\\-passphrase\\-file",
        ".SS \"zfs2cloud init\"",
        "\\-\\-intermediate\\-basedir",
        "Also accepted as: perform",
    ] {
        assert!(page.contains(expected), "{expected} missing");
    }
    // Each subcommand's section lists only its own options.
    let backup = page.split(".SS \"zfs2cloud backup\"").nth(1).unwrap();
    let backup = backup.split(".SS").next().unwrap();
    assert!(!backup.contains("\\-\\-dry\\-run"), "{backup}");
    if require_tools(&["man"]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &page).unwrap();
        let out = run_ok(
            Command::new("man")
                .args(["--warnings", "-l"])
                .arg(file.path())
                .env("MANWIDTH", "80"),
        );
        let shown = without_overstrike(&text(&out));
        assert!(shown.contains("zfs2cloud prune-remote"), "{shown}");
        assert!(!shown.contains("warning"), "{shown}");
    }
}

/// `text` without grotty's bold and underline (`c\x08c`, `_\x08c`).
fn without_overstrike(text: &str) -> String {
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\x08' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}
