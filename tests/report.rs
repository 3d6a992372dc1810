//! The one `--json` report (`depotai::report`) and the lines a CI log reads.
//!
//! - `schema/report.schema.json` is what the report type generates (a test fails with
//!   the command to regenerate it).
//! - The `--json` of `build` (a directory, the Hub, `--push`), `build --all`, `push`,
//!   `verify` and `inspect`, from real runs, is valid against that schema (checked by a
//!   small validator of the keywords schemars writes, which refuses any other keyword),
//!   and is snapshot-tested with `insta`, as are the `Finished` lines and a run's last
//!   line. Only the time is masked (and the random ports of the test servers).
//! - The README's `--json` example is a real build of the bundled example.
//!
//! The registry tests need Debian's `docker-registry`: without it they say SKIP and pass;
//! with `CI=true` they fail.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::hub::{depotai_against, Content, HubServer, Repo, RepoFile};
use support::interop::{have, Registry};
use support::*;

const SCHEMA: &str = "schema/report.schema.json";
const ALPHA_SHA: &str = "1111111111111111111111111111111111111111";
const BETA_SHA: &str = "2222222222222222222222222222222222222222";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_schema_is_the_one_the_report_type_generates() {
    let generated = depotai::report::schema_json();
    let path = root().join(SCHEMA);
    if std::env::var_os("DEPOTAI_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA} is not what depotai::report generates; regenerate it with \
         `DEPOTAI_UPDATE_SCHEMA=1 cargo test --test report committed_schema`"
    );
}

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(SCHEMA)).unwrap()).unwrap()
}

/// The keywords schemars writes for the report types; any other one fails the check
/// rather than being ignored. (`title`, `description` and `default` only annotate.)
const KEYWORDS: [&str; 18] = [
    "$schema",
    "default",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "oneOf",
    "enum",
    "const",
    "format",
    "minimum",
    "maximum",
];

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => panic!("unknown type {t}"),
    }
}

/// Checks `v` (at `at`) against the schema `s` of the document `root`; the first
/// violation, with its path.
fn check(root: &Value, s: &Value, v: &Value, at: &str) -> Result<(), String> {
    if s == &Value::Bool(true) {
        return Ok(());
    }
    let obj = s.as_object().expect("a schema is an object");
    for k in obj.keys() {
        assert!(KEYWORDS.contains(&k.as_str()), "keyword {k} not checked");
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local references only");
        check(root, &root["$defs"][name], v, at)?;
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => panic!("type {t}"),
        };
        if !types.iter().any(|t| is_type(v, t)) {
            return Err(format!("{at}: {v} is not of type {types:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return Err(format!("{at}: {x} is below {min}"));
        }
    }
    if let (Some(max), Some(x)) = (s.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if x > max {
            return Err(format!("{at}: {x} is above {max}"));
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = alts
                .iter()
                .filter_map(|a| check(root, a, v, at).err())
                .collect();
            let matched = alts.len() - errors.len();
            if matched == 0 || (key == "oneOf" && matched > 1) {
                return Err(format!("{at}: matches {matched} of its {key}: {errors:?}"));
            }
        }
    }
    if let Value::Object(o) = v {
        for k in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !o.contains_key(k.as_str().unwrap()) {
                return Err(format!("{at}: {k} is missing"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(p), _) => check(root, p, x, &format!("{at}.{k}"))?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: {k} is not in the schema"))
                }
                (None, Some(extra)) if extra.is_object() => {
                    check(root, extra, x, &format!("{at}.{k}"))?
                }
                _ => {}
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check(root, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn valid(v: &Value) -> Result<(), String> {
    let s = schema();
    check(&s, &s, v, "$")
}

#[test]
fn the_schema_check_refuses_unknown_keys_wrong_types_and_missing_fields() {
    let ok = serde_json::json!({"result": "built", "seconds": 0.5, "files": 3});
    assert_eq!(valid(&ok), Ok(()));
    let unknown = serde_json::json!({"result": "built", "seconds": 0.5, "status": "built"});
    assert!(valid(&unknown).unwrap_err().contains("status"), "{unknown}");
    let text_bytes = serde_json::json!({"result": "built", "seconds": 0.5, "files": "3"});
    assert!(valid(&text_bytes).is_err());
    let negative = serde_json::json!({"result": "built", "seconds": 0.5, "files": -3});
    assert!(valid(&negative).is_err());
    let no_result = serde_json::json!({"seconds": 0.5});
    assert!(valid(&no_result).is_err());
    let other_result = serde_json::json!({"result": "done", "seconds": 0.5});
    assert!(valid(&other_result).is_err());
}

/// stdout as a report valid against the schema.
fn report(o: &Output) -> Value {
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    if let Err(e) = valid(&v) {
        panic!("the report breaks {SCHEMA}: {e}\n{v:#}");
    }
    v
}

/// Every `seconds` set to 0.
fn mask_seconds(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "seconds" {
                    *x = serde_json::json!(0.0);
                } else {
                    mask_seconds(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_seconds),
        _ => {}
    }
}

/// The report pretty-printed with its times masked and `hosts` (random ports of the
/// test servers) named.
fn snapshot_json(v: &Value, hosts: &[(&str, &str)]) -> String {
    let mut v = v.clone();
    mask_seconds(&mut v);
    let mut s = serde_json::to_string_pretty(&v).unwrap();
    for (host, name) in hosts {
        s = s.replace(host, name);
    }
    s
}

/// stderr with times (`0.3s`, a table's seconds) as `#.#` and `hosts` named.
fn snapshot_lines(stderr: &[u8], hosts: &[(&str, &str)]) -> String {
    let mut text = String::from_utf8_lossy(stderr).into_owned();
    for (host, name) in hosts {
        text = text.replace(host, name);
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let masked: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let core = w.trim_end_matches([',', ';']);
                let secs = core.strip_suffix('s').unwrap_or(core);
                let is_time = secs.split_once('.').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.len() == 1
                        && b.bytes().all(|c| c.is_ascii_digit())
                }) && (core.ends_with('s')
                    || !words.get(i + 1).is_some_and(|n| units.contains(n)));
                if is_time {
                    w.replace(|c: char| c.is_ascii_digit(), "#")
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&masked.join(" "));
        out.push('\n');
    }
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `build --from-dir` of the bundled example, run in `cwd` (so the layout is
/// `out/depotai/tiny-model`).
fn build_example(cwd: &Path, extra: &[&str]) -> Output {
    depotai()
        .current_dir(cwd)
        .arg("build")
        .arg("--from-dir")
        .arg(root().join("fixtures/tiny-model"))
        .args(["--name", "depotai/tiny-model", "--sha", SHA])
        .args(extra)
        .output()
        .unwrap()
}

/// The README's block after the marker line.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = "<!-- the --json example: tests/report.rs writes it";
    let at = readme
        .find(marker)
        .expect("the README has the --json example marker");
    let rest = &readme[at..];
    let start = rest.find("```json\n").unwrap() + "```json\n".len();
    let end = rest[start..].find("\n```").unwrap();
    rest[start..start + end].to_string()
}

#[test]
fn a_build_from_a_directory_prints_one_report_and_one_finished_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = build_example(tmp.path(), &["--json"]);
    assert_ok(&o);
    assert_eq!(stderr(&o), "", "--json prints nothing else");
    let v = report(&o);
    assert_eq!(v["result"], "built");
    assert_eq!(v["output"], "out/depotai/tiny-model");
    assert_eq!(v["layers"][0]["number"], 1, "layers are numbered from 1");
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/tiny-model.golden.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["index_digest"], golden["index_digest"]);
    let example = snapshot_json(&v, &[]);
    assert!(
        readme_example() == example,
        "the README's --json example is not what this build prints; replace it with:\n{example}"
    );
    insta::assert_snapshot!("build_from_dir_json", example);

    let o = build_example(tmp.path(), &[]);
    assert_ok(&o);
    assert_eq!(o.stdout, b"");
    insta::assert_snapshot!("build_from_dir_lines", snapshot_lines(&o.stderr, &[]));
    let quiet = build_example(tmp.path(), &["--quiet"]);
    assert_ok(&quiet);
    assert_eq!((stderr(&quiet), quiet.stdout), (String::new(), vec![]));
}

#[test]
fn push_and_inspect_of_a_layout_report_the_reference_bytes_and_numbered_layers() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let hosts = [(reg.addr.as_str(), "REGISTRY")];
    let tmp = tempfile::tempdir().unwrap();
    assert_ok(&build_example(tmp.path(), &["--quiet"]));
    let reference = format!("{}/depotai/tiny-model:v1", reg.addr);
    let push = |extra: &[&str]| {
        depotai()
            .current_dir(tmp.path())
            .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
            .env_remove("DEPOTAI_REGISTRY_USER")
            .args(["push", "out/depotai/tiny-model", &reference, "--insecure"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = push(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "pushed");
    assert_eq!(v["name"], "depotai/tiny-model");
    assert_eq!(v["push"]["reference"], reference);
    assert_eq!(v["push"]["digest"], v["index_digest"]);
    assert!(v["uploaded_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["skipped_bytes"], 0, "{v}");
    assert!(v.get("output").is_none(), "no layout was written: {v}");
    insta::assert_snapshot!("push_json", snapshot_json(&v, &hosts));

    // Again: every blob is there, nothing is sent; the line says so.
    let o = push(&[]);
    assert_ok(&o);
    insta::assert_snapshot!("push_again_lines", snapshot_lines(&o.stderr, &hosts));

    let inspect = |extra: &[&str]| {
        depotai()
            .args(["inspect", &reference, "--insecure"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = inspect(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "inspected");
    assert_eq!(v["sha"], SHA);
    let numbers: Vec<u64> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    insta::assert_snapshot!("inspect_json", snapshot_json(&v, &hosts));
    let o = inspect(&[]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let layers: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "layers")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(layers[0].starts_with("  1  sha256:"), "{text}");
}

fn hub_repo(id: &str, sha: &str, seed: u64) -> Repo {
    Repo::new(
        id,
        sha,
        vec![
            RepoFile::regular(
                "config.json",
                format!("{{\"name\": \"{id}\"}}").into_bytes(),
            ),
            RepoFile::lfs(
                "model.safetensors",
                Content::Bytes(pseudo_random(300 << 10, seed)),
            ),
        ],
    )
}

#[test]
fn build_all_reports_every_model_and_sums_the_run_and_verify_reports_the_rebuild() {
    let server = HubServer::start(vec![
        hub_repo("acme/alpha", ALPHA_SHA, 1),
        hub_repo("acme/beta", BETA_SHA, 2),
    ]);
    let hosts = [(server.endpoint.as_str(), "HUB")];
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    std::fs::write(
        tmp.path().join("models.yaml"),
        format!(
            "models:\n  - name: acme/alpha\n    sha: {ALPHA_SHA}\n  - name: acme/beta\n    sha: {BETA_SHA}\n    tag: v2\n  - name: acme/nope\n    sha: {SHA}\n"
        ),
    )
    .unwrap();
    let all = |extra: &[&str]| {
        depotai_against(&server, &home)
            .current_dir(tmp.path())
            .args([
                "build",
                "--all",
                "models.yaml",
                "--own-layer-above",
                "100KiB",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = all(&["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = report(&o);
    let results: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["built", "built", "failed"]);
    assert_eq!(v["summary"]["built"], 2);
    assert_eq!(v["summary"]["failed"], 1);
    assert_eq!(v["models"][0]["output"], "out/acme/alpha");
    insta::assert_snapshot!("build_all_json", snapshot_json(&v, &hosts));
    insta::assert_snapshot!("build_all_lines", snapshot_lines(&o.stderr, &hosts));

    // Again: the two built are up to date; the run ends with the same sums line.
    let o = all(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(o.stdout, b"");
    insta::assert_snapshot!("build_all_again_lines", snapshot_lines(&o.stderr, &hosts));
    // --quiet: only the failure and the error.
    let o = all(&["--quiet"]);
    insta::assert_snapshot!("build_all_quiet_lines", snapshot_lines(&o.stderr, &hosts));

    let o = depotai_against(&server, &home)
        .args(["verify", "--json"])
        .arg(tmp.path().join("out/acme/alpha"))
        .output()
        .unwrap();
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "verified");
    assert_eq!(v["verify"]["rebuilt_index_digest"], v["index_digest"]);
    insta::assert_snapshot!("verify_json", snapshot_json(&v, &hosts));
}

#[test]
fn a_streamed_push_reports_where_it_went_and_a_rerun_is_skipped() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let server = HubServer::start(vec![hub_repo("acme/alpha", ALPHA_SHA, 1)]);
    let hosts = [
        (reg.addr.as_str(), "REGISTRY"),
        (server.endpoint.as_str(), "HUB"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let reference = format!("{}/acme/alpha:v1", reg.addr);
    let push = |extra: &[&str]| {
        depotai_against(&server, &home)
            .current_dir(tmp.path())
            .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
            .env_remove("DEPOTAI_REGISTRY_USER")
            .args([
                "build",
                "acme/alpha",
                "--sha",
                ALPHA_SHA,
                "--push",
                &reference,
            ])
            .args(["--insecure", "--own-layer-above", "100KiB"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = push(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "pushed");
    assert!(v.get("output").is_none(), "no layout was written: {v}");
    assert_eq!(v["push"]["reference"], reference);
    assert_eq!(v["push"]["blobs"][0]["layer"], 1);
    assert!(v["uploaded_bytes"].as_u64().unwrap() > 300 << 10, "{v}");
    insta::assert_snapshot!("build_push_json", snapshot_json(&v, &hosts));

    let o = push(&[]);
    assert_ok(&o);
    insta::assert_snapshot!("build_push_again_lines", snapshot_lines(&o.stderr, &hosts));
    let o = push(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "skipped");
    assert_eq!(v["uploaded_bytes"], 0);
    insta::assert_snapshot!("build_push_skipped_json", snapshot_json(&v, &hosts));
}

#[test]
fn build_all_push_reports_each_model_pushed_then_skipped_with_the_run_summed() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let server = HubServer::start(vec![
        hub_repo("acme/alpha", ALPHA_SHA, 1),
        hub_repo("acme/beta", BETA_SHA, 2),
    ]);
    let hosts = [
        (reg.addr.as_str(), "REGISTRY"),
        (server.endpoint.as_str(), "HUB"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("models.yaml"),
        format!(
            "models:\n  - name: acme/alpha\n    sha: {ALPHA_SHA}\n  - name: acme/beta\n    sha: {BETA_SHA}\n    tag: v2\n"
        ),
    )
    .unwrap();
    let prefix = format!("{}/models", reg.addr);
    let all = |extra: &[&str]| {
        depotai_against(&server, &tmp.path().join("hf"))
            .current_dir(tmp.path())
            .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
            .env_remove("DEPOTAI_REGISTRY_USER")
            .args([
                "build",
                "--all",
                "models.yaml",
                "--push",
                &prefix,
                "--insecure",
            ])
            .args(["--own-layer-above", "100KiB", "--no-cache"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = all(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    for m in v["models"].as_array().unwrap() {
        assert_eq!(m["result"], "pushed", "{m}");
        assert!(m.get("output").is_none(), "no layout was written: {m}");
        assert_eq!(m["push"]["digest"], m["index_digest"]);
    }
    assert_eq!(v["summary"]["pushed"], 2);
    let sent: u64 = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uploaded_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(v["summary"]["uploaded_bytes"], sent);
    insta::assert_snapshot!("build_all_push_json", snapshot_json(&v, &hosts));

    // Again: both tags carry their commit and settings; one line each, and the sums.
    let o = all(&[]);
    assert_ok(&o);
    insta::assert_snapshot!(
        "build_all_push_again_lines",
        snapshot_lines(&o.stderr, &hosts)
    );
}

#[test]
fn a_build_from_the_hub_into_a_layout_reports_downloads_and_its_layout() {
    let server = HubServer::start(vec![hub_repo("acme/alpha", ALPHA_SHA, 1)]);
    let hosts = [(server.endpoint.as_str(), "HUB")];
    let tmp = tempfile::tempdir().unwrap();
    let build = |extra: &[&str]| {
        depotai_against(&server, &tmp.path().join("hf"))
            .current_dir(tmp.path())
            .args(["build", "acme/alpha", "--sha", ALPHA_SHA])
            .args(["--own-layer-above", "100KiB"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = build(&["--json"]);
    assert_ok(&o);
    let v = report(&o);
    assert_eq!(v["result"], "built");
    assert_eq!(v["output"], "out/acme/alpha");
    assert!(v.get("push").is_none(), "{v}");
    assert_eq!(
        (&v["downloaded_bytes"], &v["cached_bytes"]),
        (
            &serde_json::json!(v["content_bytes"]),
            &serde_json::json!(0)
        )
    );
    insta::assert_snapshot!("build_hub_json", snapshot_json(&v, &hosts));
    // Again, from the cache: the same image, and its line.
    let o = build(&[]);
    assert_ok(&o);
    insta::assert_snapshot!("build_hub_again_lines", snapshot_lines(&o.stderr, &hosts));
}

/// The README quotes these snapshots; they drift together or the test says which.
#[test]
fn the_readme_quotes_the_line_snapshots_as_they_are() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in [
        "build_from_dir_lines",
        "build_all_lines",
        "push_again_lines",
    ] {
        let snap =
            std::fs::read_to_string(root().join(format!("tests/snapshots/report__{name}.snap")))
                .unwrap();
        // After insta's front matter (`---` … `---`).
        let body = snap.splitn(3, "---\n").nth(2).unwrap().trim_end();
        assert!(
            readme.contains(&format!("```text\n{body}\n```")),
            "the README's quote of the snapshot {name} differs from it:\n{body}"
        );
    }
}
