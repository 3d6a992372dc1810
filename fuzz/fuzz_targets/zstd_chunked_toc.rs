//! The zstd:chunked footer → manifest (TOC) → tar-split reader, on arbitrary blobs, and
//! the manifest-position annotation parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|blob: &[u8]| {
    match depotai::layer::zstd_chunked::reader::zstd_chunked_from_blob(blob) {
        Ok((_, files, _)) => {
            for f in &files {
                let sum: u64 = f.chunks.iter().map(|c| c.len).sum();
                assert_eq!(sum, f.size);
            }
        }
        Err(e) => assert!(!e.0.contains('\n'), "{e}"),
    }
    if let Ok(s) = std::str::from_utf8(blob) {
        if let Ok((o, l, u)) = depotai::layer::zstd_chunked::reader::zstd_toc_position(s, 1 << 40) {
            assert!(o + l <= 1 << 40 && u <= depotai::limits::MAX_TOC_BYTES);
        }
    }
    // The TOC JSON step alone.
    let _ = depotai::layer::zstd_chunked::reader::parse_zstd_toc(blob);
});
