#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! Tests of the real-rclone remotes in `zfs2cloud_testkit::remote`: a local
//! remote, S3 served by moto, crypt over local, and sftp and S3 served by
//! `rclone serve` (with each of `rclone_clients()`). Each is skipped (or,
//! under `CI=true`, fails) when rclone, the current rclone or moto is
//! missing.
//!
//! What rclone 1.60.1 (Debian 12) reports, as seen here:
//!
//! * local: `lsjson --hash` computes every hash rclone knows (crc32,
//!   dropbox, hidrive, mailru, md5, quickxor, sha1, sha256, whirlpool),
//!   i.e. reads each file about nine times over; `--hash-type sha256`
//!   limits it to `"Hashes":{"sha256":"…"}`.
//! * s3 (moto 5.2.5): only md5, `"Hashes":{"md5":"…"}`, for single-part
//!   uploads (the ETag) and also for rclone's multipart uploads (rclone
//!   stores the md5 in `X-Amz-Meta-Md5chksum`). No sha256: with
//!   `--hash-type sha256` the `Hashes` key is absent altogether.
//! * crypt: no hashes at all.
//!
//! Over `rclone serve` (rclone 1.75.2), with client 1.60.1 and 1.75.2 alike:
//!
//! * sftp: md5 and sha1 (the server runs `md5sum`/`sha1sum` for the
//!   client), never sha256: with `--hash-type sha256` the `Hashes` key is
//!   absent (rclone logs `ERROR : <file>: Failed to read hash: hash type
//!   not supported` per file) and rclone still exits 0. The sftp client
//!   writes what it detected (`shell_type = unix`, `md5sum_command`,
//!   `sha1sum_command`) into the rclone.conf at its first connection.
//! * s3: md5 only (the ETag); 1.60 adds `"Tier":"STANDARD"` to each
//!   object, 1.75 does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use zfs2cloud_testkit::fake::sha256_hex;
use zfs2cloud_testkit::harness::{require_tools, run_ok, write_random_file};
use zfs2cloud_testkit::remote::{
    create_bucket, rclone_clients, sanitize_env, MotoServer, RcloneClient, RcloneConfig,
    RcloneS3Server, RcloneSftpServer,
};

/// md5 from coreutils' `md5sum` (the testkit has no md5 crate).
fn md5_hex(path: &Path) -> String {
    let out = run_ok(Command::new("md5sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn rclone_ok(config: &RcloneConfig, args: &[&str]) -> Output {
    run_ok(config.rclone().args(args))
}

/// `rclone lsjson <extra> <remote>`, keyed by `Path`.
fn lsjson(config: &RcloneConfig, remote: &str, extra: &[&str]) -> BTreeMap<String, Value> {
    let mut cmd = config.rclone();
    cmd.arg("lsjson").args(extra).arg(remote);
    let out = run_ok(&mut cmd);
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lsjson output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    entries
        .into_iter()
        .map(|e| (e["Path"].as_str().unwrap().to_owned(), e))
        .collect()
}

/// The `Hashes` object of an lsjson entry (empty if absent).
fn hashes(entry: &Value) -> BTreeMap<String, String> {
    entry
        .get("Hashes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn config_file_is_private_and_sanitized() {
    use std::os::unix::fs::PermissionsExt;
    let config = RcloneConfig::new();
    let mode = std::fs::metadata(config.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "rclone.conf mode {mode:o}");

    let cmd = config.rclone();
    assert!(
        cmd.get_envs()
            .any(|(k, v)| k == "AWS_CA_BUNDLE" && v.is_none()),
        "rclone() must remove AWS_CA_BUNDLE"
    );
    let mut other = Command::new("zfs2cloud");
    sanitize_env(&mut other);
    assert!(other
        .get_envs()
        .any(|(k, v)| k == "AWS_CA_BUNDLE" && v.is_none()));

    let root = config.add_local("loc");
    assert!(root.is_absolute() && root.is_dir());
    assert!(root.starts_with(config.path().parent().unwrap()));
    assert_ne!(root, config.add_local("other"), "each local root is fresh");
    let text = std::fs::read_to_string(config.path()).unwrap();
    assert!(text.contains("[loc]\ntype = local\n"), "{text}");
}

#[test]
fn local_remote_copyto_and_lsjson_sha256() {
    if !require_tools(&["rclone"]) {
        return;
    }
    let config = RcloneConfig::new();
    let root = config.add_local("loc");
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("chunk.bin");
    let len = 300_001;
    write_random_file(&src, len, 7);
    let data = std::fs::read(&src).unwrap();
    let want = sha256_hex(&data);

    let remote_dir = format!("loc:{}/backups/tank", root.display());
    rclone_ok(
        &config,
        &[
            "copyto",
            src.to_str().unwrap(),
            &format!("{remote_dir}/chunk.bin"),
        ],
    );
    assert_eq!(
        std::fs::read(root.join("backups/tank/chunk.bin")).unwrap(),
        data,
        "a local remote stores the file as is, under its absolute path"
    );

    // Restricted to sha256: exactly `"Hashes":{"sha256":"…"}`.
    let listing = lsjson(&config, &remote_dir, &["--hash", "--hash-type", "sha256"]);
    let entry = &listing["chunk.bin"];
    assert_eq!(entry["Size"].as_u64(), Some(len as u64), "{entry}");
    assert_eq!(entry["IsDir"].as_bool(), Some(false), "{entry}");
    let got = hashes(entry);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["sha256"],
        "with --hash-type sha256 only sha256 is reported: {entry}"
    );
    assert_eq!(got["sha256"], want, "{entry}");

    // Plain `--hash` on local computes every supported type, sha256 among
    // them (rclone 1.60: crc32 dropbox hidrive mailru md5 quickxor sha1
    // sha256 whirlpool).
    let listing = lsjson(&config, &remote_dir, &["--hash"]);
    let got = hashes(&listing["chunk.bin"]);
    eprintln!("local lsjson --hash types: {:?}", got.keys());
    assert_eq!(got.get("sha256"), Some(&want), "{got:?}");
    assert_eq!(got.get("md5"), Some(&md5_hex(&src)), "{got:?}");
}

#[test]
fn s3_on_moto_roundtrip_and_hashes() {
    if !require_tools(&["rclone", "md5sum"]) {
        return;
    }
    let Some(server) = MotoServer::start() else {
        return;
    };
    let config = RcloneConfig::new();
    config.add_s3("s3", &server);
    create_bucket(&config, "s3", "zfs2cloud-test");

    let src_dir = tempfile::tempdir().unwrap();
    let big = src_dir.path().join("big.bin");
    let small = src_dir.path().join("small.bin");
    let big_len = 6 * 1024 * 1024 + 3;
    let small_len = 1000;
    write_random_file(&big, big_len, 11);
    write_random_file(&small, small_len, 12);

    for (src, name) in [(&big, "big.bin"), (&small, "small.bin")] {
        rclone_ok(
            &config,
            &[
                "copyto",
                src.to_str().unwrap(),
                &format!("s3:zfs2cloud-test/pool/{name}"),
            ],
        );
    }

    // Below rclone's 200 MiB default upload cutoff both are single-part
    // PUTs, and moto reports only md5 (the ETag), e.g.
    //   {"Path":"big.bin","Name":"big.bin","Size":6291459,
    //    "MimeType":"application/octet-stream","ModTime":"…","IsDir":false,
    //    "Hashes":{"md5":"aa9cd1d6…"},"Tier":"STANDARD"}
    // No sha256 on S3: with `--hash-type sha256` the Hashes key is absent.
    let listing = lsjson(&config, "s3:zfs2cloud-test/pool", &["--hash"]);
    assert_eq!(
        listing.keys().collect::<Vec<_>>(),
        ["big.bin", "small.bin"],
        "{listing:?}"
    );
    for (src, name, len) in [(&big, "big.bin", big_len), (&small, "small.bin", small_len)] {
        let entry = &listing[name];
        eprintln!("s3 (moto) lsjson --hash: {entry}");
        assert_eq!(entry["Size"].as_u64(), Some(len as u64), "{entry}");
        let got = hashes(entry);
        assert_eq!(got.get("md5"), Some(&md5_hex(src)), "{entry}");
        assert!(
            !got.contains_key("sha256"),
            "S3 under moto now reports sha256 ({entry}); update the notes at the top of this file"
        );

        let out = rclone_ok(&config, &["cat", &format!("s3:zfs2cloud-test/pool/{name}")]);
        assert!(
            out.stdout == std::fs::read(src).unwrap(),
            "rclone cat of {name} returned {} bytes that differ from the {len} uploaded",
            out.stdout.len()
        );
    }
    let listing = lsjson(
        &config,
        "s3:zfs2cloud-test/pool",
        &["--hash", "--hash-type", "sha256"],
    );
    for entry in listing.values() {
        assert!(hashes(entry).is_empty(), "no sha256 on S3: {entry}");
    }
    drop(server);
}

#[test]
fn s3_on_moto_multipart_upload() {
    if !require_tools(&["rclone", "md5sum"]) {
        return;
    }
    let Some(server) = MotoServer::start() else {
        return;
    };
    let config = RcloneConfig::new();
    config.add_s3("s3", &server);
    create_bucket(&config, "s3", "multipart");

    let src_dir = tempfile::tempdir().unwrap();
    let big = src_dir.path().join("big.bin");
    let len = 6 * 1024 * 1024 + 5;
    write_random_file(&big, len, 13);

    // Force a 2-part upload (5 MiB is S3's minimum part size).
    //
    // moto 5.2.5 + rclone 1.60 quirk: after CompleteMultipartUpload rclone
    // HEADs the object with `?versionId=null` (moto's response carries a
    // version id "null" on an unversioned bucket) and moto answers 400, so
    // the first attempt is reported as `Failed to copy: BadRequest`;
    // rclone's retry then finds the object complete and exits 0 (with
    // `--retries 1` it would exit 1). `--s3-no-head` skips that HEAD, so
    // here the upload succeeds on the first and only attempt.
    rclone_ok(
        &config,
        &[
            "copyto",
            "--retries",
            "1",
            "--s3-no-head",
            "--s3-upload-cutoff",
            "5M",
            "--s3-chunk-size",
            "5M",
            big.to_str().unwrap(),
            "s3:multipart/big.bin",
        ],
    );
    let listing = lsjson(&config, "s3:multipart", &["--hash"]);
    let entry = &listing["big.bin"];
    eprintln!("s3 (moto) multipart lsjson --hash: {entry}");
    assert_eq!(entry["Size"].as_u64(), Some(len as u64), "{entry}");
    // md5 from rclone's X-Amz-Meta-Md5chksum metadata (the ETag of a
    // multipart object is not an md5).
    assert_eq!(hashes(entry).get("md5"), Some(&md5_hex(&big)), "{entry}");
    let out = rclone_ok(&config, &["cat", "s3:multipart/big.bin"]);
    assert!(
        out.stdout == std::fs::read(&big).unwrap(),
        "multipart cat differs"
    );
}

#[test]
fn crypt_over_local_encrypts_names_and_content() {
    if !require_tools(&["rclone"]) {
        return;
    }
    let config = RcloneConfig::new();
    let root = config.add_local("loc");
    let wrapped = format!("loc:{}", root.display());
    config.add_crypt("sec", &wrapped, "correct horse battery staple");

    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("plain-name.bin");
    let len = 200_003;
    write_random_file(&src, len, 21);
    let data = std::fs::read(&src).unwrap();
    rclone_ok(
        &config,
        &["copyto", src.to_str().unwrap(), "sec:tank/plain-name.bin"],
    );

    // Underneath: one file, neither its name nor its directory's in clear,
    // and its bytes are not the plaintext (crypt adds a 32-byte header and
    // 16 bytes per 64 KiB block).
    let stored = files_under(&root);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let rel = stored[0].strip_prefix(&root).unwrap();
    for part in rel.iter() {
        let part = part.to_string_lossy();
        assert!(
            !part.contains("plain") && part != "tank",
            "name not encrypted: {}",
            rel.display()
        );
    }
    let cipher = std::fs::read(&stored[0]).unwrap();
    assert_eq!(cipher.len(), len + 32 + 16 * len.div_ceil(64 * 1024));
    assert!(cipher != data);
    assert!(
        !cipher.windows(64).any(|w| w == &data[..64]),
        "plaintext visible in the encrypted file"
    );

    // Through crypt: plain name, plain size, identical bytes.
    let listing = lsjson(&config, "sec:tank", &[]);
    let entry = &listing["plain-name.bin"];
    assert_eq!(entry["Size"].as_u64(), Some(len as u64), "{entry}");
    let out = rclone_ok(&config, &["cat", "sec:tank/plain-name.bin"]);
    assert!(out.stdout == data, "crypt round trip differs");

    // The wrong password sees no such file: names do not decrypt, so
    // rclone reports "directory not found" and exits non-zero.
    config.add_crypt("wrong", &wrapped, "not the password");
    let out = config
        .rclone()
        .args(["cat", "wrong:tank/plain-name.bin"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "a wrong password read something: {} bytes, {}",
        out.stdout.len(),
        out.status
    );
}

#[test]
fn the_chosen_client_runs() {
    assert_eq!(RcloneConfig::new().rclone().get_program(), "rclone");
    let config = RcloneConfig::with_rclone("/opt/some/rclone");
    assert_eq!(config.rclone_program(), Path::new("/opt/some/rclone"));
    let cmd = config.rclone();
    assert_eq!(cmd.get_program(), "/opt/some/rclone");
    assert!(
        cmd.get_envs()
            .any(|(k, v)| k == "AWS_CA_BUNDLE" && v.is_none()),
        "every client's environment is sanitized"
    );
    let other = config.rclone_using(Path::new("/usr/bin/rclone"));
    assert_eq!(other.get_program(), "/usr/bin/rclone");
    assert_eq!(
        other.get_args().collect::<Vec<_>>(),
        ["--config", config.path().to_str().unwrap()]
    );
    let debian = RcloneClient::debian();
    assert_eq!(
        (debian.name(), debian.path()),
        ("debian", Path::new("/usr/bin/rclone"))
    );
    assert_eq!(RcloneClient::current().name(), "current");
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(1),
    )
    .is_ok()
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// An idle server must not burn CPU (`--dir-cache-time 0s` makes rclone
/// serve spin after a few requests, and then everything crawls).
fn assert_idle(pid: u32, log: impl Fn() -> String) {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = cpu_ticks(pid);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // Clock ticks are 1/100 s on Linux: 2 s of a busy core is 200.
    assert!(
        used < 40,
        "the idle server used {used} ticks of CPU in 2 s; log:\n{}",
        log()
    );
}

/// `copyto` of a file through `remote:dir/<client>/chunk.bin` by each
/// client, then `lsjson --hash` and `cat` of it; returns what each client
/// stored, by client name, for the caller to find on the server's disk.
fn copyto_and_lsjson_by_every_client(
    clients: &[RcloneClient],
    configure: impl Fn(&RcloneConfig),
    remote_dir: &str,
) -> Vec<(String, Vec<u8>)> {
    let src_dir = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let config = RcloneConfig::with_rclone(client.path());
        configure(&config);
        let src = src_dir.path().join(format!("{}.bin", client.name()));
        let len = 700_001 + i;
        write_random_file(&src, len, 31 + i as u64);
        let dir = format!("{remote_dir}/{}", client.name());
        rclone_ok(
            &config,
            &["copyto", src.to_str().unwrap(), &format!("{dir}/chunk.bin")],
        );
        let listing = lsjson(&config, &dir, &["--hash"]);
        let entry = &listing["chunk.bin"];
        eprintln!("{} lsjson --hash of {dir}: {entry}", client.name());
        assert_eq!(entry["Size"].as_u64(), Some(len as u64), "{entry}");
        assert_eq!(entry["IsDir"].as_bool(), Some(false), "{entry}");
        assert_eq!(hashes(entry).get("md5"), Some(&md5_hex(&src)), "{entry}");
        let listing = lsjson(
            &config,
            &dir,
            &["--files-only", "--hash", "--hash-type", "sha256"],
        );
        let entry = &listing["chunk.bin"];
        assert!(
            hashes(entry).is_empty(),
            "{} now reports sha256 here ({entry}); update the notes at the top of this file",
            client.name()
        );
        let data = std::fs::read(&src).unwrap();
        let out = rclone_ok(&config, &["cat", &format!("{dir}/chunk.bin")]);
        assert!(out.stdout == data, "{}: cat differs", client.name());
        stored.push((client.name().to_owned(), data));
    }
    stored
}

#[test]
fn rclone_serve_sftp_takes_copyto_and_lsjson_from_every_client_and_stops_on_drop() {
    if !require_tools(&["md5sum"]) {
        return;
    }
    let Some(server) = RcloneSftpServer::start() else {
        return;
    };
    let clients = rclone_clients();
    if clients.is_empty() {
        return;
    }
    let port = server.port();
    let root = server.root();
    assert!(listening(port));
    let stored = copyto_and_lsjson_by_every_client(
        &clients,
        |config| config.add_sftp("sftp", &server),
        "sftp:backups/tank",
    );
    assert_idle(server.pid(), || server.log());
    for (name, data) in &stored {
        let on_disk = root.join(format!("backups/tank/{name}/chunk.bin"));
        assert!(
            std::fs::read(&on_disk).unwrap() == *data,
            "{} differs; server log:\n{}",
            on_disk.display(),
            server.log()
        );
    }

    // Only the password logs in.
    let config = RcloneConfig::with_rclone(clients[0].path());
    let text = format!(
        "[bad]\ntype = sftp\nhost = 127.0.0.1\nport = {port}\nuser = {}\npass = {}\n\
         known_hosts_file = {}\n",
        server.user(),
        String::from_utf8_lossy(&rclone_ok(&config, &["obscure", "--", "not the password"]).stdout)
            .trim(),
        server.known_hosts_file().display()
    );
    std::fs::write(config.path(), text).unwrap();
    let out = config
        .rclone()
        .args([
            "--retries",
            "1",
            "--low-level-retries",
            "1",
            "lsjson",
            "bad:",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a wrong password logged in: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    drop(server);
    assert!(!listening(port), "the server still listens after drop");
    assert!(!root.exists(), "the served directory outlived the server");
}

#[test]
fn rclone_serve_s3_takes_copyto_and_lsjson_from_every_client_and_stops_on_drop() {
    if !require_tools(&["md5sum"]) {
        return;
    }
    let Some(server) = RcloneS3Server::start() else {
        return;
    };
    let clients = rclone_clients();
    if clients.is_empty() {
        return;
    }
    let port = server.port();
    let root = server.root();
    assert!(listening(port));
    let stored = copyto_and_lsjson_by_every_client(
        &clients,
        |config| {
            config.add_s3("s3", &server);
            create_bucket(config, "s3", "zfs2cloud");
        },
        "s3:zfs2cloud/tank",
    );
    assert_idle(server.pid(), || server.log());
    for (name, data) in &stored {
        let on_disk = root.join(format!("zfs2cloud/tank/{name}/chunk.bin"));
        assert!(
            std::fs::read(&on_disk).unwrap() == *data,
            "{} differs; server log:\n{}",
            on_disk.display(),
            server.log()
        );
    }
    drop(server);
    assert!(!listening(port), "the server still listens after drop");
    assert!(!root.exists(), "the served directory outlived the server");
}
