//! Any text as a config file: a clear error or a config, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::fuzzing::config(data);
});
