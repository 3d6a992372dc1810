//! Catalogue validation (`build --all FILE`): any text gives a catalogue or problems
//! with line numbers, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = depotai::catalogue::Catalogue::parse(text, "fuzz.yaml") {
        let _ = e.to_string();
    }
});
