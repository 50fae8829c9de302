//! Any bytes as a RADIUS accounting packet (and the same bytes correctly signed): parsed,
//! dropped or applied to the sign-ins, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::fuzzing::radius_accounting(data);
});
