//! `encryption = "gpg-recipients"` on real zfs-fuse, gpg and rclone: the
//! backup host holds only a public key file (no passphrase, no secret key
//! in its GNUPGHOME); the backups restore with the secret key, through
//! zfs2cloud (`--secret-key-file`, or the user's keyring) and with stock
//! tools (`rclone cat | gpg -d | zfs recv`); a wrong secret key fails
//! clearly; and a config that moves from the passphrase to public keys
//! starts a new chain with a full, while the old backups still restore
//! with the passphrase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{manifest, text, Setup};
use zfs2cloud_core::{
    ByteStream, Encryptor, GpgEncryptor, GpgError, Passphrase, RecipientEncryptor, Runner,
    SecretKeyring, Started,
};
use zfs2cloud_testkit::harness::{
    require_tools, run_fail, run_ok, run_pipeline, tree_digest, write_random_file, Pool, ZfsSession,
};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAYS: [&str; 4] = [
    "2024-01-01T00:00:00Z",
    "2024-01-02T00:00:00Z",
    "2024-01-03T00:00:00Z",
    "2024-01-04T00:00:00Z",
];

/// A key pair made for the test in its own GNUPGHOME, as the docs' recipe
/// makes one offline.
struct KeyPair {
    /// The GNUPGHOME holding the secret key (the user's keyring).
    home: PathBuf,
    /// `gpg --armor --export`: what goes on the backup host.
    public: PathBuf,
    /// `gpg --armor --export-secret-keys`: for a disaster restore.
    secret: PathBuf,
    fingerprint: String,
}

impl KeyPair {
    /// A new ed25519/cv25519 key pair without a passphrase, in `dir/name`.
    fn generate(dir: &Path, name: &str) -> Self {
        Self::generate_protected(dir, name, "")
    }

    /// A new key pair whose secret key is protected by `passphrase` (none
    /// if empty).
    fn generate_protected(dir: &Path, name: &str, passphrase: &str) -> Self {
        let home = dir.join(format!("{name}-gnupg"));
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gpg = |args: &[&str]| {
            let mut cmd = Command::new("gpg");
            cmd.env("GNUPGHOME", &home).args(["--batch", "--no-tty"]);
            cmd.args(args);
            run_ok(&mut cmd)
        };
        let uid = format!("{name} <{name}@example.invalid>");
        gpg(&[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            &uid,
            "future-default",
            "default",
            "never",
        ]);
        let listing = String::from_utf8(gpg(&["--with-colons", "--list-keys"]).stdout).unwrap();
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .and_then(|rest| rest.split(':').next())
            .unwrap()
            .to_owned();
        let public = dir.join(format!("{name}.pub.asc"));
        let secret = dir.join(format!("{name}.secret.asc"));
        std::fs::write(&public, gpg(&["--armor", "--export", &fingerprint]).stdout).unwrap();
        let exported = gpg(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
            "--armor",
            "--export-secret-keys",
            &fingerprint,
        ]);
        std::fs::write(&secret, exported.stdout).unwrap();
        Self {
            home,
            public,
            secret,
            fingerprint,
        }
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// The config lines that encrypt to `public` instead of the passphrase.
fn to_public_key(setup: &Setup, public: &Path) {
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let config = config.replace("passphrase_file = \"passphrase\"\n", "");
    std::fs::write(
        &setup.config,
        format!(
            "{config}encryption = \"gpg-recipients\"\nrecipient_files = [{:?}]\n",
            public.display().to_string()
        ),
    )
    .unwrap();
}

/// The backup host's GNUPGHOME holds no secret key (nor anything else:
/// gpg ran in a throwaway home).
fn assert_no_secret_on_the_host(setup: &Setup) {
    let left: Vec<_> = std::fs::read_dir(&setup.gnupghome)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the host's GNUPGHOME got {left:?}");
    let out = run_ok(
        Command::new("gpg")
            .env("GNUPGHOME", &setup.gnupghome)
            .args(["--batch", "--with-colons", "--list-secret-keys"]),
    );
    assert!(!text(&out).contains("sec:"), "{}", text(&out));
}

/// Releases zfs2cloud's holds, so the pool can go.
fn release_holds(ds: &str, snaps: &[&str]) {
    for snap in snaps {
        let _ = Command::new("zfs")
            .args(["release", "zfs2cloud", &format!("{ds}@{snap}")])
            .output();
    }
}

fn exists(dataset: &str) -> bool {
    Command::new("zfs")
        .args(["list", "-H", dataset])
        .output()
        .unwrap()
        .status
        .success()
}

/// A dataset to back up, a pool to restore into, a local rclone remote,
/// and a config (still with the passphrase) backing the dataset up to it.
struct Rig<'a> {
    _src: Pool<'a>,
    dst: Pool<'a>,
    /// The dataset's mountpoint.
    data: PathBuf,
    ds: String,
    rclone: RcloneConfig,
    /// The remote's local directory.
    root: PathBuf,
    remote: String,
    setup: Setup,
}

impl<'a> Rig<'a> {
    fn new(zfs: &'a ZfsSession, tag: &str) -> Self {
        let src = zfs.pool(&format!("{tag}s"));
        let dst = zfs.pool(&format!("{tag}d"));
        let data = src.create_dataset("data");
        let ds = src.dataset("data");
        let rclone = RcloneConfig::new();
        let root = rclone.add_local("cloud");
        let remote = format!("cloud:{}", root.join("data").display());
        let setup = Setup::with_remote(
            &ds,
            &remote,
            &format!(
                "rclone_config = {:?}\n",
                rclone.path().display().to_string()
            ),
        );
        Self {
            _src: src,
            dst,
            data,
            ds,
            rclone,
            root,
            remote,
            setup,
        }
    }

    /// The manifest of backup directory `name` on the remote.
    fn manifest(&self, name: &str) -> serde_json::Value {
        manifest(&self.root.join("data").join(name))
    }
}

#[test]
fn a_backup_to_a_public_key_restores_only_with_its_secret_key() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let rig = Rig::new(&zfs, "rk");
    let (setup, data, dst) = (&rig.setup, &rig.data, &rig.dst);
    let keys = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate(keys.path(), "backup");
    let public = setup.dir.path().join("backup-key.asc");
    std::fs::copy(&pair.public, &public).unwrap();
    to_public_key(setup, &public);

    let out = run_ok(setup.cmd(DAYS[0]).arg("check-config"));
    assert!(text(&out).contains(&pair.fingerprint), "{}", text(&out));
    assert!(!text(&out).contains("passphrase"), "{}", text(&out));
    write_random_file(&data.join("base.bin"), 300_000, 11);
    std::fs::write(data.join("a.txt"), "day 1\n").unwrap();
    run_ok(setup.cmd(DAYS[0]).arg("backup"));
    let at_day1 = tree_digest(data);
    std::fs::write(data.join("a.txt"), "day 2\n").unwrap();
    run_ok(setup.cmd(DAYS[1]).arg("backup"));
    let at_day2 = tree_digest(data);
    assert_no_secret_on_the_host(setup);
    let full = rig.root.join("data/20240101000000-full");
    let m = manifest(&full);
    assert_eq!(m["encryption"], "gpg-recipients");
    assert_eq!(m["recipients"], serde_json::json!([pair.fingerprint]));
    assert_eq!(rig.manifest("20240102000000")["kind"], "incremental");

    // zfs2cloud, with the secret key file (a disaster restore).
    let target = dst.dataset("fromfile");
    run_ok(
        setup
            .cmd(DAYS[1])
            .args(["restore", "--to", &target, "--secret-key-file"])
            .arg(&pair.secret),
    );
    assert_eq!(tree_digest(&dst.mountpoint(&target)), at_day2);
    // zfs2cloud, with the user's keyring.
    let target = dst.dataset("fromkeyring");
    run_ok(
        setup
            .cmd(DAYS[1])
            .env("GNUPGHOME", &pair.home)
            .args(["restore", "--to", &target]),
    );
    assert_eq!(tree_digest(&dst.mountpoint(&target)), at_day2);

    stock_tools_restore(&rig, &full, &pair, &dst.dataset("byhand"));
    assert_eq!(
        tree_digest(&dst.mountpoint(&dst.dataset("byhand"))),
        at_day1
    );

    // A wrong secret key: a clear message, and no target left behind.
    let other = KeyPair::generate(keys.path(), "other");
    let target = dst.dataset("wrongkey");
    let out = run_fail(
        setup
            .cmd(DAYS[1])
            .args(["restore", "--to", &target, "--secret-key-file"])
            .arg(&other.secret),
    );
    let shown = text(&out);
    assert!(
        shown.contains(&format!(
            "no secret key for this backup's recipients {}",
            pair.fingerprint
        )) && shown.contains("No secret key"),
        "{shown}"
    );
    assert!(!exists(&target));
    // The public key is no secret key either.
    let out = run_fail(
        setup
            .cmd(DAYS[1])
            .args(["restore", "--to", &target, "--secret-key-file"])
            .arg(&public),
    );
    assert!(text(&out).contains("holds no secret key"), "{}", text(&out));

    let out = run_ok(
        setup
            .cmd(DAYS[1])
            .args(["verify", "--deep", "--secret-key-file"])
            .arg(&pair.secret),
    );
    assert_eq!(text(&out).matches("OK ").count(), 2, "{}", text(&out));
    release_holds(&rig.ds, &["20240101000000", "20240102000000"]);
}

/// `rclone cat` of each chunk, in order, `| gpg -d | zfs recv`, with the
/// secret key imported into a fresh GNUPGHOME: no zfs2cloud needed.
fn stock_tools_restore(rig: &Rig<'_>, full: &Path, pair: &KeyPair, to: &str) {
    let home = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--import"])
            .arg(&pair.secret),
    );
    let m = manifest(full);
    let cats: Vec<String> = m["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "rclone --config '{}' cat '{}/20240101000000-full/{}'",
                rig.rclone.path().display(),
                rig.remote,
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    run_pipeline(&format!(
        "{{ {}; }} | GNUPGHOME='{}' gpg --batch -d | zfs recv {to}",
        cats.join("; "),
        home.path().display()
    ));
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "gpg-agent"])
        .output();
}

#[test]
fn moving_from_the_passphrase_to_a_public_key_starts_a_new_chain() {
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let rig = Rig::new(&zfs, "rm");
    let (setup, data, dst) = (&rig.setup, &rig.data, &rig.dst);
    let keys = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate(keys.path(), "backup");
    let mut digests = Vec::new();
    for (i, day) in DAYS.iter().enumerate() {
        if i == 2 {
            // The passphrase leaves the host; only the public key stays.
            to_public_key(setup, &pair.public);
        }
        std::fs::write(data.join("a.txt"), format!("day {i}\n")).unwrap();
        write_random_file(&data.join(format!("{i}.bin")), 50_000, i as u64);
        run_ok(setup.cmd(day).arg("backup"));
        digests.push(tree_digest(data));
    }
    let dir = |name: &str| rig.manifest(name);
    assert_eq!(dir("20240102000000")["encryption"], "gpg-symmetric-aes256");
    // The switch: a full, although the last full is two days old.
    let new_full = dir("20240103000000-full");
    assert_eq!(new_full["encryption"], "gpg-recipients");
    let next = dir("20240104000000");
    assert_eq!(next["kind"], "incremental");
    assert_eq!(next["base"], "20240103000000");

    let secret = &pair.secret;
    // The old chain still restores with the passphrase.
    let old = dst.dataset("old");
    run_ok(
        setup
            .cmd(DAYS[3])
            .args(["restore", "--to", &old, "--at", "20240102000000"])
            .arg("--passphrase-file")
            .arg(&setup.passphrase_file),
    );
    assert_eq!(tree_digest(&dst.mountpoint(&old)), digests[1]);
    let new = dst.dataset("new");
    run_ok(
        setup
            .cmd(DAYS[3])
            .args(["restore", "--to", &new, "--secret-key-file"])
            .arg(secret),
    );
    assert_eq!(tree_digest(&dst.mountpoint(&new)), digests[3]);
    let out = run_ok(
        setup
            .cmd(DAYS[3])
            .args(["verify", "--deep", "--passphrase-file"])
            .arg(&setup.passphrase_file)
            .arg("--secret-key-file")
            .arg(secret),
    );
    assert_eq!(text(&out).matches("OK ").count(), 4, "{}", text(&out));
    release_holds(
        &rig.ds,
        &[
            "20240101000000",
            "20240102000000",
            "20240103000000",
            "20240104000000",
        ],
    );
}

#[test]
fn check_config_refuses_a_secret_key_where_the_public_key_belongs() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let setup = Setup::new("tank/data", "");
    let keys = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate(keys.path(), "backup");
    to_public_key(&setup, &pair.secret);
    let out = run_fail(setup.cmd(DAYS[0]).arg("check-config"));
    let shown = text(&out);
    assert!(shown.contains("holds the secret key"), "{shown}");
    assert!(shown.contains(&pair.fingerprint), "{shown}");
    assert!(!shown.contains("-----BEGIN"), "{shown}");
}

/// Everything `stage` writes, and how it ended.
fn drain(started: Started<GpgError>) -> (Vec<u8>, Result<(), GpgError>) {
    let Started { stage, mut output } = started;
    let mut bytes = Vec::new();
    output.read_to_end(&mut bytes).unwrap();
    drop(output);
    (bytes, stage.wait())
}

/// The gpg stages alone, without ZFS: a stream encrypted to a key whose
/// secret key is passphrase-protected decrypts with the imported key and
/// the passphrase (on fd 3); without the passphrase, gpg cannot unlock it
/// and the error names the recipient.
#[test]
fn a_protected_secret_key_decrypts_with_its_passphrase() {
    if !require_tools(&["gpg"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let pair = KeyPair::generate_protected(keys.path(), "protected", "key passphrase");
    let runner = Runner::new();
    let encryptor = RecipientEncryptor::new(
        runner.clone(),
        "gpg".into(),
        vec![pair.public.clone()],
        Vec::new(),
        None,
    );
    let plain = b"a zfs send stream".repeat(1000);
    let (cipher, ended) = drain(
        encryptor
            .encrypt(ByteStream::reader(std::io::Cursor::new(plain.clone())))
            .unwrap(),
    );
    ended.unwrap();
    let recipients = [pair.fingerprint.clone()];
    let decrypt = |passphrase: Option<&[u8]>| {
        let keyring = SecretKeyring::import(&runner, Path::new("gpg"), &pair.secret).unwrap();
        let gpg = GpgEncryptor::for_restore(
            runner.clone(),
            "gpg".into(),
            passphrase.map(|p| Passphrase::from_bytes(p.to_vec())),
            Some(keyring),
        );
        drain(
            gpg.decrypt_with_keys(
                ByteStream::reader(std::io::Cursor::new(cipher.clone())),
                &recipients,
            )
            .unwrap(),
        )
    };
    let (out, ended) = decrypt(Some(b"key passphrase"));
    ended.unwrap();
    assert_eq!(out, plain);
    let (_, ended) = decrypt(None);
    let err = ended.unwrap_err().to_string();
    assert!(
        err.contains(&format!("recipients {}", pair.fingerprint))
            && err.contains("--passphrase-file"),
        "{err}"
    );
}
