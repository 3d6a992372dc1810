//! The table of contents, `stargz.index.json`: entries in blob order, serialised as Go's
//! `json.MarshalIndent(toc, "", "\t")` lays it out (struct key order, zero values left
//! out, tab indentation, no trailing newline).

use serde::{Deserialize, Serialize};

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

/// A TOC whose entries are any sequence that serialises as [`TocEntry`] values: the
/// writer makes them one at a time from its records instead of holding them all.
#[derive(Serialize)]
pub(crate) struct TocOf<E: Serialize> {
    pub version: u32,
    pub entries: E,
}

impl<E: Serialize> TocOf<E> {
    /// Writes the JSON as [`Toc::to_json`] lays it out.
    pub(crate) fn write_json(&self, out: impl std::io::Write) -> serde_json::Result<()> {
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(out, fmt);
        self.serialize(&mut ser)
    }
}

impl Toc {
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TocOf {
            version: self.version,
            entries: &self.entries,
        }
        .write_json(&mut out)
        .expect("serialising a TOC to memory cannot fail");
        out
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Toc> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_json_is_tab_indented_in_struct_order_without_zero_fields() {
        let toc = Toc {
            version: 1,
            entries: vec![
                TocEntry {
                    name: "a/".into(),
                    kind: "dir".into(),
                    mode: 493,
                    ..Default::default()
                },
                TocEntry {
                    name: "a/b".into(),
                    kind: "reg".into(),
                    size: 6,
                    mode: 420,
                    offset: 221,
                    digest: "sha256:x".into(),
                    chunk_digest: "sha256:x".into(),
                    ..Default::default()
                },
            ],
        };
        let json = String::from_utf8(toc.to_json()).unwrap();
        let want = "{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"a/\",\n\t\t\t\"type\": \"dir\",\n\t\t\t\"mode\": 493\n\t\t},\n\t\t{\n\t\t\t\"name\": \"a/b\",\n\t\t\t\"type\": \"reg\",\n\t\t\t\"size\": 6,\n\t\t\t\"mode\": 420,\n\t\t\t\"offset\": 221,\n\t\t\t\"digest\": \"sha256:x\",\n\t\t\t\"chunkDigest\": \"sha256:x\"\n\t\t}\n\t]\n}";
        assert_eq!(json, want);
        assert_eq!(Toc::from_json(json.as_bytes()).unwrap(), toc);
    }
}
