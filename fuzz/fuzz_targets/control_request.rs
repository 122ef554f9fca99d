//! The control socket's request parser: never panics on any line, and what it accepts
//! survives a round trip through the JSON form a client sends.
#![no_main]
use control_proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = Request::parse(line) {
        assert_eq!(Request::parse(&req.to_line()), Ok(req));
    }
});
