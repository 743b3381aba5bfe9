//! HPACK decoder tests: RFC 7541 Appendix C, Huffman coding, every decoding error, the
//! dynamic table against an independent implementation (`loona-hpack`), and the list limits.

use loona_hpack::Encoder as OtherEncoder;

use crate::h2::hpack::decoder::{DecodeError, Decoded, Decoder, ListLimits};
use crate::h2::hpack::encoder;
use crate::h2::hpack::huffman::{self, HuffmanError};
use crate::h2::hpack::table::Name;

/// Limits that no test block reaches.
const UNLIMITED: ListLimits = ListLimits { max_size: 1 << 20, max_fields: 1 << 10 };

pub(super) fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn name_bytes(name: &Name) -> Vec<u8> {
    match name {
        Name::Header(h) => h.as_str().as_bytes().to_vec(),
        Name::Pseudo(p) => format!(":{p:?}").to_lowercase().into_bytes(),
        Name::Invalid(why) => format!("<invalid: {why}>").into_bytes(),
    }
}

type List = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_with(
    dec: &mut Decoder,
    block: &[u8],
    limits: ListLimits,
) -> (Result<Decoded, DecodeError>, List) {
    let mut list = Vec::new();
    let res =
        dec.decode(block, limits, |e| list.push((name_bytes(&e.name), e.value.to_raw().to_vec())));
    (res, list)
}

fn decode(dec: &mut Decoder, block: &[u8]) -> Result<List, DecodeError> {
    let (res, list) = decode_with(dec, block, UNLIMITED);
    res.map(|d| {
        assert!(!d.too_large);
        list
    })
}

fn list(fields: &[(&str, &str)]) -> List {
    fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

fn compression(block: &[u8]) -> &'static str {
    match decode(&mut Decoder::new(4096), block) {
        Err(DecodeError::Compression(why)) => why,
        other => panic!("expected a compression error for {block:02x?}, got {other:?}"),
    }
}

/// The three requests of RFC 7541 C.3 / C.4, with the table size after each.
fn appendix_c_requests() -> [(List, usize, usize); 3] {
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    let second = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    [(list(&first), 57, 1), (list(&second), 110, 2), (list(&third), 164, 3)]
}

fn check_sequence(blocks: [&str; 3]) {
    let mut dec = Decoder::new(4096);
    for (block, (want, size, len)) in blocks.iter().zip(appendix_c_requests()) {
        assert_eq!(decode(&mut dec, &unhex(block)).unwrap(), want);
        assert_eq!((dec.table().size(), dec.table().len()), (size, len));
    }
}

#[test]
fn rfc7541_c3_requests_without_huffman() {
    check_sequence([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    check_sequence([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

#[test]
fn huffman_code_is_the_rfc_one() {
    // Spot checks against RFC 7541 Appendix B, then completeness (Kraft's sum is exactly 1,
    // which also means the decoder never reads past 30 bits without finding a symbol).
    assert_eq!(huffman::code(0), (0x1ff8, 13));
    assert_eq!(huffman::code(u16::from(b' ')), (0x14, 6));
    assert_eq!(huffman::code(u16::from(b'0')), (0x0, 5));
    assert_eq!(huffman::code(u16::from(b'a')), (0x3, 5));
    assert_eq!(huffman::code(255), (0x3ffffee, 26));
    assert_eq!(huffman::code(256), (0x3fffffff, 30));
    let kraft: u64 = (0..257).map(|s| 1u64 << (30 - huffman::code(s).1)).sum();
    assert_eq!(kraft, 1 << 30);
}

#[test]
fn huffman_round_trips_every_byte_and_agrees_with_loona() {
    let mut all: Vec<u8> = (0..=255).collect();
    all.extend((0..=255).rev());
    let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    inputs.push(all);
    inputs.push(b"www.example.com".to_vec());
    inputs.push(Vec::new());
    for input in inputs {
        let coded = huffman::encode(&input);
        let mut ours = Vec::new();
        huffman::decode(&coded, &mut ours).unwrap();
        assert_eq!(ours, input);
        let theirs = loona_hpack::huffman::HuffmanDecoder::new().decode(&coded).unwrap();
        assert_eq!(theirs, input, "loona disagrees on {input:02x?}");
    }
}

#[test]
fn huffman_rejects_bad_padding_and_eos() {
    let decode = |bytes: &[u8]| huffman::decode(bytes, &mut Vec::new());
    // '0' is 00000; three 1 bits of padding complete the byte.
    assert_eq!(decode(&[0x07]), Ok(()));
    // Padding of zeros is not a prefix of EOS.
    assert_eq!(decode(&[0x00]), Err(HuffmanError::Padding));
    // A whole byte of ones after a symbol is padding longer than 7 bits.
    assert_eq!(decode(&[0x07, 0xff]), Err(HuffmanError::Padding));
    // EOS (30 ones) inside the string.
    assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
    // Through the block decoder: a literal `:path` whose Huffman value has zero padding.
    assert_eq!(compression(&[0x04, 0x81, 0x00]), "invalid Huffman padding");
    assert_eq!(
        compression(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        "EOS symbol in a Huffman-coded string"
    );
}

#[test]
fn integers_are_bounded() {
    // Four continuation bytes are the most accepted; the largest such index is just out of
    // range, a fifth byte is "too large" even when the value would be small.
    assert_eq!(compression(&[0xff, 0xff, 0xff, 0xff, 0x7f]), "field index out of range");
    assert_eq!(compression(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x00]), "integer too large");
    assert_eq!(
        compression(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
        "integer too large"
    );
    assert_eq!(compression(&[0xff]), "block ends inside an integer");
    assert_eq!(compression(&[0xff, 0x80]), "block ends inside an integer");
    // A size update carries the same encoding: every value up to the cap decodes exactly.
    for v in [0, 30, 31, 32, 127, 128, 4096, 16_383, 16_384, 1 << 21, (1 << 28) + 30] {
        let mut block = bytes::BytesMut::new();
        encoder::size_update(v, &mut block);
        let mut dec = Decoder::new(usize::MAX);
        assert_eq!(decode(&mut dec, &block), Ok(vec![]), "size {v}");
    }
    let mut block = bytes::BytesMut::new();
    encoder::size_update((1 << 28) + 31, &mut block);
    assert_eq!(compression(&block), "integer too large");
}

#[test]
fn bad_indices_and_truncated_strings() {
    assert_eq!(compression(&[0x80]), "field index out of range");
    assert_eq!(compression(&[0xbe]), "field index out of range"); // 62: the table is empty
    assert_eq!(compression(&[0x7f, 0x00, 0x01, b'x']), "name index out of range"); // 63
    assert_eq!(compression(&[0x04, 0x05, b'a']), "string longer than the block");
    assert_eq!(compression(&[0x00, 0x01]), "string longer than the block");
    assert_eq!(compression(&[0x04]), "block ends before a string");
}

#[test]
fn table_size_updates() {
    // Above our SETTINGS_HEADER_TABLE_SIZE: 4097 is refused, 4096 accepted.
    assert_eq!(compression(&[0x3f, 0xe2, 0x1f]), "dynamic table size update above our limit");
    let mut dec = Decoder::new(4096);
    assert_eq!(decode(&mut dec, &[0x3f, 0xe1, 0x1f, 0x82]), Ok(list(&[(":method", "GET")])));
    // Not after a field, even in the same block as updates at the front.
    assert_eq!(compression(&[0x82, 0x20]), "dynamic table size update after a field");
    assert_eq!(compression(&[0x20, 0x82, 0x3f, 0x01]), "dynamic table size update after a field");
    // Two at the front (the smallest, then the final size) are fine; shrinking evicts.
    let mut dec = Decoder::new(4096);
    decode(&mut dec, &unhex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap();
    assert_eq!(dec.table().len(), 1);
    assert_eq!(decode(&mut dec, &[0x20, 0x3f, 0xe1, 0x1f]), Ok(vec![]));
    assert_eq!(dec.table().len(), 0);
    assert_eq!(compression(&[0x20, 0xbe]), "field index out of range");
    // A table smaller than our setting: an entry larger than it empties it.
    let mut dec = Decoder::new(4096);
    decode(&mut dec, &[0x3f, 0x19]).unwrap(); // 56
    decode(&mut dec, &unhex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(); // 57 bytes
    assert_eq!(dec.table().len(), 0);
}

/// A small deterministic generator (xorshift), so the cross-check covers many shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[test]
fn dynamic_table_agrees_with_loona_under_eviction() {
    // loona's encoder indexes every new field, so a small table evicts constantly; if our
    // eviction or indexing were off by one, later indexed references would decode wrong.
    let names = ["x-a", "x-bb", "user-agent", "accept", "cookie", "x-long-header-name"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for table_size in [0, 64, 256, 4096] {
        let mut theirs = OtherEncoder::new();
        theirs.set_max_table_size(table_size);
        let mut ours = Decoder::new(table_size);
        for _ in 0..200 {
            let n = 1 + rng.below(6);
            let fields: Vec<(String, String)> = (0..n)
                .map(|_| {
                    let name = names[rng.below(names.len() as u64)].to_string();
                    let value = "v".repeat(rng.below(40)) + &rng.below(8).to_string();
                    (name, value)
                })
                .collect();
            let block = theirs.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            let want: List = fields
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(decode(&mut ours, &block), Ok(want), "table size {table_size}");
            assert!(ours.table().size() <= table_size);
        }
    }
}

#[test]
fn over_the_limit_the_block_is_still_decoded_to_the_end() {
    // Three incrementally indexed fields of 39 bytes each; the limit admits two.
    let mut enc = OtherEncoder::new();
    let fields = [("x-a", "0123"), ("x-b", "4567"), ("x-c", "89ab")];
    let block = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let mut dec = Decoder::new(4096);
    let limits = ListLimits { max_size: 80, max_fields: 100 };
    let (res, got) = decode_with(&mut dec, &block, limits);
    assert_eq!(res, Ok(Decoded { too_large: true, list_size: 117, fields: 3 }));
    assert_eq!(got, list(&fields[..2]));
    // All three went into the table, in step with the encoder: the next block is indexed.
    assert_eq!(dec.table().len(), 3);
    let block = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    assert_eq!(block, [0xc0, 0xbf, 0xbe]);
    assert_eq!(decode(&mut dec, &block), Ok(list(&fields)));

    // The count limit counts regular fields only.
    let limits = ListLimits { max_size: 1000, max_fields: 1 };
    // :method GET (42), :path / (38), then `accept: ` twice (38 each, name index 19).
    let block = [0x82, 0x84, 0x53, 0x00, 0x53, 0x00];
    let (res, got) = decode_with(&mut Decoder::new(4096), &block, limits);
    assert_eq!(res, Ok(Decoded { too_large: true, list_size: 42 + 3 * 38, fields: 2 }));
    assert_eq!(got, list(&[(":method", "GET"), (":path", "/"), ("accept", "")]));
}

#[test]
fn hpack_bomb_stops_at_twice_the_limit_without_expanding() {
    // One 4 KB entry, then 100,000 one-byte references to it: 400 MB if expanded.
    let value = "a".repeat(4000);
    let mut block = bytes::BytesMut::from(&[0x40, 0x01, b'x'][..]);
    encoder::string(value.as_bytes(), &mut block);
    block.extend(std::iter::repeat_n(0xbe, 100_000));

    let max = 32 * 1024;
    let limits = ListLimits { max_size: max, max_fields: 100 };
    let mut delivered = 0usize;
    let mut calls = 0usize;
    let res = Decoder::new(4096).decode(&block, limits, |e| {
        delivered += e.size;
        calls += 1;
    });
    let entry = 1 + 4000 + 32;
    // Stopped on the first field past 2 × max: 17 fields counted, 8 handed out.
    assert_eq!(res, Err(DecodeError::Flood(17 * entry)));
    assert_eq!(calls, max / entry);
    assert!(delivered <= max);
}

#[test]
fn arbitrary_bytes_never_panic_and_never_pass_the_limit() {
    // A poor man's fuzz run: random blocks, some built from valid representations, some
    // pure noise, through one long-lived decoder (until it fails) and fresh ones.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let limits = ListLimits { max_size: 600, max_fields: 8 };
    let mut shared = Decoder::new(256);
    for round in 0..5_000 {
        let len = rng.below(64);
        let mut block: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 {
            // Bias towards small indices and short strings, which reach deeper.
            for b in block.iter_mut().step_by(3) {
                *b &= 0xc7;
            }
        }
        for dec in [&mut shared, &mut Decoder::new(256)] {
            let mut delivered = 0;
            let res = dec.decode(&block, limits, |e| delivered += e.size);
            assert!(delivered <= limits.max_size, "{block:02x?}");
            assert!(dec.table().size() <= 256);
            if let Ok(d) = res {
                assert!(d.list_size <= 2 * limits.max_size);
            }
        }
    }
}

#[test]
fn huffman_fast_and_slow_paths_agree_with_loona_on_random_strings() {
    // A fixed xorshift, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..4000 {
        let len = (next() % 48) as usize;
        // Mostly printable text (short codes, the fast path), some of any byte (long codes).
        let input: Vec<u8> = (0..len)
            .map(|_| match next() % 4 {
                0 => (next() % 256) as u8,
                _ => b' ' + (next() % 95) as u8,
            })
            .collect();
        let coded = huffman::encode(&input);
        let mut ours = Vec::new();
        huffman::decode(&coded, &mut ours).unwrap();
        assert_eq!(ours, input, "round {round}");
        // Arbitrary bytes: both decoders accept exactly the same strings, with the same
        // output.
        let garbage: Vec<u8> = (0..len % 8).map(|_| (next() % 256) as u8).collect();
        let mut ours = Vec::new();
        let ours = huffman::decode(&garbage, &mut ours).map(|()| ours);
        let theirs = loona_hpack::huffman::HuffmanDecoder::new().decode(&garbage);
        assert_eq!(ours.ok(), theirs.ok(), "garbage {garbage:02x?}");
    }
}

#[test]
fn static_name_index_finds_every_regular_name_of_the_table_and_nothing_else() {
    use crate::h2::hpack::table::static_name_index;
    // RFC 7541 Appendix A, indices 15..=61 (the regular names).
    let rfc = [
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "accept",
        "access-control-allow-origin",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "cookie",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "link",
        "location",
        "max-forwards",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "refresh",
        "retry-after",
        "server",
        "set-cookie",
        "strict-transport-security",
        "transfer-encoding",
        "user-agent",
        "vary",
        "via",
        "www-authenticate",
    ];
    for (i, name) in rfc.iter().enumerate() {
        let name = http::HeaderName::from_static(name);
        assert_eq!(static_name_index(&name), Some(15 + i), "{name}");
    }
    for other in ["x-request-id", "a", "keep-alive", "x-a-name-far-longer-than-any-in-the-table"] {
        let name = http::HeaderName::from_bytes(other.as_bytes()).unwrap();
        assert_eq!(static_name_index(&name), None, "{other}");
    }
}

#[test]
fn a_repeated_huffman_literal_decodes_to_the_same_value_and_a_new_one_replaces_it() {
    // `:path` (static name 4) without indexing, its value Huffman-coded.
    let block = |value: &[u8]| {
        let coded = huffman::encode(value);
        let mut b = vec![0x04, 0x80 | coded.len() as u8];
        b.extend_from_slice(&coded);
        b
    };
    let mut dec = Decoder::new(4096);
    for path in [&b"/plaintext"[..], b"/plaintext", b"/other?q=1", b"/plaintext", b"/other?q=1"] {
        assert_eq!(
            decode(&mut dec, &block(path)).unwrap(),
            vec![(b":path".to_vec(), path.to_vec())]
        );
    }
    // The same octets sent raw are the raw value, whatever was decoded before.
    let coded = huffman::encode(b"/plaintext");
    let mut raw = vec![0x04, coded.len() as u8];
    raw.extend_from_slice(&coded);
    assert_eq!(decode(&mut dec, &raw).unwrap(), vec![(b":path".to_vec(), coded)]);
    // Bad padding is still refused when the octets differ from the last good ones.
    assert_eq!(compression(&[0x04, 0x81, 0x00]), "invalid Huffman padding");
}
