//! Any bytes as a list file, in every format: the parser must never panic, and every
//! accepted rule must be a name the matcher accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::fuzzing::list(data);
});
