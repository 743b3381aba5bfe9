//! Request and trailer blocks: every RFC 9113 §8.1–§8.3 rule, the list limits at the
//! request level, and the error mapping. Blocks come from an independent encoder
//! (`loona-hpack`), which writes whatever bytes it is given, invalid names included.

use loona_hpack::Encoder as OtherEncoder;
use peregrine_limits::Limit;

use crate::h2::{Error, HeaderDecoder, HeaderError, Reason, RequestHead, StreamId};

fn block_from(enc: &mut OtherEncoder, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    block_from(&mut OtherEncoder::new(), fields)
}

fn decoder() -> HeaderDecoder {
    HeaderDecoder::new(4096, 32 * 1024, 100)
}

fn request(fields: &[(&str, &str)]) -> Result<Box<RequestHead>, HeaderError> {
    decoder().decode_request(&block(fields))
}

/// The fields of a valid GET, to which a case adds or from which it removes.
const GET: [(&str, &str); 4] =
    [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?b=c")];

fn get_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = GET.to_vec();
    v.extend_from_slice(extra);
    v
}

fn assert_malformed(fields: &[(&str, &str)], why: &str) {
    match request(fields) {
        Err(HeaderError::Malformed(got)) => assert_eq!(got, why, "{fields:?}"),
        other => panic!("expected Malformed({why:?}) for {fields:?}, got {other:?}"),
    }
}

#[test]
fn a_valid_request() {
    let head = request(&get_with(&[
        ("user-agent", "test"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("content-length", "12"),
        ("content-length", "12"),
        ("te", "trailers"),
        ("x-obs", "caf\u{e9}"),
    ]))
    .unwrap();
    assert_eq!(head.method, http::Method::GET);
    assert_eq!(head.target.to_uri(), "https://example.com/a?b=c");
    assert_eq!(head.content_length, Some(12));
    // The list keeps the fields in order, and the map built from it holds them all.
    let list: Vec<String> = head.headers.iter().map(|(n, _)| n.as_str().to_owned()).collect();
    let map = head.headers.into_map();
    assert_eq!(map.get("user-agent").unwrap(), "test");
    // Cookies stay separate entries (RFC 9113 §8.2.3 allows splitting them).
    let cookies: Vec<_> = map.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(map.get("x-obs").unwrap().as_bytes(), "caf\u{e9}".as_bytes());
    // Only regular fields are in the map.
    assert_eq!((map.len(), list.len()), (7, 7));
    assert!(map.keys().all(|k| !k.as_str().starts_with(':')));
    assert_eq!(list.iter().filter(|n| **n == "cookie").count(), 2);
}

#[test]
fn authority_from_host_connect_and_options() {
    let head = request(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/"),
        ("host", "h.example:8080"),
    ])
    .unwrap();
    assert_eq!(head.target.to_uri(), "http://h.example:8080/");
    let head = request(&get_with(&[("host", "EXAMPLE.com")])).unwrap();
    assert_eq!(head.target.to_uri().host(), Some("example.com"));
    let head = request(&[(":method", "CONNECT"), (":authority", "proxy.example:443")]).unwrap();
    assert_eq!(head.method, http::Method::CONNECT);
    assert_eq!(head.target.to_uri().authority().unwrap(), "proxy.example:443");
    assert_eq!(
        (head.target.to_uri().scheme(), head.target.to_uri().path_and_query()),
        (None, None)
    );
    let head = request(&[
        (":method", "OPTIONS"),
        (":scheme", "https"),
        (":authority", "a.example"),
        (":path", "*"),
    ])
    .unwrap();
    assert_eq!(head.target.to_uri().path(), "*");
}

#[test]
fn missing_pseudo_headers() {
    assert_malformed(&GET[1..], "missing :method");
    assert_malformed(&[GET[0], GET[2], GET[3]], "missing :scheme");
    assert_malformed(&GET[..3], "missing :path");
    assert_malformed(&[GET[0], GET[1], GET[3]], "no :authority and no host");
}

#[test]
fn bad_paths() {
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "")], "empty :path");
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "*")], ":path * outside OPTIONS");
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "a/b")], ":path is not an absolute path");
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "/a b")], "invalid :path");
    // A fragment is in neither the path nor the query grammar (as in a request line).
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "/a#b")], "invalid :path");
    assert_malformed(&[GET[0], GET[1], GET[2], (":path", "/a?q#b")], "invalid :path");
}

/// The target's parts as the pseudo-headers gave them, the `Uri` built only when asked for;
/// a path with bytes `Uri` would re-encode is one already.
#[test]
fn the_target_keeps_its_parts_and_builds_a_uri_on_demand() {
    let head = request(&get_with(&[])).unwrap();
    let target = &head.target;
    assert_eq!(target.scheme().map(|s| s.as_str()), Some("https"));
    assert_eq!(target.authority().map(|a| a.as_str()), Some("example.com"));
    let path = target.path().unwrap();
    assert_eq!((path.path(), path.query()), ("/a", Some("b=c")));
    assert!(path.as_uri().is_none(), "kept as bytes");
    assert_eq!(target.to_string(), "https://example.com/a?b=c");
    assert_eq!(target.to_uri(), "https://example.com/a?b=c");

    let odd = [GET[0], GET[1], GET[2], (":path", "/a{b}")];
    let head = request(&odd).unwrap();
    assert_eq!(head.target.to_uri(), "https://example.com/a{b}");
    assert_eq!(head.target.to_string(), head.target.to_uri().to_string());

    let head = request(&[(":method", "CONNECT"), (":authority", "proxy.example:443")]).unwrap();
    assert_eq!((head.target.scheme(), head.target.path().is_none()), (None, true));
    assert_eq!(head.target.to_string(), "proxy.example:443");
    assert_eq!(head.target.to_uri().authority().unwrap(), "proxy.example:443");
}

#[test]
fn duplicate_unknown_and_misplaced_pseudo_headers() {
    assert_malformed(&get_with(&[(":path", "/again")]), "duplicate pseudo-header");
    assert_malformed(&[GET[0], GET[0], GET[1], GET[2], GET[3]], "duplicate pseudo-header");
    assert_malformed(&get_with(&[(":foo", "x")]), "unknown pseudo-header");
    // Where extended CONNECT (RFC 8441) is not enabled, `:protocol` is refused.
    assert_malformed(&EXTENDED_CONNECT, ":protocol without extended CONNECT");
    assert_malformed(&get_with(&[(":status", "200")]), "response pseudo-header in a request");
    assert_malformed(
        &[GET[0], GET[1], ("accept", "*/*"), GET[2], GET[3]],
        "pseudo-header after a regular field",
    );
}

/// A WebSocket over HTTP/2 (RFC 8441 §5).
const EXTENDED_CONNECT: [(&str, &str); 5] = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "https"),
    (":authority", "a.example"),
    (":path", "/chat?room=1"),
];

fn extended(fields: &[(&str, &str)]) -> Result<Box<RequestHead>, HeaderError> {
    let mut d = decoder();
    d.allow_extended_connect();
    d.decode_request(&block(fields))
}

#[test]
fn extended_connect_where_enabled() {
    let head = extended(&get_with_version(&EXTENDED_CONNECT)).unwrap();
    assert_eq!(head.method, http::Method::CONNECT);
    assert_eq!(head.protocol.as_deref(), Some(&b"websocket"[..]));
    assert_eq!(head.target.to_uri(), "https://a.example/chat?room=1");
    assert_eq!(head.headers.clone().into_map().get("sec-websocket-version").unwrap(), "13");
    // Plain CONNECT is unchanged.
    let head = extended(&[(":method", "CONNECT"), (":authority", "p.example:443")]).unwrap();
    assert_eq!(head.protocol, None);
    // §4: an extended CONNECT has :scheme, :path and :authority; :protocol is for CONNECT.
    for missing in [":scheme", ":path"] {
        let fields: Vec<_> = EXTENDED_CONNECT.into_iter().filter(|(n, _)| *n != missing).collect();
        let got = extended(&fields).unwrap_err();
        assert!(matches!(got, HeaderError::Malformed(_)), "without {missing}: {got:?}");
    }
    let fields: Vec<_> = EXTENDED_CONNECT.into_iter().filter(|(n, _)| *n != ":authority").collect();
    assert!(extended(&fields).is_err(), "without :authority or host");
    let mut get = EXTENDED_CONNECT;
    get[0] = (":method", "GET");
    assert_eq!(extended(&get).unwrap_err(), HeaderError::Malformed(":protocol outside CONNECT"));
    let mut twice = EXTENDED_CONNECT.to_vec();
    twice.insert(1, (":protocol", "websocket"));
    assert_eq!(extended(&twice).unwrap_err(), HeaderError::Malformed("duplicate pseudo-header"));
}

fn get_with_version<'a>(fields: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = fields.to_vec();
    v.push(("sec-websocket-version", "13"));
    v
}

#[test]
fn bad_field_names() {
    assert_malformed(&get_with(&[("User-Agent", "x")]), "uppercase field name");
    for name in ["bad name", "x(y", "a:b", "nul\0", "caf\u{e9}", "a\"b"] {
        assert_malformed(&get_with(&[(name, "x")]), "invalid character in field name");
    }
    assert_malformed(&get_with(&[("", "x")]), "empty field name");
}

#[test]
fn bad_field_values() {
    for value in ["a\0b", "a\rb", "a\nb", "\x7f"] {
        assert_malformed(&get_with(&[("x-v", value)]), "invalid character in field value");
    }
    for value in [" a", "a ", "\ta", "a\t"] {
        assert_malformed(
            &get_with(&[("x-v", value)]),
            "field value starts or ends with whitespace",
        );
    }
    // Inner whitespace and the empty value are fine.
    assert!(request(&get_with(&[("x-v", "a b\tc"), ("x-e", "")])).is_ok());
}

#[test]
fn connection_specific_fields() {
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
        assert_malformed(&get_with(&[(name, "x")]), "connection-specific field");
    }
    assert_malformed(&get_with(&[("te", "gzip")]), "te other than trailers");
    assert_malformed(&get_with(&[("te", "trailers, gzip")]), "te other than trailers");
}

#[test]
fn content_length() {
    for value in ["abc", "-1", "+1", "1,1", "1 ", "", "99999999999999999999"] {
        let want = if value.ends_with(' ') {
            "field value starts or ends with whitespace"
        } else {
            "invalid content-length"
        };
        assert_malformed(&get_with(&[("content-length", value)]), want);
    }
    assert_malformed(
        &get_with(&[("content-length", "5"), ("content-length", "6")]),
        "conflicting content-length values",
    );
}

#[test]
fn connect_rules() {
    let connect = (":method", "CONNECT");
    let authority = (":authority", "a.example:443");
    assert_malformed(&[connect, (":scheme", "https"), authority], "CONNECT with :scheme or :path");
    assert_malformed(&[connect, authority, (":path", "/")], "CONNECT with :scheme or :path");
    assert_malformed(&[connect], "CONNECT without :authority");
    assert_malformed(&[connect, ("host", "a.example:443")], "CONNECT without :authority");
}

#[test]
fn host_and_authority() {
    assert_malformed(&get_with(&[("host", "other.example")]), "host differs from :authority");
    assert_malformed(
        &[GET[0], GET[1], (":authority", "user@example.com"), GET[3]],
        "userinfo in :authority",
    );
    assert_malformed(&[GET[0], GET[1], (":authority", ""), GET[3]], "invalid :authority");
}

#[test]
fn trailers() {
    let mut dec = decoder();
    let map = dec.decode_trailers(&block(&[("grpc-status", "0"), ("x-sum", "abc")])).unwrap();
    assert_eq!(map.get("grpc-status").unwrap(), "0");
    assert_eq!(map.len(), 2);
    let malformed =
        |fields: &[(&str, &str)]| decoder().decode_trailers(&block(fields)).unwrap_err();
    assert_eq!(malformed(&[(":path", "/")]), HeaderError::Malformed("pseudo-header in trailers"));
    assert_eq!(
        malformed(&[("x-a", "1"), (":method", "GET")]),
        HeaderError::Malformed("pseudo-header in trailers")
    );
    assert_eq!(malformed(&[(":foo", "1")]), HeaderError::Malformed("unknown pseudo-header"));
    assert_eq!(
        malformed(&[("connection", "close")]),
        HeaderError::Malformed("connection-specific field")
    );
    assert_eq!(malformed(&[("X-A", "1")]), HeaderError::Malformed("uppercase field name"));
}

#[test]
fn a_malformed_block_keeps_the_table_in_step() {
    let mut enc = OtherEncoder::new();
    let mut dec = decoder();
    let bad = block_from(&mut enc, &get_with(&[("x-token", "abc"), ("connection", "close")]));
    assert_eq!(
        dec.decode_request(&bad).unwrap_err(),
        HeaderError::Malformed("connection-specific field")
    );
    // The next block refers to `x-token: abc` by its dynamic index: 63, behind
    // `connection: close`, which the malformed block also added.
    let good = block_from(&mut enc, &get_with(&[("x-token", "abc")]));
    assert_eq!(good.last(), Some(&0xbf), "{good:02x?}");
    let head = dec.decode_request(&good).unwrap();
    assert_eq!(head.headers.clone().into_map().get("x-token").unwrap(), "abc");
}

/// A GET block (pseudo-headers by static index, `:authority` a literal without indexing)
/// ending with `field`: the first time a literal with incremental indexing (RFC 7541
/// §6.2.1), then by its dynamic index (62, §6.1), as a browser sends a field it repeats.
fn get_indexing(field: (&str, &str), first: bool) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84, 0x01, 11];
    b.extend_from_slice(b"example.com");
    if first {
        b.push(0x40);
        for s in [field.0, field.1] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
    } else {
        b.push(0x80 | 62);
    }
    b
}

#[test]
fn an_indexed_field_is_judged_the_same_at_every_use() {
    // The decoder checks a regular field once, when its table entry is made; each later
    // use by index must come out as the first did, accepted or refused.
    let cases = [
        (("x-v", " a"), Some("field value starts or ends with whitespace")),
        (("x-v", "\x7f"), Some("invalid character in field value")),
        (("connection", "close"), Some("connection-specific field")),
        (("te", "gzip"), Some("te other than trailers")),
        (("te", "trailers"), None),
        (("user-agent", "curl/8.0"), None),
    ];
    for (field, why) in cases {
        let mut dec = decoder();
        for round in 0..3 {
            match (dec.decode_request(&get_indexing(field, round == 0)), why) {
                (Err(HeaderError::Malformed(got)), Some(why)) => assert_eq!(got, why),
                (Ok(head), None) => {
                    assert_eq!(head.headers.clone().into_map()[field.0], field.1, "{field:?}")
                }
                (other, _) => panic!("{field:?}, round {round}: {other:?}"),
            }
        }
    }
    // The static table's own values are checked too: `accept-encoding: gzip, deflate` (16).
    let mut b = get_indexing(("x", "y"), false);
    *b.last_mut().unwrap() = 0x80 | 16;
    let head = decoder().decode_request(&b).unwrap();
    assert_eq!(head.headers.clone().into_map()["accept-encoding"], "gzip, deflate");
}

#[test]
fn too_large_keeps_the_table_in_step() {
    let mut enc = OtherEncoder::new();
    // The pseudo-headers of GET count 182; each big field 187 or 188: the second passes 400
    // but not 800, so the block is decoded to its end.
    let mut dec = HeaderDecoder::new(4096, 400, 100);
    let big = "b".repeat(150);
    let fields = get_with(&[("x-big", &big), ("x-more", &big)]);
    let err = dec.decode_request(&block_from(&mut enc, &fields)).unwrap_err();
    assert_eq!(err, HeaderError::TooLarge);
    let limit = dec.last_limit().unwrap();
    assert_eq!(
        (limit.limit, limit.max, limit.observed),
        (Limit::MaxRequestHeadersTotalSize, 400, 557)
    );
    // Within the limit again, using the entries the oversized block inserted.
    let head = dec.decode_request(&block_from(&mut enc, &get_with(&[("x-more", &big)]))).unwrap();
    assert_eq!(head.headers.clone().into_map().get("x-more").unwrap().len(), 150);
    assert_eq!(dec.last_limit(), None);

    // The field count: regular fields only.
    let mut dec = HeaderDecoder::new(4096, 32 * 1024, 2);
    assert!(dec.decode_request(&block(&get_with(&[("a", "1"), ("b", "2")]))).is_ok());
    let err = dec.decode_request(&block(&get_with(&[("a", "1"), ("b", "2"), ("c", "3")])));
    assert_eq!(err.unwrap_err(), HeaderError::TooLarge);
    let limit = dec.last_limit().unwrap();
    assert_eq!((limit.limit, limit.max, limit.observed), (Limit::MaxRequestHeaderCount, 2, 3));
}

#[test]
fn flood_and_compression_errors_are_sticky() {
    // Twice the limit: a field that is four times the list limit on its own.
    let mut dec = HeaderDecoder::new(4096, 100, 100);
    let huge = "h".repeat(400);
    assert_eq!(
        dec.decode_request(&block(&get_with(&[("x-h", &huge)]))).unwrap_err(),
        HeaderError::Flood
    );
    assert_eq!(dec.last_limit().unwrap().limit, Limit::MaxRequestHeadersTotalSize);
    assert_eq!(dec.decode_request(&block(&GET)).unwrap_err(), HeaderError::Flood);

    let mut dec = decoder();
    // A size update to 4097, above our SETTINGS_HEADER_TABLE_SIZE of 4096.
    let err = dec.decode_request(&[0x3f, 0xe2, 0x1f]).unwrap_err();
    assert_eq!(err, HeaderError::Compression("dynamic table size update above our limit"));
    assert_eq!(dec.decode_trailers(&block(&[("x", "1")])).unwrap_err(), err);
}

#[test]
fn errors_map_to_connection_or_stream() {
    let id = StreamId::new(5);
    let e = HeaderError::Compression("x").to_error(id);
    assert_eq!(e, Error::Connection(Reason::COMPRESSION_ERROR, "x"));
    assert!(HeaderError::Flood.to_error(id).is_connection_error());
    assert_eq!(HeaderError::Flood.reason(), Reason::COMPRESSION_ERROR);
    assert_eq!(
        HeaderError::Malformed("y").to_error(id),
        Error::Stream(id, Reason::PROTOCOL_ERROR, "y")
    );
    let e = HeaderError::TooLarge.to_error(id);
    assert_eq!((e.stream_id(), e.reason()), (Some(id), Reason::REFUSED_STREAM));
}

#[test]
fn repeated_authority_and_path_parse_to_the_same_target_and_a_bad_one_is_still_refused() {
    let mut dec = HeaderDecoder::new(4096, 1 << 20, 100);
    let block = |authority: &str, path: &str| {
        let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
        for (index, value) in [(1u8, authority), (4, path)] {
            b.push(index); // literal without indexing, static name
            b.push(value.len() as u8);
            b.extend_from_slice(value.as_bytes());
        }
        b
    };
    for (authority, path) in [
        ("a.example", "/x?q=1"),
        ("a.example", "/x?q=1"),
        ("b.example:8080", "/y"),
        ("a.example", "/x?q=1"),
    ] {
        let head = dec.decode_request(&block(authority, path)).unwrap();
        assert_eq!(head.target.to_uri().authority().unwrap().as_str(), authority);
        assert_eq!(head.target.to_uri().path_and_query().unwrap().as_str(), path);
    }
    assert!(dec.decode_request(&block("user@a.example", "/x?q=1")).is_err());
    assert!(dec.decode_request(&block("a.example", "/x y")).is_err());
    let head = dec.decode_request(&block("a.example", "/x?q=1")).unwrap();
    assert_eq!(head.target.to_uri().to_string(), "http://a.example/x?q=1");
}
