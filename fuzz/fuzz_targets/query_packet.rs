//! Any bytes as a DNS packet arriving on UDP, through the real query handler: an
//! answer or a refusal, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden::fuzzing::packet(data);
});
