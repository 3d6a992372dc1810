//! OCI index and manifest documents as `ls`/`get` (remote), `push` (a layout) and
//! `serve` (the store) read them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = depotai::remote::parse_manifest_document(data, "fuzz");
    let _ = depotai::serve::store::parse_document(data);
    let _ = depotai::remote::push::parse_layout_document(data, "fuzz");
});
