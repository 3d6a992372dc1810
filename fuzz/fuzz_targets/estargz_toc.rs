//! The eStargz footer → TOC member → TOC → files-and-chunks reader `ls`/`get` use, on
//! arbitrary blobs: it must answer Ok or a one-line error, never panic or allocate from
//! a declared size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|blob: &[u8]| {
    match depotai::layer::estargz::reader::estargz_from_blob(blob) {
        Ok((toc, files)) => {
            for f in &files {
                // What check_chunks promises: chunks cover the file, inside the data.
                let sum: u64 = f.chunks.iter().map(|c| c.len).sum();
                assert_eq!(sum, f.size);
                assert!(f.chunks.iter().all(|c| c.start < c.end));
            }
            assert!(toc.entries.len() <= depotai::limits::MAX_TOC_ENTRIES);
        }
        Err(e) => assert!(!e.0.contains('\n'), "{e}"),
    }
    // The TOC-member step alone, on the raw bytes as a member.
    if let Ok(json) = depotai::layer::estargz::reader::estargz_toc_json(blob) {
        assert!(json.len() as u64 <= depotai::limits::MAX_TOC_BYTES);
        let _ = depotai::layer::estargz::reader::parse_estargz_toc(&json);
    }
});
