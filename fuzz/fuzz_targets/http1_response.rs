//! The HTTP/1.1 response framer reads backend bytes in arbitrary splits: it must never
//! panic, and where responses end must not depend on how the bytes were split. The
//! other two HTTP readers (a request head's end, a health check's status line) get the
//! same bytes: no panic, and a head's end lies inside what was given.
#![no_main]
use backend_wire::http1::{head_len, status_code, ResponseFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(n) = head_len(data) {
        assert!(n <= data.len(), "a head cannot end past its bytes");
    }
    let _ = status_code(data);
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut whole = ResponseFramer::new();
    let whole_r = whole.feed(data);
    let mut pieces = ResponseFramer::new();
    let mut pieces_err = None;
    for piece in data.chunks(usize::from(split % 16) + 1) {
        match pieces.feed(piece) {
            Ok(fed) => assert!(fed.last_end <= piece.len()),
            Err(e) => {
                pieces_err = Some(e);
                break;
            }
        }
    }
    match (whole_r, pieces_err) {
        (Ok(fed), None) => {
            assert_eq!(u64::from(fed.ended), whole.responses());
            assert_eq!(whole.responses(), pieces.responses());
            assert_eq!(whole.at_boundary(), pieces.at_boundary());
        }
        (Err(a), Some(b)) => assert_eq!(a, b),
        (a, b) => panic!("split changed the outcome: {a:?} vs {b:?}"),
    }
});
