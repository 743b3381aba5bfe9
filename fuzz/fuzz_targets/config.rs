//! The config file parser and its validation: any text gives a config or a one-line error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = peregrine::config::Config::parse(text) {
        assert!(!e.is_empty());
    }
});
