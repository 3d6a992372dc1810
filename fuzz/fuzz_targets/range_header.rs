//! `serve`'s Range header parser: satisfiable ranges only, inside the representation,
//! never more than the limits allow, and a multipart body whose length adds up.
#![no_main]
use depotai::serve::range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let header = &data[8..];
    if let Ok(Some(ranges)) = range::parse(header, len) {
        assert!(!ranges.is_empty() && ranges.len() <= range::MAX_RANGES);
        for r in &ranges {
            assert!(r.start < r.end && r.end <= len, "{r:?} of {len}");
        }
        if ranges.len() > 1 {
            let parts = range::multipart(&ranges, len, "application/octet-stream", "B");
            let total: u64 = parts.iter().map(|p| p.len()).sum();
            let data: u64 = ranges.iter().map(|r| r.len()).sum();
            assert!(total > data);
        }
    }
});
