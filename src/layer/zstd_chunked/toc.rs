//! The zstd:chunked TOC ("manifest"): compact JSON, keys in containers/storage's struct
//! order, zero values left out.

use serde::{Deserialize, Serialize};

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One entry, in the key order containers/storage writes (`type, name, linkName, mode,
/// size, uid, gid, modtime, accesstime, changetime, devMajor, devMinor, xattrs, digest,
/// offset, endOffset, chunkSize, chunkOffset, chunkDigest, chunkType`), minus the keys a
/// data image never needs (access/change times, devices, xattrs), which are ignored when
/// reading.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TocEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gid: u32,
    #[serde(rename = "modtime", default, skip_serializing_if = "String::is_empty")]
    pub mod_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(rename = "endOffset", default, skip_serializing_if = "is_zero")]
    pub end_offset: u64,
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
    #[serde(
        rename = "chunkType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
    /// sha256 of the compressed tar-split.
    #[serde(
        rename = "tarSplitDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tar_split_digest: String,
}

/// A TOC whose entries are any sequence that serialises as [`TocEntry`] values: the
/// writer makes them one at a time from its records instead of holding them all.
#[derive(Serialize)]
pub(crate) struct TocOf<E: Serialize> {
    pub version: u32,
    pub entries: E,
    #[serde(rename = "tarSplitDigest", skip_serializing_if = "String::is_empty")]
    pub tar_split_digest: String,
}

impl Toc {
    /// Compact JSON. Names are plain UTF-8 with only `"`, `\` and control characters
    /// escaped: unlike Go's encoder, `&`, `<` and `>` are not turned into `\u0026`…,
    /// which containers/storage 1.43's reader would take literally.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&TocOf {
            version: self.version,
            entries: &self.entries,
            tar_split_digest: self.tar_split_digest.clone(),
        })
        .expect("serialising a TOC to memory cannot fail")
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Toc> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_json_is_compact_in_containers_storage_key_order_without_zero_fields() {
        let toc = Toc {
            version: 1,
            entries: vec![
                TocEntry {
                    kind: "dir".into(),
                    name: "a/".into(),
                    mode: 493,
                    mod_time: "1970-01-01T00:00:00Z".into(),
                    ..Default::default()
                },
                TocEntry {
                    kind: "reg".into(),
                    name: "a/q&a <1>.bin".into(),
                    mode: 420,
                    size: 10,
                    mod_time: "1970-01-01T00:00:00Z".into(),
                    digest: "sha256:f".into(),
                    offset: 100,
                    end_offset: 150,
                    chunk_size: 6,
                    chunk_digest: "sha256:c".into(),
                    ..Default::default()
                },
                TocEntry {
                    kind: "chunk".into(),
                    name: "a/q&a <1>.bin".into(),
                    offset: 120,
                    chunk_size: 4,
                    chunk_offset: 6,
                    chunk_digest: "sha256:d".into(),
                    ..Default::default()
                },
            ],
            tar_split_digest: "sha256:t".into(),
        };
        let json = String::from_utf8(toc.to_json()).unwrap();
        let want = concat!(
            r#"{"version":1,"entries":["#,
            r#"{"type":"dir","name":"a/","mode":493,"modtime":"1970-01-01T00:00:00Z"},"#,
            r#"{"type":"reg","name":"a/q&a <1>.bin","mode":420,"size":10,"modtime":"1970-01-01T00:00:00Z","digest":"sha256:f","offset":100,"endOffset":150,"chunkSize":6,"chunkDigest":"sha256:c"},"#,
            r#"{"type":"chunk","name":"a/q&a <1>.bin","offset":120,"chunkSize":4,"chunkOffset":6,"chunkDigest":"sha256:d"}"#,
            r#"],"tarSplitDigest":"sha256:t"}"#
        );
        assert_eq!(json, want);
        assert_eq!(Toc::from_json(json.as_bytes()).unwrap(), toc);
    }
}
