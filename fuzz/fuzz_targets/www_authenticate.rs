//! `WWW-Authenticate` challenges from a registry.
#![no_main]
use depotai::remote::auth::{parse_challenge, Challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(h) {
        assert!(h.len() <= depotai::limits::MAX_CHALLENGE_LEN);
        assert!(realm.len() <= h.len());
    }
});
