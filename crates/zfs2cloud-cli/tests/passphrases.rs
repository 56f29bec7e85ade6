//! Passphrase files with spaces, newlines, `\r\n`, non-ASCII and non-UTF-8
//! bytes mean exactly what they mean to `gpg --passphrase-file`: a backup
//! made by zfs2cloud decrypts with stock gpg and the same file, and a
//! stream encrypted by stock gpg with that file restores with
//! `zfs2cloud restore --passphrase-file` and the same file.
//!
//! The rule (gpg's, measured here with gpg itself): the passphrase is the
//! first line, up to the first `\n`, which is dropped. Nothing else is
//! stripped: not spaces, not a `\r` before the `\n`.
//!
//! Driven by the fake zfs (the send stream is known, `zfs recv` records
//! what it receives), the real gpg, and the real rclone with a local
//! remote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{text, with_fake, Setup};
use zfs2cloud_testkit::fake::FakeZfs;
use zfs2cloud_testkit::harness::{require_tools, run_fail};
use zfs2cloud_testkit::remote::{sanitize_env, RcloneConfig};

const DAY1: &str = "2024-01-01T00:00:00Z";
const SNAP: &str = "tank/data@20240101000000";

/// (case, file content, the passphrase gpg takes from it).
const CASES: &[(&str, &[u8], &[u8])] = &[
    (
        "with spaces",
        b"with some spaces inside\n",
        b"with some spaces inside",
    ),
    ("ending in newline", b"endsinnewline\n", b"endsinnewline"),
    (
        "no trailing newline",
        b"no trailing newline",
        b"no trailing newline",
    ),
    (
        "non-ASCII",
        "non-ASCII ✓ äöü\n".as_bytes(),
        "non-ASCII ✓ äöü".as_bytes(),
    ),
    (
        "trailing spaces",
        b"trailing spaces  \n",
        b"trailing spaces  ",
    ),
    ("leading space", b" leading space\n", b" leading space"),
    (
        "CRLF line end",
        b"windows line end\r\n",
        b"windows line end\r",
    ),
    ("two lines", b"first line\nsecond line\n", b"first line"),
    ("two newlines", b"double\n\n", b"double"),
    (
        "not UTF-8 (Latin-1)",
        b"caf\xe9 latin1\n",
        b"caf\xe9 latin1",
    ),
    (
        "shell metacharacters",
        b"$HOME; `id` 'q' \"d\" \\n *\n",
        b"$HOME; `id` 'q' \"d\" \\n *",
    ),
];

fn gpg(setup: &Setup) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", &setup.gnupghome).arg("--batch");
    cmd
}

/// Runs `cmd` with `input` on stdin; its stdout if it succeeds.
fn pipe_through(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{cmd:?}: {}: {}", out.status, text(&out)))
    }
}

/// The chunks of an export, in order, concatenated.
fn ciphertext(export_dir: &Path) -> Vec<u8> {
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(export_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".zfs.gpg."))
        .collect();
    chunks.sort();
    assert!(chunks.len() > 1, "want several chunks: {chunks:?}");
    chunks
        .iter()
        .flat_map(|c| std::fs::read(c).unwrap())
        .collect()
}

/// A fake zfs that also accepts `zfs mount` (restore mounts what it
/// received; the fake has no mounts).
fn fake_zfs_with_mount(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let wrapper = dir.join("fake-zfs-mount");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = mount ]; then exit 0; fi\nexec '{}' \"$@\"\n",
            FakeZfs::bin_path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// One case; `Err` says what went wrong. The cases share `setup` (one
/// GNUPGHOME, one gpg-agent: starting one per case is slow), so the
/// export is removed first.
fn check_case(setup: &Setup, content: &[u8], expected: &[u8]) -> Result<(), String> {
    if setup.basedir.exists() {
        std::fs::remove_dir_all(&setup.basedir).unwrap();
    }
    let fake = FakeZfs::new();
    fake.add_dataset("tank/data");
    fake.add_snapshot(SNAP, &[]);
    fake.set_stream_size(SNAP, 150_000);
    let stream = fake.expected_stream(SNAP, None);
    std::fs::write(&setup.passphrase_file, content).unwrap();

    let ct = stock_gpg_decrypts_zfs2cloud_export(setup, &fake, &stream)?;
    the_passphrase_is_exactly(setup, &ct, expected)?;
    zfs2cloud_restores_stock_gpg_ciphertext(setup, &stream)
}

/// zfs2cloud encrypts; stock gpg decrypts with the same file. Returns the
/// export's ciphertext.
fn stock_gpg_decrypts_zfs2cloud_export(
    setup: &Setup,
    fake: &FakeZfs,
    stream: &[u8],
) -> Result<Vec<u8>, String> {
    let mut cmd = setup.cmd(DAY1);
    cmd.arg("export");
    with_fake(&mut cmd, fake);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(format!("export failed: {}", text(&out)));
    }
    let ct = ciphertext(&setup.export_dir("20240101000000-full"));
    let plain = pipe_through(
        gpg(setup)
            .arg("--passphrase-file")
            .arg(&setup.passphrase_file)
            .arg("--decrypt"),
        &ct,
    )
    .map_err(|e| format!("stock gpg cannot decrypt zfs2cloud's export: {e}"))?;
    if plain != stream {
        return Err("stock gpg decrypted zfs2cloud's export to other bytes".into());
    }
    Ok(ct)
}

/// The passphrase is exactly `expected`: `ct` decrypts with it given
/// directly, and not with it trimmed (so the whitespace cases really test
/// whitespace).
fn the_passphrase_is_exactly(setup: &Setup, ct: &[u8], expected: &[u8]) -> Result<(), String> {
    let with = |pass: &[u8]| {
        pipe_through(
            gpg(setup)
                .args(["--pinentry-mode", "loopback", "--no-symkey-cache"])
                .arg("--passphrase")
                .arg(std::ffi::OsStr::from_bytes(pass))
                .arg("--decrypt"),
            ct,
        )
    };
    with(expected).map_err(|e| {
        format!(
            "the passphrase is not {:?}: {e}",
            String::from_utf8_lossy(expected)
        )
    })?;
    let trimmed = expected.trim_ascii();
    if trimmed != expected && with(trimmed).is_ok() {
        return Err(format!(
            "also decrypts with the trimmed {:?}: the case proves nothing",
            String::from_utf8_lossy(trimmed)
        ));
    }
    Ok(())
}

/// Stock gpg encrypts (as the original tool did, split with no manifest);
/// zfs2cloud restores with the same file.
fn zfs2cloud_restores_stock_gpg_ciphertext(setup: &Setup, stream: &[u8]) -> Result<(), String> {
    let ct = pipe_through(
        gpg(setup)
            .args([
                "--symmetric",
                "--cipher-algo",
                "AES256",
                "--passphrase-file",
            ])
            .arg(&setup.passphrase_file),
        stream,
    )
    .map_err(|e| format!("stock gpg cannot encrypt: {e}"))?;
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("cloud");
    upload_like_the_original_tool(&root, &ct);
    let restore_fake = FakeZfs::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zfs2cloud"));
    cmd.args(["restore", "--to", "tank/restored", "--from"])
        .arg(format!("cloud:{}", root.display()))
        .arg("--passphrase-file")
        .arg(&setup.passphrase_file)
        .arg("--rclone-config")
        .arg(rclone.path())
        .env("GNUPGHOME", &setup.gnupghome)
        .env_remove("ZFS2CLOUD_CONFIG");
    with_fake(&mut cmd, &restore_fake);
    cmd.env(
        "ZFS2CLOUD_ZFS",
        fake_zfs_with_mount(&setup.dir.path().join("bin")),
    );
    sanitize_env(&mut cmd);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "zfs2cloud cannot restore what stock gpg encrypted: {}",
            text(&out)
        ));
    }
    if restore_fake.received("tank/restored").as_deref() != Some(stream) {
        return Err("zfs2cloud restored other bytes than stock gpg encrypted".into());
    }
    Ok(())
}

/// Puts `ct` under `root` as the original tool left a full backup: one
/// directory of 64 KiB chunks, no manifest.
fn upload_like_the_original_tool(root: &Path, ct: &[u8]) {
    let dir = root.join("20240101000000-full");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, chunk) in ct.chunks(64 << 10).enumerate() {
        std::fs::write(
            dir.join(format!("tank-data@20240101000000.zfs.gpg.{i:04}")),
            chunk,
        )
        .unwrap();
    }
}

#[test]
fn passphrase_files_mean_what_they_mean_to_gpg_passphrase_file() {
    if !require_tools(&["gpg", "rclone"]) {
        return;
    }
    let mut table =
        String::from("\npassphrase file            zfs2cloud <-> gpg --passphrase-file\n");
    let mut failed = Vec::new();
    let setup = Setup::new("tank/data", "");
    // gpg-agent calibrates the key derivation to take ~100 ms, which
    // under load becomes seconds per gpg run; the cases only test which
    // bytes are the passphrase, so a small fixed count will do.
    std::fs::write(setup.gnupghome.join("gpg-agent.conf"), "s2k-count 65536\n").unwrap();
    for (case, content, expected) in CASES {
        let result = check_case(&setup, content, expected);
        table.push_str(&format!(
            "{case:<26} {}\n",
            result.as_ref().map_or("FAIL", |()| "ok")
        ));
        if let Err(e) = result {
            failed.push(format!(
                "{case} ({:?}): {e}",
                String::from_utf8_lossy(content)
            ));
        }
    }
    eprintln!("{table}");
    assert!(failed.is_empty(), "{table}\n{}", failed.join("\n\n"));
}

#[test]
fn an_empty_first_line_is_refused_before_anything_runs() {
    let fake = FakeZfs::new();
    fake.add_dataset("tank/data");
    let setup = Setup::new("tank/data", "");
    for content in [&b""[..], b"\n", b"\nsecond line is not used\n"] {
        std::fs::write(&setup.passphrase_file, content).unwrap();
        for args in [&["backup"][..], &["check-config"][..]] {
            let mut cmd = setup.cmd(DAY1);
            cmd.args(args);
            with_fake(&mut cmd, &fake);
            let out = run_fail(&mut cmd);
            let msg = text(&out);
            assert_eq!(out.status.code(), Some(2), "{content:?} {args:?}: {msg}");
            assert!(msg.contains("`passphrase_file`"), "{msg}");
            assert!(msg.contains("is empty"), "{msg}");
        }
    }
    assert!(fake.invocations().is_empty(), "{:?}", fake.invocations());
}
