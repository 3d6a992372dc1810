//! One page of the Hub's tree listing: files with safe names, bounded sizes and
//! well-formed hashes, or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((files, _unsafe)) = depotai::source::hub::parse_tree_page(data) {
        for f in &files {
            assert!(depotai::names::check_path(&f.path).is_ok());
            assert!(f.size <= depotai::limits::MAX_HUB_FILE_SIZE);
        }
    }
});
