//! Any bytes as a query's EDNS options: client subnet and MAC read or ignored, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::fuzzing::edns_identity(data);
});
