//! Property tests of the SSE line decoder (Modal's body, docs/backends.md §3.1): arbitrary
//! bytes in arbitrary chunks never panic, and how a body is cut into chunks never changes
//! what is decoded from it. Ordinary tests, 256 cases each. (The client message decoder's
//! properties are unit tests beside it: `wire` is not public.)

use dreamcore_relay::backend::modal::sse::SseLines;
use proptest::collection::vec;
use proptest::prelude::*;

/// Small enough that generated lines cross it both inside one chunk and across chunks.
const MAX_LINE: usize = 48;

fn decode(chunks: &[&[u8]]) -> Vec<String> {
    let mut lines = SseLines::new(MAX_LINE);
    let mut payloads: Vec<String> = chunks.iter().flat_map(|chunk| lines.push(chunk)).collect();
    payloads.extend(lines.finish());
    payloads
}

/// `body` cut at `cuts` (indices into it, any order, repeats allowed).
fn split<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for cut in at {
        chunks.push(&body[from..cut]);
        from = cut;
    }
    chunks.push(&body[from..]);
    chunks
}

/// SSE-shaped bytes: `data:`/`event:`/comment/blank lines with LF or CRLF, non-ASCII text,
/// stray invalid UTF-8 and lines both under and over [`MAX_LINE`].
fn sse_body() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        prop_oneof![
            Just(&b"data: "[..]),
            Just(&b"data:"[..]),
            Just(&b"event: "[..]),
            Just(&b": "[..]),
            Just(&b""[..]),
        ],
        prop_oneof![
            "[a-z{}\":,ジャンプ ]{0,60}".prop_map(String::into_bytes),
            vec(any::<u8>(), 0..70),
        ],
        prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b""[..])],
    )
        .prop_map(|(prefix, text, end)| [prefix, &text[..], end].concat());
    vec(line, 0..12).prop_map(|lines| lines.concat())
}

proptest! {
    #[test]
    fn sse_arbitrary_bytes_in_arbitrary_chunks_never_panic(
        body in vec(any::<u8>(), 0..512),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        decode(&split(&body, &cuts));
    }

    #[test]
    fn sse_decoding_does_not_depend_on_chunking(
        body in sse_body(),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        prop_assert_eq!(decode(&split(&body, &cuts)), decode(&[&body]));
    }

    #[test]
    fn sse_well_formed_data_lines_come_out_as_sent(
        payloads in vec("[a-zA-Z0-9{}\":,ジャンプ]{1,12}", 0..8),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let body: String = payloads.iter().map(|p| format!("data: {p}\n\n")).collect();
        prop_assert_eq!(decode(&split(body.as_bytes(), &cuts)), payloads);
    }
}
