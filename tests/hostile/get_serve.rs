//! `get` writes only regular files it created: whatever is planted at the partial path,
//! at the output or under an output directory (a symlink, dangling or not, a hard link)
//! is never written through. `serve` lists referrers as the distribution spec says, and
//! readers that never drain cost a bounded amount at the connection cap.

use super::serve_attack::{proc_status, raise_nofile, request, serve};
use super::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

const PRECIOUS: &[u8] = b"a file get must not touch\n";

/// A registry serving one eStargz image of `files`; its reference.
fn image_of(repo: &str, files: &[(&str, Vec<u8>)]) -> (Hostile, String) {
    let h = Hostile::start();
    let r = h.image(repo, &estargz_layer(files, |_, _| {}));
    (h, r)
}

/// A working directory with `victim.txt` (PRECIOUS) and an empty `out/`.
fn workdir() -> tempfile::TempDir {
    let cwd = tempfile::tempdir().unwrap();
    let victim = cwd.path().join("victim.txt");
    fs::write(&victim, PRECIOUS).unwrap();
    fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::create_dir(cwd.path().join("out")).unwrap();
    cwd
}

fn get_in(cwd: &Path, reference: &str, path: &str, out: &str) -> Output {
    let (o, _) = depotai_bounded(
        cwd,
        &["get", reference, path, "--insecure", "-q", "-o", out],
    );
    o
}

/// `get` succeeded with nothing on stderr, `out` is a regular file (not a link) with
/// `want`, no `.partial` is left and the victim is as it was.
fn assert_got(o: &Output, cwd: &Path, out: &str, want: &[u8]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "");
    let path = cwd.join(out);
    let m = fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_file(), "{out} is {:?}", m.file_type());
    assert_eq!(fs::read(&path).unwrap(), want);
    assert!(!cwd.join(format!("{out}.partial")).exists());
    assert_victim_untouched(cwd);
}

fn assert_victim_untouched(cwd: &Path) {
    let victim = cwd.join("victim.txt");
    assert_eq!(fs::read(&victim).unwrap(), PRECIOUS, "the victim's bytes");
    let m = fs::symlink_metadata(&victim).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o644, "the victim's mode");
}

#[test]
fn a_symlink_planted_at_the_partial_path_is_replaced_not_written_through() {
    let (_h, r) = image_of("acme/plant", &[config()]);
    let cwd = workdir();
    symlink("../victim.txt", cwd.path().join("out/got.partial")).unwrap();
    let o = get_in(cwd.path(), &r, "/config.json", "out/got");
    assert_got(&o, cwd.path(), "out/got", &config().1);
}

#[test]
fn a_dangling_symlink_at_the_partial_path_creates_nothing_where_it_points() {
    let (_h, r) = image_of("acme/dangling", &[config()]);
    let cwd = workdir();
    symlink("../planted", cwd.path().join("out/got.partial")).unwrap();
    let o = get_in(cwd.path(), &r, "/config.json", "out/got");
    assert_got(&o, cwd.path(), "out/got", &config().1);
    // O_CREAT alone would have made the link's target.
    assert!(!cwd.path().join("planted").exists());
}

#[test]
fn a_hard_link_at_the_partial_path_is_replaced_not_written_into() {
    let (_h, r) = image_of("acme/hardlink", &[config()]);
    let cwd = workdir();
    let victim = cwd.path().join("victim.txt");
    fs::hard_link(&victim, cwd.path().join("out/got.partial")).unwrap();
    let o = get_in(cwd.path(), &r, "/config.json", "out/got");
    assert_got(&o, cwd.path(), "out/got", &config().1);
    let (got, v) = (
        fs::metadata(cwd.path().join("out/got")).unwrap(),
        fs::metadata(&victim).unwrap(),
    );
    assert_ne!(got.ino(), v.ino(), "the output is a file of its own");
    assert_eq!(v.nlink(), 1, "the planted link was removed");
}

#[test]
fn a_symlink_at_the_output_is_replaced_by_the_file_not_written_through() {
    let (_h, r) = image_of("acme/outlink", &[config()]);
    let cwd = workdir();
    symlink("../victim.txt", cwd.path().join("out/got")).unwrap();
    let o = get_in(cwd.path(), &r, "/config.json", "out/got");
    assert_got(&o, cwd.path(), "out/got", &config().1);
}

#[test]
fn a_partial_file_of_our_own_is_still_resumed() {
    // The first bytes of config.json, as an interrupted run leaves them: kept (the
    // chunk is verified again), not replaced.
    let (_h, r) = image_of("acme/resume", &[config()]);
    let cwd = workdir();
    let part = cwd.path().join("out/got.partial");
    fs::write(&part, &config().1).unwrap();
    let ino = fs::metadata(&part).unwrap().ino();
    let (o, _) = depotai_bounded(
        cwd.path(),
        &[
            "get",
            &r,
            "/config.json",
            "--insecure",
            "--json",
            "-o",
            "out/got",
        ],
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["files"][0]["reused_bytes"], config().1.len());
    let got = cwd.path().join("out/got");
    assert_eq!(fs::read(&got).unwrap(), config().1);
    assert_eq!(
        fs::metadata(&got).unwrap().ino(),
        ino,
        "the same file, renamed"
    );
}

#[test]
fn a_directory_get_refuses_a_symlinked_directory_under_the_output_before_writing() {
    let (_h, r) = image_of(
        "acme/subdir",
        &[("a.json", b"{}".to_vec()), ("sub/b.json", b"[]".to_vec())],
    );
    let cwd = workdir();
    let elsewhere = cwd.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink("../elsewhere", cwd.path().join("out/sub")).unwrap();
    let o = get_in(cwd.path(), &r, "/", "out");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("depotai: error: getting / from ")
            && err.trim_end().ends_with(
                "out/sub is not a directory (get follows no link under the output): \
                 remove it or choose another -o"
            ),
        "{err}"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    // Checked before any file: not even a.json, which needs no subdirectory.
    assert!(!cwd.path().join("out/a.json").exists());
    assert_victim_untouched(cwd.path());
}

// ---- serve: referrers ----

/// An OCI layout written by hand: blobs by digest, then `index.json`.
struct HandLayout {
    dir: std::path::PathBuf,
}

impl HandLayout {
    fn new(dir: std::path::PathBuf) -> HandLayout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        HandLayout { dir }
    }

    /// Stores `bytes`; their descriptor as `media_type`.
    fn put(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = sha256(bytes);
        fs::write(
            self.dir.join("blobs/sha256").join(&d["sha256:".len()..]),
            bytes,
        )
        .unwrap();
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    fn put_json(&self, media_type: &str, doc: &Value) -> Value {
        self.put(media_type, &serde_json::to_vec(doc).unwrap())
    }

    fn index(&self, manifests: &[Value]) {
        let index = json!({"schemaVersion": 2, "manifests": manifests});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SBOM_CONFIG: &str = "application/vnd.example.sbom.config.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1";

#[test]
fn referrers_leave_out_a_missing_or_empty_artifact_type_and_fall_back_to_the_config_type() {
    let tmp = tempfile::tempdir().unwrap();
    let l = HandLayout::new(tmp.path().join("acme/refs"));
    let config = l.put("application/vnd.oci.image.config.v1+json", b"{}");
    let empty = l.put("application/vnd.oci.empty.v1+json", b"{}");
    let layer = l.put("application/vnd.oci.image.layer.v1.tar", b"layer bytes");
    let subject = l.put_json(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer]}),
    );
    // An index referrer without artifactType: the key is left out.
    let by_index = l.put_json(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [], "subject": subject}),
    );
    // A manifest whose artifactType is empty: its config's media type.
    let sbom_config = l.put(SBOM_CONFIG, br#"{"format":"spdx"}"#);
    let by_config = l.put_json(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "",
                "config": sbom_config, "layers": [empty], "subject": subject}),
    );
    // A manifest with an artifactType keeps it.
    let typed = l.put_json(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": SIGNATURE,
                "config": empty, "layers": [empty], "subject": subject}),
    );
    let mut tagged = subject.clone();
    tagged["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    l.index(&[tagged, by_index.clone(), by_config.clone(), typed.clone()]);

    let s = serve(tmp.path());
    let path = format!(
        "/v2/acme/refs/referrers/{}",
        subject["digest"].as_str().unwrap()
    );
    let (status, body) = request(&s.addr, "GET", &path, "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let listed = |d: &Value, artifact_type: Option<&str>| {
        let mut v = json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]});
        if let Some(t) = artifact_type {
            v["artifactType"] = json!(t);
        }
        v
    };
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        got,
        json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                listed(&by_index, None),
                listed(&by_config, Some(SBOM_CONFIG)),
                listed(&typed, Some(SIGNATURE)),
            ]
        })
    );
    assert!(!String::from_utf8_lossy(&body).contains(r#""artifactType":"""#));

    // The filter matches the type as listed: the config's media type.
    let (status, body) = request(
        &s.addr,
        "GET",
        &format!("{path}?artifactType=application%2Fvnd.example.sbom.config.v1%2Bjson"),
        "",
    );
    assert_eq!(status, 200);
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        got["manifests"],
        json!([listed(&by_config, Some(SBOM_CONFIG))])
    );

    // The model page's JSON lists them the same way.
    let (status, body) = request(&s.addr, "GET", "/acme/refs.json", "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        page["digests"]["referrers"],
        json!([
            {"digest": by_index["digest"]},
            {"artifactType": SBOM_CONFIG, "digest": by_config["digest"]},
            {"artifactType": SIGNATURE, "digest": typed["digest"]},
        ])
    );
}

// ---- serve: readers that never drain, at the connection cap ----

/// What README's serve limits table gives for readers stalled at the connection cap:
/// the pieces' budget (64 MiB) plus a 16 KiB piece and the connection's own state for
/// each of 2,048 connections, measured at about 150 MiB.
const STALLED_AT_THE_CAP_MIB: u64 = 256;

#[test]
fn readers_stalled_at_the_connection_cap_hold_less_than_the_documented_memory() {
    raise_nofile();
    let tmp = tempfile::tempdir().unwrap();
    let l = HandLayout::new(tmp.path().join("acme/big"));
    // Larger than what the kernel's socket buffers take, so every response stalls
    // with pieces in the server's memory.
    let layer = l.put(
        "application/vnd.oci.image.layer.v1.tar",
        &super::support::pseudo_random(16 << 20, 7),
    );
    let config = l.put("application/vnd.oci.image.config.v1+json", b"{}");
    let mut m = l.put_json(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer]}),
    );
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    l.index(&[m]);
    let s = serve(tmp.path());
    let pid = s.child.id();
    let (rss_before, _) = proc_status(pid);

    let n = depotai::limits::MAX_CONNECTIONS;
    let blob = format!("/v2/acme/big/blobs/{}", layer["digest"].as_str().unwrap());
    let stalled: Vec<std::net::TcpStream> = (0..n)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
            small_receive_buffer(&c);
            use std::io::Write;
            write!(c, "GET {blob} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            c
        })
        .collect();
    // Every connection served (its socket and its blob open) and the memory settled.
    let t = std::time::Instant::now();
    let mut last = 0;
    let (rss, fds) = loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (rss, fds) = proc_status(pid);
        if fds >= 2 * n && rss == last {
            break (rss, fds);
        }
        assert!(
            t.elapsed().as_secs() < 25,
            "{fds} descriptors, RSS {rss} KiB"
        );
        last = rss;
    };
    eprintln!(
        "{n} readers stalled at the connection cap: RSS {rss_before} -> {rss} KiB, {fds} fds"
    );
    assert!(
        rss < STALLED_AT_THE_CAP_MIB << 10,
        "{rss} KiB with {n} stalled readers"
    );
    // Each was answered, not left in the backlog.
    for mut c in stalled {
        use std::io::Read;
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}

/// 4 KiB of receive buffer, as `scripts/serve-stalled-readers.py` sets, so the kernel
/// holds little of each response and the server the rest.
fn small_receive_buffer(c: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt reads `size` for the length given, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
