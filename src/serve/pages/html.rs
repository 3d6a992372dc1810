//! The HTML of the pages. Every piece of text from disk or the request goes through
//! [`escape`]; the script (`/_/app.js`) reads only `data-` attributes and the text the
//! page already shows, so nothing here is ever code.

use super::{
    asset_href, copy_line, dir_dest, escape, image_ref, json_href, page_href, pinned_ref,
    FileEntry, Files, Kind, Overview,
};
use crate::units::human_bytes;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Rows of the file tree shown; the rest is in the JSON.
pub const MAX_FILES_SHOWN: usize = 5000;

fn head(h: &mut String, title: &str) {
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{}</title>\
         <link rel=\"icon\" href=\"{}\">\
         <link rel=\"stylesheet\" href=\"{}\">\
         <script src=\"{}\" defer></script></head>\n<body>\n",
        escape(title),
        asset_href("icon.svg"),
        asset_href("app.css"),
        asset_href("app.js"),
    );
}

fn top(h: &mut String, host: &str, json: &str) {
    let _ = write!(
        h,
        "<header class=\"top\"><div class=\"wrap\">\
         <a class=\"brand\" href=\"/\"><img src=\"{icon}\" alt=\"\" width=\"22\" height=\"22\"><span>depot<b>ai</b></span></a>\
         <span class=\"host\">{host}</span>\
         <nav><a href=\"{json}\" rel=\"alternate\" type=\"application/json\">JSON</a></nav>\
         </div></header>\n<main class=\"wrap\">\n",
        icon = asset_href("icon.svg"),
        host = escape(host),
        json = escape(json),
    );
}

fn foot(h: &mut String) {
    h.push_str(
        "</main>\n<footer class=\"wrap\">Served read-only by depotai · OCI Distribution API at \
         <code>/v2/</code> · pull with docker, buildah, podman or a lazy-pulling snapshotter</footer>\n\
         </body></html>\n",
    );
}

/// A command with its copy button.
fn command(h: &mut String, line: &str, id: &str) {
    let e = escape(line);
    let _ = write!(
        h,
        "<div class=\"cmd\"><code id=\"{id}\">{e}</code>\
         <button class=\"copy\" type=\"button\" data-copy=\"{e}\" title=\"Copy to the clipboard\">Copy</button></div>",
    );
}

fn copy_button(line: &str, label: &str) -> String {
    format!(
        "<button class=\"copy small\" type=\"button\" data-copy=\"{}\" title=\"{}\" aria-label=\"Copy: {}\">Copy</button>",
        escape(line),
        escape(line),
        escape(label)
    )
}

/// `org/` in a lighter weight, then the model.
fn split_name(name: &str) -> String {
    match name.rsplit_once('/') {
        Some((org, model)) => format!(
            "<span class=\"org\">{}/</span>{}",
            escape(org),
            escape(model)
        ),
        None => escape(name),
    }
}

fn short(rev: &str) -> &str {
    rev.get(..7).unwrap_or(rev)
}

fn tags_html(o: &Overview) -> String {
    let mut s = String::new();
    for (t, _) in &o.tags {
        let _ = write!(s, "<span class=\"tag\">{}</span>", escape(t));
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn catalogue(host: &str, models: &[Arc<Overview>]) -> String {
    let mut h = String::with_capacity(4096 + models.len() * 900);
    head(&mut h, &format!("Models at {host} · depotai"));
    top(&mut h, host, "/index.json");
    let n = models.len();
    let _ = write!(
        h,
        "<section class=\"hero\"><h1>Models, as container images</h1>\
         <p>{count} served at <code>{host}</code>. Each is a reproducible eStargz or zstd:chunked image: \
         copy a whole model, or one file of it, into any image with BuildKit, buildah or podman.</p>",
        count = plural(n, "model", "models"),
        host = escape(host),
    );
    let _ = writeln!(
        h,
        "<div class=\"cmd\"><code>{}</code></div></section>",
        escape(&format!("COPY --link --from={host}/<org>/<model> / ."))
    );
    if models.is_empty() {
        h.push_str(
            "<p class=\"empty\">No images yet: build one with <code>depotai build</code> \
             into the served directory and reload.</p>\n",
        );
        foot(&mut h);
        return h;
    }
    let _ = write!(
        h,
        "<div class=\"search\"><input id=\"q\" type=\"search\" placeholder=\"Search {n} models\" \
         autocomplete=\"off\" spellcheck=\"false\" aria-label=\"Search models\" \
         data-filter=\"models\" data-count=\"count\" data-noun=\"model\" data-empty=\"models-empty\">\
         <kbd>/</kbd></div>\n<p class=\"count\" id=\"count\" aria-live=\"polite\">{}</p>\n\
         <table class=\"list\" id=\"models\"><thead><tr><th>Model</th><th class=\"hide-narrow\">Tag</th>\
         <th class=\"hide-narrow\">Commit</th><th class=\"num\">Size</th><th>Dockerfile</th></tr></thead>\n<tbody>\n",
        plural(n, "model", "models"),
    );
    for o in models {
        let image = image_ref(host, o);
        let line = copy_line(&image, "", ".");
        let rev = o.revision.as_deref().unwrap_or("");
        let tags: Vec<&str> = o.tags.iter().map(|(t, _)| t.as_str()).collect();
        let search = format!("{} {} {}", o.name, tags.join(" "), rev).to_lowercase();
        let _ = writeln!(
            h,
            "<tr data-search=\"{search}\" data-name=\"{name}\">\
             <td class=\"name\"><a href=\"{href}\">{label}</a></td>\
             <td class=\"hide-narrow\">{tags}</td>\
             <td class=\"hide-narrow\"><code class=\"rev\" title=\"{rev}\">{short}</code></td>\
             <td class=\"num\">{size}</td>\
             <td class=\"line\"><div class=\"row\"><code title=\"{line_e}\">{line_e}</code>{button}</div></td></tr>",
            search = escape(&search),
            name = escape(&o.name),
            href = escape(&page_href(&o.name)),
            label = split_name(&o.name),
            tags = tags_html(o),
            rev = escape(rev),
            short = escape(short(rev)),
            size = escape(&human_bytes(o.size())),
            line_e = escape(&line),
            button = copy_button(&line, &o.name),
        );
    }
    h.push_str(
        "</tbody></table>\n<p class=\"empty\" id=\"models-empty\" hidden>No model matches.</p>\n",
    );
    foot(&mut h);
    h
}

fn media_label(mt: &str) -> &'static str {
    if mt.ends_with("tar+zstd") || mt.ends_with(".zstd") {
        "zstd:chunked"
    } else if mt.ends_with("tar+gzip") || mt.ends_with(".gzip") {
        "eStargz"
    } else {
        "layer"
    }
}

/// Files and bytes below each directory (`a/`, `a/b/`).
fn dir_totals(files: &[FileEntry]) -> HashMap<&str, (usize, u64)> {
    let mut t: HashMap<&str, (usize, u64)> = HashMap::new();
    for f in files {
        let mut rest = f.path.as_str();
        while let Some((dir, _)) = rest.rsplit_once('/') {
            let e = t.entry(dir).or_default();
            e.0 += 1;
            e.1 += f.size;
            rest = dir;
        }
    }
    t
}

pub fn model(host: &str, o: &Overview, files: &Files, name_json_is_an_image: bool) -> String {
    let image = image_ref(host, o);
    let pinned = pinned_ref(host, o);
    let json = json_href(&o.name, name_json_is_an_image);
    let mut h = String::with_capacity(8192 + files.entries.len().min(MAX_FILES_SHOWN) * 450);
    head(&mut h, &format!("{} · depotai", o.name));
    top(&mut h, host, &json);

    let _ = write!(
        h,
        "<nav class=\"crumbs\"><a href=\"/\">All models</a></nav>\n\
         <h1 class=\"model\">{}</h1>\n<div class=\"badges\">{}</div>\n<dl class=\"facts\">",
        split_name(&o.name),
        tags_html(o)
    );
    let web_source = o
        .source
        .as_deref()
        .filter(|s| s.starts_with("https://") || s.starts_with("http://"));
    if let Some(rev) = &o.revision {
        let commit = format!("<code class=\"rev\">{}</code>", escape(rev));
        match web_source {
            Some(src) if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let _ = write!(
                    h,
                    "<dt>Commit</dt><dd><a href=\"{}/tree/{}\">{commit}</a></dd>",
                    escape(src.trim_end_matches('/')),
                    escape(rev)
                );
            }
            _ => {
                let _ = write!(h, "<dt>Commit</dt><dd>{commit}</dd>");
            }
        }
    }
    match (web_source, &o.source) {
        (Some(src), _) => {
            let shown = src
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let _ = write!(
                h,
                "<dt>Source</dt><dd><a href=\"{}\">{}</a></dd>",
                escape(src),
                escape(shown)
            );
        }
        (None, Some(src)) => {
            let _ = write!(h, "<dt>Source</dt><dd>{}</dd>", escape(src));
        }
        (None, None) => {}
    }
    let _ = write!(
        h,
        "<dt>Download</dt><dd>{} in {}</dd><dt>Files</dt><dd>{}, {}</dd>",
        escape(&human_bytes(o.size())),
        plural(o.layers.len(), "layer", "layers"),
        plural(files.entries.len(), "file", "files"),
        escape(&human_bytes(files.bytes())),
    );
    if !o.platforms.is_empty() {
        let p: Vec<&str> = o.platforms.iter().map(|(p, _)| p.as_str()).collect();
        let _ = write!(h, "<dt>Platforms</dt><dd>{}</dd>", escape(&p.join(", ")));
    }
    h.push_str("</dl>\n");

    // Use it.
    h.push_str("<section><h2>Use it in a Dockerfile</h2>\n");
    if let Some(e) = files.example() {
        let _ = write!(
            h,
            "<p class=\"label\">Copy one file (<code>{}</code>, {})</p>",
            escape(&e.path),
            escape(&human_bytes(e.size))
        );
        command(&mut h, &copy_line(&image, &e.path, "."), "example-one");
    }
    h.push_str("<p class=\"label\">Copy every file</p>");
    command(&mut h, &copy_line(&image, "", "."), "example-all");
    if let Some(p) = &pinned {
        h.push_str("<p class=\"label\">Pinned to the digest, for reproducible builds</p>");
        command(&mut h, &copy_line(p, "", "."), "example-pinned");
    }
    h.push_str("</section>\n");

    // Digests.
    h.push_str("<section><h2>Digests</h2>\n<table class=\"kv\"><tbody>\n");
    for (t, d) in &o.tags {
        let r = format!("{host}/{}@{d}", o.name);
        let _ = writeln!(
            h,
            "<tr><th>tag <span class=\"tag\">{}</span></th><td><code class=\"digest\">{}</code></td><td>{}</td></tr>",
            escape(t),
            escape(&d.to_string()),
            copy_button(&r, &format!("pinned reference of tag {t}"))
        );
    }
    for (p, d) in &o.platforms {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td><code class=\"digest\">{}</code></td><td></td></tr>",
            escape(p),
            escape(&d.to_string())
        );
    }
    for (artifact, d) in &o.referrers {
        let artifact = artifact.as_deref().unwrap_or_default();
        let kind = match artifact {
            crate::image::media::IN_TOTO => "provenance",
            _ => "referrer",
        };
        let _ = writeln!(
            h,
            "<tr><th>{kind}</th><td><code class=\"digest\" title=\"{}\">{}</code></td><td></td></tr>",
            escape(artifact),
            escape(&d.to_string())
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Layers.
    let _ = write!(
        h,
        "<section><h2>Layers <span class=\"muted\">{}</span></h2>\n<table class=\"list layers\"><thead><tr>\
         <th class=\"num\">#</th><th>Format</th><th>Digest</th><th class=\"num\">Size</th>\
         <th class=\"num\">Files</th></tr></thead><tbody>\n",
        o.layers.len()
    );
    for (i, l) in o.layers.iter().enumerate() {
        let info = files.layers.get(i);
        let what = match info {
            Some(f) if f.error.is_some() => format!(
                "<span class=\"warn\">{}</span>",
                escape(f.error.as_deref().unwrap_or_default())
            ),
            Some(f) => match &f.only {
                Some(path) => format!(
                    "<code>{}</code> · {}",
                    escape(path),
                    escape(&human_bytes(f.bytes))
                ),
                None => format!("{} · {}", f.files, escape(&human_bytes(f.bytes))),
            },
            None => String::new(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td><code class=\"digest\" title=\"{}\">{}</code></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            i + 1,
            media_label(&l.media_type),
            escape(&l.media_type),
            escape(&l.digest.to_string()),
            escape(&human_bytes(l.size)),
            what
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Files.
    let n = files.entries.len();
    let multi = o.layers.len() > 1;
    let _ = write!(
        h,
        "<section><h2>Files <span class=\"muted\">{}</span></h2>\n\
         <div class=\"search small\"><input id=\"fq\" type=\"search\" placeholder=\"Filter {}\" \
         autocomplete=\"off\" spellcheck=\"false\" aria-label=\"Filter files\" \
         data-filter=\"files\" data-count=\"file-count\" data-noun=\"file\" data-empty=\"files-empty\"></div>\n\
         <p class=\"count\" id=\"file-count\" aria-live=\"polite\">{}</p>\n\
         <table class=\"list tree\" id=\"files\"><thead><tr><th>Name</th><th class=\"num\">Size</th>{}<th></th></tr></thead><tbody>\n",
        n,
        plural(n, "file", "files"),
        plural(n, "file", "files"),
        if multi {
            "<th class=\"num hide-narrow\">Layer</th>"
        } else {
            ""
        },
    );
    let totals = dir_totals(&files.entries);
    let mut open: Vec<&str> = Vec::new();
    for f in files.entries.iter().take(MAX_FILES_SHOWN) {
        let parts: Vec<&str> = f.path.split('/').collect();
        let dirs = &parts[..parts.len() - 1];
        // Close directories this entry is not in, then open the new ones.
        let common = open
            .iter()
            .zip(dirs.iter())
            .take_while(|(a, b)| a == b)
            .count();
        open.truncate(common);
        for (depth, d) in dirs.iter().enumerate().skip(common) {
            open.push(d);
            let path = parts[..=depth].join("/");
            let (count, bytes) = totals.get(path.as_str()).copied().unwrap_or_default();
            let line = copy_line(&image, &path, &dir_dest(&path));
            let _ = writeln!(
                h,
                "<tr class=\"dir\" data-dir=\"{p}/\" data-search=\"{s}/\"><td class=\"path d{depth}\">\
                 <span class=\"icon\" aria-hidden=\"true\"></span>{name}/ <span class=\"muted\">{count}</span></td>\
                 <td class=\"num\">{size}</td>{layer}<td class=\"act\">{button}</td></tr>",
                p = escape(&path),
                s = escape(&path.to_lowercase()),
                depth = depth.min(12),
                name = escape(d),
                count = plural(count, "file", "files"),
                size = escape(&human_bytes(bytes)),
                layer = if multi { "<td class=\"hide-narrow\"></td>" } else { "" },
                button = copy_button(&line, &path),
            );
        }
        let depth = dirs.len();
        let base = parts[parts.len() - 1];
        let link = match (&f.kind, &f.target) {
            (Kind::File, _) | (_, None) => String::new(),
            (_, Some(t)) => format!(" <span class=\"muted\">→ {}</span>", escape(t)),
        };
        let line = copy_line(&image, &f.path, ".");
        let _ = writeln!(
            h,
            "<tr class=\"{kind}\" data-path=\"{p}\" data-search=\"{s}\"><td class=\"path d{depth}\">\
             <span class=\"icon\" aria-hidden=\"true\"></span>{name}{link}</td><td class=\"num\">{size}</td>\
             {layer}<td class=\"act\">{button}</td></tr>",
            kind = match f.kind {
                Kind::File => "file",
                Kind::Symlink => "file symlink",
                Kind::Hardlink => "file hardlink",
            },
            p = escape(&f.path),
            s = escape(&f.path.to_lowercase()),
            depth = depth.min(12),
            name = escape(base),
            size = escape(&human_bytes(f.size)),
            layer = if multi {
                format!("<td class=\"num hide-narrow\">{}</td>", f.layer + 1)
            } else {
                String::new()
            },
            button = copy_button(&line, &f.path),
        );
    }
    h.push_str(
        "</tbody></table>\n<p class=\"empty\" id=\"files-empty\" hidden>No file matches.</p>\n",
    );
    if n > MAX_FILES_SHOWN {
        let _ = writeln!(
            h,
            "<p class=\"note\">… and {} more files: every file is in <a href=\"{}\">the JSON</a>.</p>",
            n - MAX_FILES_SHOWN,
            escape(&json)
        );
    }
    h.push_str("</section>\n");
    foot(&mut h);
    h
}

pub fn not_found(what: &str) -> String {
    let mut h = String::new();
    head(&mut h, "Not found · depotai");
    h.push_str(
        "<header class=\"top\"><div class=\"wrap\"><a class=\"brand\" href=\"/\"><span>depot<b>ai</b></span></a></div></header>\n<main class=\"wrap\">",
    );
    let _ = write!(
        h,
        "<h1>Not found</h1><p>No model or page is called <code>{}</code> here.</p>\
         <p><a href=\"/\">All models</a></p>",
        escape(what)
    );
    foot(&mut h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::serve::pages::{LayerDesc, TocFile};

    fn overview() -> Overview {
        Overview {
            name: "acme/m".into(),
            tags: vec![("<b>tag".into(), Digest::of(b"i"))],
            revision: Some("<script>alert(1)</script>".into()),
            source: Some("javascript:alert(1)".into()),
            platforms: vec![("linux/amd64".into(), Digest::of(b"m"))],
            referrers: vec![],
            layers: vec![LayerDesc {
                digest: Digest::of(b"l"),
                size: 2048,
                media_type: crate::layer::estargz::MEDIA_TYPE.into(),
            }],
        }
    }

    fn files(names: &[&str]) -> Files {
        Files::merge(vec![Ok(names
            .iter()
            .map(|n| TocFile {
                name: n.to_string(),
                size: 3,
                kind: "reg".into(),
                link_name: String::new(),
            })
            .collect())])
    }

    #[test]
    fn the_pages_escape_everything_from_disk_and_the_request() {
        let o = overview();
        let f = files(&["<img src=x onerror=alert(1)>.txt", "d\"q/'x.json"]);
        let page = model("evil\"<host>", &o, &f, false);
        for bad in [
            "<script>alert",
            "<img src=x",
            "<b>tag",
            "href=\"javascript",
            "evil\"<",
        ] {
            assert!(!page.contains(bad), "{bad} in\n{page}");
        }
        for good in [
            "&lt;img src=x onerror=alert(1)&gt;.txt",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "data-copy=\"COPY --link --from=evil&quot;&lt;host&gt;/acme/m:&lt;b&gt;tag [&quot;/d\\&quot;q/&#39;x.json&quot;, &quot;.&quot;]\"",
        ] {
            assert!(page.contains(good), "{good} missing from\n{page}");
        }
        // The only script is the static file.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/_/app.js?v="));
        let list = catalogue("h", &[Arc::new(o)]);
        assert!(!list.contains("<script>alert"));
        assert!(list.contains("title=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert_eq!(list.matches("<script").count(), 1);
    }

    #[test]
    fn an_image_without_tags_or_files_gets_no_pinned_or_one_file_example() {
        let o = Overview {
            tags: vec![],
            layers: vec![],
            ..overview()
        };
        let page = model("h", &o, &Files::default(), false);
        assert!(page.contains("id=\"example-all\">COPY --link --from=h/acme/m / .</code>"));
        assert!(!page.contains("example-one"));
        assert!(!page.contains("example-pinned"));
        assert!(page.contains("<dd>0 B in 0 layers</dd><dt>Files</dt><dd>0 files, 0 B</dd>"));
        let list = catalogue("h", &[Arc::new(o)]);
        assert!(list.contains("data-copy=\"COPY --link --from=h/acme/m / .\""));
    }

    #[test]
    fn the_tree_opens_each_directory_once_with_its_totals() {
        let o = overview();
        let f = files(&["a/b/c.txt", "a/d.txt", "a/b/e.txt", "z.json"]);
        let page = model("h", &o, &f, false);
        assert_eq!(page.matches("data-dir=\"a/\"").count(), 1);
        assert_eq!(page.matches("data-dir=\"a/b/\"").count(), 1);
        assert!(page.contains("a/ <span class=\"muted\">3 files</span>"));
        assert!(page.contains("b/ <span class=\"muted\">2 files</span>"));
        let order: Vec<usize> = ["a/b/c.txt", "a/b/e.txt", "a/d.txt", "z.json"]
            .iter()
            .map(|p| page.find(&format!("data-path=\"{p}\"")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(page.contains("data-copy=\"COPY --link --from=h/acme/m:&lt;b&gt;tag /a/b ./a/b/\""));
    }
}
