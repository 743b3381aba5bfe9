//! The forwarding rules: what crosses the proxy and what does not (RFC 9110 §7.6, RFC 7239).
//!
//! - Hop-by-hop fields are removed both ways: `Connection` and every field it names,
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`. Framing (`Content-Length`) is the codec's on
//!   each side, and `Expect` is answered by Peregrine itself, so neither is copied.
//! - `X-Forwarded-For` / `-Proto` / `-Host` (and `Forwarded`, when asked for) describe the
//!   client to the upstream. What the client sent of them is believed only when the client
//!   is a trusted proxy; otherwise it is dropped and replaced, so a client cannot spoof its
//!   address to the app (ASP.NET Core's ForwardedHeaders and nginx's realip do the same).
//! - `X-Request-Id` is kept from a trusted proxy, otherwise generated.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::trust::canonical;
pub(crate) use crate::trust::Trusted;

/// `x-forwarded-for`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-request-id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether `name` is one of the fields that describe one hop only, never forwarded
/// (RFC 9110 §7.6.1, plus the `Proxy-Connection` of old clients and `Transfer-Encoding`),
/// by the protocol crate's list (which the response parser checks too).
///
/// `Content-Length` is not among them. A response keeps the upstream's: both server codecs
/// frame a response from its body and skip the map's copy (and compression drops it), so
/// removing it cost a hashed removal on every proxied response for nothing. A request's is
/// removed with the forwarding fields ([`request_fields`]): the upstream codec writes its
/// own, and the caller may re-frame the body.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    peregrine_protocols::names::is_hop_by_hop(name.as_str().as_bytes())
}

/// Removes the hop-by-hop fields from `headers`, and the ones `Connection` names. One pass
/// over the fields finds them (a message usually has none, or only its framing field),
/// with no hashed lookup of `Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut named: Vec<HeaderName> = Vec::new();
    let mut found = false;
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name) {
            continue;
        }
        found = true;
        if name == header::CONNECTION {
            let tokens = value.to_str().into_iter().flat_map(|v| v.split(','));
            named.extend(tokens.filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()));
        }
    }
    if found {
        remove_matching(headers, |name| is_hop_by_hop(name) || named.contains(name));
    }
}

/// The last client address written as an `X-Forwarded-For` value, kept per core and
/// upstream group: a connection's requests repeat their address, so most requests reuse the
/// value (a reference-count bump) instead of writing and copying it again.
#[derive(Debug, Default)]
pub(crate) struct AddressText(RefCell<Option<(IpAddr, HeaderValue)>>);

impl AddressText {
    /// `ip` as a field value.
    fn value(&self, ip: IpAddr) -> HeaderValue {
        let mut last = self.0.borrow_mut();
        if let Some((seen, value)) = last.as_ref() {
            if *seen == ip {
                return value.clone();
            }
        }
        let value = HeaderValue::from_bytes(ip_text(ip, &mut [0; 48]))
            .expect("an address's text is a valid field value");
        *last = Some((ip, value.clone()));
        value
    }
}

/// `ip` as text, in `buf`. An IPv4 address (the usual client) is written digit by digit:
/// `Display` goes through `fmt::write` and costs about a thousand instructions, a few
/// percent of a proxied request. IPv6 keeps `Display` (its zero compression is not worth a
/// second copy).
pub(crate) fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let mut scratch = [0; 20];
                let digits =
                    peregrine_protocols::h1::response::decimal(u64::from(octet), &mut scratch);
                buf[len..len + digits.len()].copy_from_slice(digits);
                len += digits.len();
            }
            len
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
            cursor.position() as usize
        }
    };
    &buf[..len]
}

/// Removes every field whose name `drop` picks. One pass over the names present (a message
/// carries a handful, and usually none of the ones asked for), rather than one hashed
/// lookup per name that might be there.
fn remove_matching(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut more = Vec::new();
    for (n, name) in headers.keys().filter(|&name| drop(name)).enumerate() {
        match found.get_mut(n) {
            Some(slot) => *slot = Some(name.clone()),
            None => more.push(name.clone()),
        }
    }
    for name in found.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` with an
/// `Upgrade` field), if it does.
pub(crate) fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    });
    asks.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// What the proxy knows of the client of one request.
pub(crate) struct Client {
    /// The peer of the connection (the client, or a proxy in front of us).
    pub(crate) peer: Option<SocketAddr>,
    /// Whether the connection to us is TLS.
    pub(crate) tls: bool,
    /// The request's host (`:authority` or `Host`).
    pub(crate) host: Option<HeaderValue>,
}

/// Sets field `name` to a mutual-TLS client's certificate (base64 DER of the leaf, as
/// ASP.NET Core's certificate forwarding reads it). Whatever the client sent under that
/// name is gone already ([`request_fields`]'s `cert_field`): only a certificate the
/// handshake verified crosses.
pub(crate) fn client_certificate(
    headers: &mut HeaderMap,
    name: &http::HeaderName,
    certificates: Option<&crate::ClientCertificates>,
) {
    if let Some(certificates) = certificates {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(certificates.leaf());
        if let Ok(value) = HeaderValue::try_from(encoded) {
            headers.insert(name.clone(), value);
        }
    }
}

/// `forwarded`, as a static the added fields can point at.
static FORWARDED: HeaderName = header::FORWARDED;

/// The forwarding fields one request gains, kept beside its map rather than inserted into
/// it. The map is only read in order from here on (the HTTP/1.1 head is encoded from both),
/// and inserting four custom names hashes each byte by byte: about a thousand instructions
/// a proxied request. Whoever edits the map by name afterwards merges them in first
/// ([`Added::into_map`]).
#[derive(Debug, Default)]
pub(crate) struct Added {
    fields: [Option<(&'static HeaderName, HeaderValue)>; 5],
}

impl Added {
    /// Adds `name: value`, which the map does not hold.
    fn push(&mut self, name: &'static HeaderName, value: HeaderValue) {
        // One slot per forwarding field: each is added at most once.
        let free = self.fields.iter_mut().find(|f| f.is_none());
        *free.expect("a slot for each forwarding field") = Some((name, value));
    }

    /// Whether `name` is among the added fields.
    pub(crate) fn holds(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The value added under `name`.
    pub(crate) fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.iter().find_map(|(added, value)| (added == name).then_some(value))
    }

    /// Takes the value added under `name` out (once the fields are encoded).
    pub(crate) fn take(&mut self, name: &HeaderName) -> Option<HeaderValue> {
        let slot = self.fields.iter_mut().find(|f| f.as_ref().is_some_and(|(n, _)| *n == name))?;
        slot.take().map(|(_, value)| value)
    }

    /// The added fields, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> + Clone {
        self.fields.iter().flatten().map(|(n, v)| (*n, v))
    }

    /// Moves the fields into `headers` (for a map that is edited or encoded on its own).
    pub(crate) fn into_map(self, headers: &mut HeaderMap) {
        for (name, value) in self.fields.into_iter().flatten() {
            headers.insert(name.clone(), value);
        }
    }
}

/// Sets `name` to `value`: in `headers` when it holds the field already (a trusted proxy's,
/// replaced), else in `added`.
fn set(
    headers: &mut HeaderMap,
    added: &mut Added,
    in_map: bool,
    name: &'static HeaderName,
    value: HeaderValue,
) {
    if in_map {
        headers.insert(name, value);
    } else {
        added.push(name, value);
    }
}

/// Rewrites a request's fields for the upstream: hop-by-hop fields out, forwarded fields
/// and a request id in, and `cert_field` (the client certificate's, which only Peregrine may
/// fill) out. Returns the fields to add (see [`Added`]): a new request id is among them, a
/// trusted proxy's stays in `headers`. The id is not returned apart: a copy of a fresh
/// value allocates.
pub(crate) fn request_fields(
    headers: &mut HeaderMap,
    client: &Client,
    trusted: &Trusted,
    forwarded: bool,
    peer_text: &AddressText,
    cert_field: Option<&HeaderName>,
) -> Added {
    remove_hop_by_hop(headers);
    let peer_trusted = client.peer.is_some_and(|p| trusted.contains(p.ip()));
    remove_matching(headers, |name| {
        name == header::EXPECT
            || name == header::CONTENT_LENGTH
            || cert_field == Some(name)
            || (!peer_trusted
                && (name == header::FORWARDED
                    || [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_REQUEST_ID]
                        .contains(&name)))
    });
    // From an untrusted peer the forwarding fields were removed above: no lookups.
    let kept = |headers: &HeaderMap, name: &HeaderName| {
        peer_trusted.then(|| headers.get(name)).flatten().cloned()
    };
    let has = |headers: &HeaderMap, name: &HeaderName| peer_trusted && headers.contains_key(name);
    let mut added = Added::default();
    let proto = HeaderValue::from_static(if client.tls { "https" } else { "http" });
    if let Some(peer) = client.peer {
        let ip = canonical(peer.ip());
        // Appended to what a trusted proxy said: `client, proxy1, proxy2` (each hop adds
        // the address it saw). The usual case, no field yet, is the address alone, written
        // on the stack.
        let before = kept(headers, &X_FORWARDED_FOR);
        let xff = match before.as_ref().and_then(|v| v.to_str().ok()) {
            Some(before) if !before.trim().is_empty() => {
                HeaderValue::from_str(&format!("{before}, {ip}")).ok()
            }
            _ => Some(peer_text.value(ip)),
        };
        if let Some(v) = xff {
            set(headers, &mut added, before.is_some(), &X_FORWARDED_FOR, v);
        }
        if forwarded {
            let node = match peer.ip() {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => format!("\"[{v6}]\""),
                _ => ip.to_string(),
            };
            let mut element = format!("for={node};proto={}", proto.to_str().unwrap_or("http"));
            if let Some(host) = client.host.as_ref().and_then(|h| h.to_str().ok()) {
                element.push_str(&format!(";host=\"{host}\""));
            }
            let before = kept(headers, &FORWARDED);
            let value = match before.as_ref().and_then(|v| v.to_str().ok()) {
                Some(before) if !before.trim().is_empty() => format!("{before}, {element}"),
                _ => element,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                set(headers, &mut added, before.is_some(), &FORWARDED, v);
            }
        }
    }
    // A trusted proxy's own protocol, host and request id stand.
    if !has(headers, &X_FORWARDED_PROTO) {
        added.push(&X_FORWARDED_PROTO, proto);
    }
    if let Some(host) = &client.host {
        if !has(headers, &X_FORWARDED_HOST) {
            added.push(&X_FORWARDED_HOST, host.clone());
        }
    }
    if !has(headers, &X_REQUEST_ID) {
        added.push(&X_REQUEST_ID, new_request_id());
    }
    added
}

thread_local! {
    /// This thread's request id prefix (random per process, mixed with the thread) and
    /// counter.
    static NEXT_ID: Cell<(u64, u32)> = Cell::new((thread_prefix(), 0));
}

/// 64 random-looking bits for this process and thread: a per-process random key (std's
/// `RandomState`) hashing the thread's id.
fn thread_prefix() -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEY.get_or_init(Default::default).hash_one(std::thread::current().id())
}

/// A request id unique to this process run: 16 hex digits of the thread's prefix, then 8 of
/// its counter. Not a secret, just unique; written without formatting machinery (it is made
/// for every proxied request that arrives without one).
fn new_request_id() -> HeaderValue {
    let (prefix, n) = NEXT_ID.with(|c| {
        let (prefix, n) = c.get();
        c.set((prefix, n.wrapping_add(1)));
        (prefix, n)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 24];
    for (i, digit) in id[..16].iter_mut().enumerate() {
        *digit = HEX[((prefix >> (60 - 4 * i)) & 0xf) as usize];
    }
    for (i, digit) in id[16..].iter_mut().enumerate() {
        *digit = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes() {
        for ip in
            ["0.0.0.0", "255.255.255.255", "10.0.12.3", "192.168.100.9", "::1", "2001:db8::1:0:0:1"]
        {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut [0; 48]), ip.to_string().as_bytes());
        }
        // The longest IPv6 text fits.
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(ip_text(long, &mut [0; 48]), long.to_string().as_bytes());
    }

    #[test]
    fn every_hop_by_hop_field_is_removed_and_others_stay() {
        let mut headers = HeaderMap::new();
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "x-named",
            "accept",
            "x-keep",
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x-named"));
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-keep"], "`connection: x-named` names x-named");
    }

    fn trusted(nets: &[&str]) -> Trusted {
        Trusted::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn client(peer: &str) -> Client {
        Client {
            peer: Some(peer.parse().unwrap()),
            tls: false,
            host: Some(HeaderValue::from_static("example.com")),
        }
    }

    /// The request id a rewritten request carries: a new one among `added`, or a trusted
    /// proxy's kept in `headers`.
    fn request_id<'a>(headers: &'a HeaderMap, added: &'a Added) -> Option<&'a HeaderValue> {
        added.get(&X_REQUEST_ID).or_else(|| headers.get(&X_REQUEST_ID))
    }

    /// `request_fields` for a request from an untrusted peer, 10.0.0.7.
    fn from_untrusted(h: &mut HeaderMap) -> Added {
        let peer = client("10.0.0.7:5000");
        request_fields(h, &peer, &Trusted::default(), false, &AddressText::default(), None)
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn the_remembered_address_text_follows_the_client() {
        let texts = AddressText::default();
        for peer in ["10.0.0.7:5000", "10.0.0.7:5001", "192.168.1.20:80", "10.0.0.7:5000"] {
            let mut h = HeaderMap::new();
            let added =
                request_fields(&mut h, &client(peer), &Trusted::default(), false, &texts, None);
            added.into_map(&mut h);
            let ip = peer.rsplit_once(':').unwrap().0;
            assert_eq!(h[&X_FORWARDED_FOR], ip);
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_forwarded_fields() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("spoofed"));
        let added = from_untrusted(&mut h);
        let id = request_id(&h, &added).cloned().expect("a new request id");
        // The client's fields are gone from the map; the proxy's own are beside it.
        assert_eq!(h.len(), 0, "{h:?}");
        added.into_map(&mut h);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_ne!(id, "spoofed");
        assert_eq!(h[&X_REQUEST_ID], id);
    }

    #[test]
    fn a_trusted_peer_s_fields_are_kept_and_appended_to() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        let t = trusted(&["10.0.0.0/8"]);
        let added = request_fields(
            &mut h,
            &client("10.0.0.7:5000"),
            &t,
            true,
            &AddressText::default(),
            None,
        );
        let id = request_id(&h, &added).cloned().expect("the trusted proxy's id");
        // Replaced where it stood; nothing added twice.
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.7");
        assert!(added.iter().all(|(name, _)| !h.contains_key(name)), "{added:?}");
        added.into_map(&mut h);
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(id, "abc");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.7;proto=http;host=\"example.com\"");
    }

    #[test]
    fn a_request_s_framing_fields_go_and_a_response_s_length_stays() {
        // The upstream codec frames the request from its body; a response's length is left
        // for the server codecs, which frame from the body and skip the map's copy.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        from_untrusted(&mut h);
        assert!(
            !h.contains_key(header::CONTENT_LENGTH) && !h.contains_key(header::TRANSFER_ENCODING)
        );
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::CONTENT_LENGTH], "12");
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(new_request_id(), new_request_id());
    }
}
