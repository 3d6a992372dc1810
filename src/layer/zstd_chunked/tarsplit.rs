//! The tar-split: how to rebuild the exact tar stream from the files, as newline-delimited
//! JSON (vbatts/tar-split's `storage.Entry`), zstd-compressed. Type 2 "segment" entries
//! carry the raw bytes between payloads (padding, headers, end of archive) in base64;
//! type 1 "file" entries name each tar entry, with its size and the big-endian CRC-64/ISO
//! of its content (null when empty). Entries are laid out as tar-split's own
//! `asm.NewInputTarStream` lays them out, which is what containers/storage's writer uses:
//! one segment with the padding of the previous entry and this entry's header(s), the
//! file entry, …, one segment with the last padding and the end-of-archive blocks, and a
//! final segment with whatever followed them (nothing, here).

use crate::layer::members::{TarObserver, CRC64};
use crate::layer::LayerError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write;

const FILE_TYPE: u8 = 1;
const SEGMENT_TYPE: u8 = 2;

/// The CRC-64/ISO tar-split records for a file's content (Go's `crc64.ISO`).
pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// One tar-split line, for reading back (`payload` stays base64, as in the JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarSplitEntry {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub name_raw: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub payload: Option<String>,
    pub position: u64,
}

/// Builds the tar-split while the reader goes, compressing as it goes: memory is the
/// compressed tar-split plus the raw bytes since the last entry.
pub(crate) struct TarSplitWriter {
    enc: zstd::stream::write::Encoder<'static, Vec<u8>>,
    /// Non-payload bytes since the last file entry: the next segment.
    pending: Vec<u8>,
    position: u64,
    uncompressed: u64,
    line: String,
}

fn zstd_err(e: std::io::Error) -> LayerError {
    LayerError::Compress(format!("zstd (tar-split): {e}"))
}

impl TarSplitWriter {
    pub(crate) fn new(level: i32) -> Result<TarSplitWriter, LayerError> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).map_err(zstd_err)?;
        enc.include_checksum(true).map_err(zstd_err)?;
        Ok(TarSplitWriter {
            enc,
            pending: Vec::new(),
            position: 0,
            uncompressed: 0,
            line: String::with_capacity(2048),
        })
    }

    fn write_line(&mut self) -> Result<(), LayerError> {
        self.line.push('\n');
        self.enc.write_all(self.line.as_bytes()).map_err(zstd_err)?;
        self.uncompressed += self.line.len() as u64;
        self.position += 1;
        self.line.clear();
        Ok(())
    }

    fn segment(&mut self) -> Result<(), LayerError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        write!(self.line, r#"{{"type":{SEGMENT_TYPE},"payload":""#).expect("to a String");
        b64.encode_string(&self.pending, &mut self.line);
        write!(self.line, r#"","position":{}}}"#, self.position).expect("to a String");
        self.pending.clear();
        self.write_line()
    }

    /// Ends the tar-split: the compressed bytes and the uncompressed length.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, u64), LayerError> {
        if !self.pending.is_empty() {
            self.segment()?;
        }
        // tar-split always ends with the bytes after the end-of-archive blocks, even none.
        self.segment()?;
        let compressed = self.enc.finish().map_err(zstd_err)?;
        Ok((compressed, self.uncompressed))
    }
}

impl TarObserver for TarSplitWriter {
    fn raw(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    fn entry(&mut self, name: &str, size: u64, crc64: Option<u64>) -> Result<(), LayerError> {
        if !self.pending.is_empty() {
            self.segment()?;
        }
        let name = serde_json::to_string(name).expect("a string serialises");
        let line = &mut self.line;
        write!(line, r#"{{"type":{FILE_TYPE},"name":{name}"#).expect("to a String");
        if size > 0 {
            write!(line, r#","size":{size}"#).expect("to a String");
        }
        match crc64 {
            Some(c) => {
                line.push_str(r#","payload":""#);
                base64::engine::general_purpose::STANDARD.encode_string(c.to_be_bytes(), line);
                line.push('"');
            }
            None => line.push_str(r#","payload":null"#),
        }
        write!(line, r#","position":{}}}"#, self.position).expect("to a String");
        self.write_line()
    }
}
