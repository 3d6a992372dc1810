//! The landing page at `/`: every model with its tags, commit, size, files (from the
//! layer's eStargz TOC) and the Dockerfile line that copies each file. Everything that
//! comes from disk or from the request is HTML-escaped.

use super::store::Summary;
use std::fmt::Write as _;

/// Files listed per model; a model with more gets a note instead of a huge page.
const MAX_FILES_SHOWN: usize = 2000;

/// Escapes text for HTML element content and (quoted) attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 MiB (1572864 bytes)`.
pub fn human_size(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{} ({n} bytes)", crate::units::human_bytes(n))
    }
}

/// The image reference to pull: `host/name`, with `:tag` unless the tag is `latest`.
pub fn image_ref(host: &str, name: &str, tags: &[String]) -> String {
    match tags.iter().find(|t| *t == "latest").or(tags.first()) {
        Some(t) if t != "latest" => format!("{host}/{name}:{t}"),
        _ => format!("{host}/{name}"),
    }
}

/// `COPY --from=IMAGE /path .`, or the JSON form when the path needs quoting.
pub fn copy_line(image: &str, path: &str) -> String {
    let src = format!("/{}", path.trim_start_matches('/'));
    if src
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '$')
    {
        let quoted = serde_json::to_string(&src).expect("a string serialises");
        format!("COPY --from={image} [{quoted}, \".\"]")
    } else {
        format!("COPY --from={image} {src} .")
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}\
h2{margin-top:2.5rem;border-bottom:1px solid #ddd}\
code,pre{font-family:ui-monospace,monospace;font-size:.9rem}\
pre{background:#f5f5f5;padding:.6rem;overflow-x:auto}\
table{border-collapse:collapse}td,th{text-align:left;padding:.15rem .8rem .15rem 0;vertical-align:top}\
td.size{text-align:right;white-space:nowrap}";

pub fn render(host: &str, models: &[Summary]) -> String {
    let mut h = String::new();
    let host_e = escape(host);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>depotai registry at {host_e}</title><style>{STYLE}</style></head><body>\n\
         <h1>depotai registry</h1>\n<p>{} model{} served read-only at <code>{host_e}</code> \
         (OCI Distribution API under <code>/v2/</code>).</p>\n",
        models.len(),
        if models.len() == 1 { "" } else { "s" }
    );
    if models.is_empty() {
        h.push_str("<p>No images yet: build one with <code>depotai build</code> into the served directory.</p>\n");
    }
    for m in models {
        let image = image_ref(host, &m.name, &m.tags);
        let _ = write!(
            h,
            "<section id=\"{id}\"><h2>{name}</h2>\n<table>\n<tr><th>tags</th><td>{tags}</td></tr>\n",
            id = escape(&m.name),
            name = escape(&m.name),
            tags = escape(&m.tags.join(", "))
        );
        if let Some(rev) = &m.revision {
            let _ = writeln!(
                h,
                "<tr><th>commit</th><td><code>{}</code></td></tr>",
                escape(rev)
            );
        }
        if let Some(src) = &m.source {
            if src.starts_with("https://") || src.starts_with("http://") {
                let _ = writeln!(
                    h,
                    "<tr><th>source</th><td><a href=\"{0}\">{0}</a></td></tr>",
                    escape(src)
                );
            } else {
                let _ = writeln!(h, "<tr><th>source</th><td>{}</td></tr>", escape(src));
            }
        }
        if !m.platforms.is_empty() {
            let _ = writeln!(
                h,
                "<tr><th>platforms</th><td>{}</td></tr>",
                escape(&m.platforms.join(", "))
            );
        }
        let _ = writeln!(
            h,
            "<tr><th>size</th><td>{}</td></tr>\n<tr><th>pull</th><td><code>{}</code></td></tr>\n</table>",
            escape(&human_size(m.size)),
            escape(&image)
        );
        match &m.files {
            Err(why) => {
                let _ = writeln!(h, "<p>Files unavailable: {}</p>", escape(why));
            }
            Ok(files) => {
                // The example line copies a top-level file if there is one.
                let example = files
                    .iter()
                    .find(|(p, _)| !p.contains('/'))
                    .or(files.first());
                if let Some((first, _)) = example {
                    let _ = writeln!(
                        h,
                        "<p>In a Dockerfile:</p>\n<pre><code>{}</code></pre>",
                        escape(&copy_line(&image, first))
                    );
                }
                let _ = writeln!(
                    h,
                    "<details{}><summary>{} file{}</summary>\n<table>\n<tr><th>file</th><th>size</th><th>Dockerfile</th></tr>",
                    if files.len() <= 50 { " open" } else { "" },
                    files.len(),
                    if files.len() == 1 { "" } else { "s" }
                );
                for (path, size) in files.iter().take(MAX_FILES_SHOWN) {
                    let _ = writeln!(
                        h,
                        "<tr><td><code>{}</code></td><td class=\"size\">{}</td><td><code>{}</code></td></tr>",
                        escape(path),
                        size,
                        escape(&copy_line(&image, path))
                    );
                }
                h.push_str("</table>\n");
                if files.len() > MAX_FILES_SHOWN {
                    let _ = writeln!(
                        h,
                        "<p>… and {} more files.</p>",
                        files.len() - MAX_FILES_SHOWN
                    );
                }
                h.push_str("</details>\n");
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn copy_lines_quote_paths_that_need_it() {
        assert_eq!(
            copy_line("h:5000/acme/m", "config.json"),
            "COPY --from=h:5000/acme/m /config.json ."
        );
        assert_eq!(
            copy_line("h/m", "a b/c.txt"),
            r#"COPY --from=h/m ["/a b/c.txt", "."]"#
        );
        assert_eq!(image_ref("h", "m", &["v1".into()]), "h/m:v1");
        assert_eq!(image_ref("h", "m", &["v1".into(), "latest".into()]), "h/m");
    }

    #[test]
    fn the_page_escapes_everything_from_disk_and_the_request() {
        let s = Summary {
            name: "acme/m".into(),
            tags: vec!["latest".into()],
            revision: Some("<script>".into()),
            source: Some("javascript:alert(1)".into()),
            platforms: vec!["linux/amd64".into()],
            size: 2048,
            files: Ok(vec![("<b>.txt".into(), 3)]),
        };
        let html = render("evil\"<host>", &[s]);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(!html.contains("href=\"javascript"));
        assert!(html.contains("&lt;b&gt;.txt"));
        assert!(html.contains("2.0 KiB (2048 bytes)"));
    }
}
