//! Monitoring and output for scripts, on real zfs-fuse, gpg and rclone:
//! `backup` writes its metrics file (read back with the Prometheus
//! project's own text-format parser) and pings a loopback HTTP server;
//! `backup`, `verify`, the `prune-*` commands and `restore` print `--json`
//! that validates against the schemas in docs/. A failed backup pings
//! `/fail` with the error and keeps the last success time, and so does an
//! interrupted one; a ping server that is down costs a warning, not the
//! backup; a dry run pings nothing and writes no metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use common::{manifest, text, Setup};
use zfs2cloud_testkit::harness::{is_ci, run_fail, run_ok, write_random_file, ZfsSession};
use zfs2cloud_testkit::remote::RcloneConfig;

const DAY1: &str = "2024-01-01T00:00:00Z";
const DAY2: &str = "2024-01-02T00:00:00Z";
const DAY3: &str = "2024-01-03T00:00:00Z";
const DAY4: &str = "2024-01-04T00:00:00Z";
const DAY5: &str = "2024-01-05T00:00:00Z";
/// The ping URL's secret part, which must never be shown.
const TOKEN: &str = "5f1c7a4e-token-secret";
/// Debian's python3 (the one python3-prometheus-client installs for).
const PYTHON: &str = "/usr/bin/python3";

/// One request the ping server received.
#[derive(Debug, Clone)]
struct Ping {
    method: String,
    path: String,
    body: String,
}

/// A loopback HTTP server answering 200 to everything, recording each
/// request.
fn ping_server() -> (u16, Arc<Mutex<Vec<Ping>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(ping) = serve(stream) {
                record.lock().unwrap().push(ping);
            }
        }
    });
    (port, seen)
}

fn serve(stream: TcpStream) -> Option<Ping> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
    Some(Ping {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The pings received since the last call, checked to be POSTs to the
/// ping URL with `suffixes` ("/start", "", "/fail") in that order.
fn take_pings(pings: &Mutex<Vec<Ping>>, suffixes: &[&str]) -> Vec<Ping> {
    let seen = std::mem::take(&mut *pings.lock().unwrap());
    let paths: Vec<&str> = seen.iter().map(|p| p.path.as_str()).collect();
    let expected: Vec<String> = suffixes
        .iter()
        .map(|s| format!("/ping/{TOKEN}{s}"))
        .collect();
    assert_eq!(paths, expected, "{seen:?}");
    assert!(seen.iter().all(|p| p.method == "POST"), "{seen:?}");
    seen
}

/// The samples of a metrics file as the Prometheus client library's
/// parser reads them: name → [(labels, value)]. Fails on any line it
/// cannot parse.
fn parse_metrics(path: &Path) -> serde_json::Value {
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = {}\n\
        for fam in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   assert fam.type == 'gauge', fam\n\
        \x20   assert fam.documentation, fam\n\
        \x20   for s in fam.samples:\n\
        \x20       out.setdefault(s.name, []).append({'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let out = run_ok(Command::new(PYTHON).arg("-c").arg(script).arg(path));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the one sample of `name`, checking its labels.
fn value(metrics: &serde_json::Value, name: &str, dataset: &str) -> f64 {
    let samples = metrics[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: {metrics}"));
    assert_eq!(samples.len(), 1, "{name}");
    assert_eq!(samples[0]["labels"]["dataset"], dataset, "{name}");
    assert_eq!(samples[0]["labels"]["backup_job"], dataset, "{name}");
    samples[0]["value"].as_f64().unwrap()
}

/// Validates `doc` against `docs/<name>.schema.json`.
fn assert_schema(name: &str, doc: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/{name}.schema.json"));
    let schema = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{doc:#}");
}

/// stdout as one JSON document (nothing else may be there), validated.
fn json_out(out: &Output, schema: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{schema}: stdout is not one JSON document ({e}): {}",
            text(out)
        )
    });
    assert_schema(schema, &doc);
    assert!(!text(out).contains(TOKEN), "{}", text(out));
    doc
}

fn prometheus_parser_present() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || !is_ci(),
        "python3-prometheus-client is missing (scripts/install-test-deps installs it)"
    );
    ok
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn backup_reports_to_metrics_pings_and_json_and_a_failure_keeps_the_last_success() {
    if !prometheus_parser_present() {
        eprintln!("skipping: python3-prometheus-client is not installed");
        return;
    }
    let Some(zfs) = ZfsSession::start(&["gpg", "rclone"]) else {
        return;
    };
    let src = zfs.pool("mon");
    let dst = zfs.pool("monr");
    let data = src.create_dataset("data");
    let ds = src.dataset("data");
    write_random_file(&data.join("a.bin"), 200_000, 1);
    let rclone = RcloneConfig::new();
    let root = rclone.add_local("backup");
    let remote = format!("backup:{}", root.join("data").display());
    let (port, pings) = ping_server();
    let extra = |ping_port: u16| {
        format!(
            "rclone_config = {:?}\nmetrics_file = \"metrics/zfs2cloud.prom\"\n\
             ping_url = \"http://127.0.0.1:{ping_port}/ping/{TOKEN}\"\n\
             [retention.remote]\nkeep_daily = 1\nkeep_chains = 1\n",
            rclone.path().display().to_string()
        )
    };
    let setup = Setup::with_remote(&ds, &remote, &extra(port));
    let metrics_dir = setup.dir.path().join("metrics");
    std::fs::create_dir(&metrics_dir).unwrap();
    let metrics_file = metrics_dir.join("zfs2cloud.prom");

    // A full, then an incremental: each reported in JSON, metrics, pings.
    let before = unix_now();
    let doc = json_out(
        &run_ok(setup.cmd(DAY1).args(["backup", "--json"])),
        "backup",
    );
    let full = root.join("data/20240101000000-full");
    let full_size = manifest(&full)["total_size"].as_u64().unwrap();
    let job = &doc["jobs"][0];
    assert_eq!(job["kind"], "full");
    assert_eq!(job["bytes_exported"], full_size);
    assert_eq!(job["bytes_uploaded"], full_size);
    assert_eq!(job["remote"]["backups"], 1);
    let metrics = parse_metrics(&metrics_file);
    assert_eq!(value(&metrics, "zfs2cloud_last_run_success", &ds), 1.0);
    assert_eq!(
        value(&metrics, "zfs2cloud_last_run_exported_bytes", &ds),
        full_size as f64
    );
    assert_eq!(
        value(&metrics, "zfs2cloud_last_run_uploaded_bytes", &ds),
        full_size as f64
    );
    assert_eq!(value(&metrics, "zfs2cloud_remote_backups", &ds), 1.0);
    assert!(value(&metrics, "zfs2cloud_remote_backup_bytes", &ds) > full_size as f64);
    assert_eq!(
        metrics["zfs2cloud_last_run_info"][0]["labels"]["kind"],
        "full"
    );
    let success = value(&metrics, "zfs2cloud_last_success_timestamp_seconds", &ds);
    assert!(
        success >= before.floor() && success <= unix_now() + 1.0,
        "{success}"
    );
    let mode = std::fs::metadata(&metrics_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );
    let seen = take_pings(&pings, &["/start", ""]);
    assert!(seen[1].body.contains("full"), "{seen:?}");

    std::fs::write(data.join("b.txt"), "day 2\n").unwrap();
    let doc = json_out(
        &run_ok(setup.cmd(DAY2).args(["backup", "--json"])),
        "backup",
    );
    assert_eq!(doc["jobs"][0]["kind"], "incremental");
    let metrics = parse_metrics(&metrics_file);
    assert_eq!(
        metrics["zfs2cloud_last_run_info"][0]["labels"]["kind"],
        "incremental"
    );
    assert_eq!(value(&metrics, "zfs2cloud_remote_backups", &ds), 2.0);
    let last_success = value(&metrics, "zfs2cloud_last_success_timestamp_seconds", &ds);

    // The other commands' JSON, in the order an operator would run them.
    let doc = json_out(
        &run_ok(setup.cmd(DAY2).args(["verify", "--json"])),
        "verify",
    );
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["backups"].as_array().unwrap().len(), 2);
    for command in ["prune-intermediates", "prune-snapshots", "prune-remote"] {
        let doc = json_out(&run_ok(setup.cmd(DAY2).args([command, "--json"])), "prune");
        assert_eq!(doc["acted"], false, "{command}");
        assert_eq!(doc["command"], command);
    }
    let target = dst.dataset("restored");
    let plan = json_out(
        &run_ok(
            setup
                .cmd(DAY2)
                .args(["--dry-run", "restore", "--json", "--to", &target]),
        ),
        "restore",
    );
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["datasets"][0]["restored"], false);
    let dirs: Vec<&str> = plan["datasets"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["dir"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["20240101000000-full", "20240102000000"]);
    let done = json_out(
        &run_ok(setup.cmd(DAY2).args(["restore", "--json", "--to", &target])),
        "restore",
    );
    assert_eq!(done["datasets"][0]["restored"], true);

    // Neither a dry run nor check-config pings, writes metrics or shows
    // the token.
    let metrics_before = std::fs::read(&metrics_file).unwrap();
    pings.lock().unwrap().clear();
    json_out(
        &run_ok(setup.cmd(DAY3).args(["--dry-run", "backup", "--json"])),
        "backup",
    );
    let shown = text(&run_ok(setup.cmd(DAY3).arg("check-config")));
    assert!(shown.contains("ping_url = \"http://127.0.0.1:"), "{shown}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(pings.lock().unwrap().is_empty());
    assert_eq!(std::fs::read(&metrics_file).unwrap(), metrics_before);

    // A failed run: /fail with the error, result 0, the last success kept.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let broken = config.replace(
        &format!("remote = {remote:?}"),
        "remote = \"nosuchremote:x\"",
    );
    std::fs::write(&setup.config, &broken).unwrap();
    let out = run_fail(setup.cmd(DAY3).args(["backup", "--json"]));
    let doc = json_out(&out, "backup");
    let error = doc["jobs"][0]["error"].as_str().unwrap().to_owned();
    assert_eq!(doc["jobs"][0]["success"], false);
    let metrics = parse_metrics(&metrics_file);
    assert_eq!(value(&metrics, "zfs2cloud_last_run_success", &ds), 0.0);
    assert_eq!(
        value(&metrics, "zfs2cloud_last_success_timestamp_seconds", &ds),
        last_success
    );
    let seen = take_pings(&pings, &["/start", "/fail"]);
    assert!(
        seen[1].body.contains(&error) && error.contains("nosuchremote"),
        "{seen:?}"
    );

    // The ping server down: a warning, and the backup goes on.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = down.local_addr().unwrap().port();
    drop(down);
    std::fs::write(
        &setup.config,
        config.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{down_port}"),
        ),
    )
    .unwrap();
    let out = run_ok(setup.cmd(DAY4).arg("backup"));
    let shown = text(&out);
    assert!(
        shown.contains("warning: could not ping http://127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains(TOKEN), "{shown}");
    let metrics = parse_metrics(&metrics_file);
    assert_eq!(value(&metrics, "zfs2cloud_last_run_success", &ds), 1.0);

    // An interrupted run pings /fail too.
    let started = setup.dir.path().join("hook-started");
    let hook = format!(
        "{config}[hooks]\npre_snapshot = [\"/bin/sh\", \"-c\", \"touch '{}'; sleep 30\"]\n",
        started.display()
    );
    std::fs::write(&setup.config, hook).unwrap();
    let mut child = setup
        .cmd(DAY5)
        .arg("backup")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the hook never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let seen = take_pings(&pings, &["/start", "/fail"]);
    assert!(seen[1].body.contains("interrupted"), "{seen:?}");
}
