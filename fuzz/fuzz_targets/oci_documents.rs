//! OCI index and manifest documents as `ls`/`get` (remote), the layout reader (`push`,
//! `inspect`, `catalogue`) and `serve` (the store, through the layout reader) read them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = depotai::remote::parse_manifest_document(data, "fuzz");
    let _ = depotai::serve::store::parse_document(data);
    let _ = depotai::image::read::parse::<serde_json::Value>(data, "fuzz");
});
