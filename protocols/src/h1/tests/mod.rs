//! Tests of the h1 codec.
//!
//! The habit taken from hyper: every input is decoded whole, split in two at every byte
//! boundary, and fed one byte at a time, and all of these must give the same events, the same
//! error and the same leftover bytes. [`run`] does that; every decoder test goes through it.

mod body;
mod request;
mod response;

use bytes::BytesMut;
use http::{HeaderMap, Method, Version};

use super::{parse_request, BodyDecoder, BodyError, BodyEvent, BodyFraming, ParseConfig};
use super::{ParseError, RequestHead};

/// Kestrel's defaults, as in `peregrine_limits::Limits::default()`.
pub(super) const CFG: ParseConfig = ParseConfig {
    max_request_line_size: 8 * 1024,
    max_request_headers_total_size: 32 * 1024,
    max_request_header_count: 100,
};

/// A comparable copy of a [`RequestHead`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) uri: String,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// Header lines in order, as (name, value).
    pub(super) lines: Vec<(String, Vec<u8>)>,
    pub(super) framing: BodyFraming,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    pub(super) upgrade: bool,
}

impl From<&RequestHead> for Head {
    fn from(h: &RequestHead) -> Self {
        Head {
            method: h.method.clone(),
            uri: h.uri.to_string(),
            version: h.version,
            headers: h.headers.clone(),
            lines: h
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            framing: h.framing,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            upgrade: h.upgrade,
        }
    }
}

/// What a connection saw, in order. Body data is gathered per message, so how it was split
/// into `Data` events (which depends on how bytes arrived) does not matter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ev {
    Head(Head),
    /// A complete body (possibly empty).
    Body(Vec<u8>),
    HeadError(ParseError),
    /// The body data decoded before the error, and the error.
    BodyError(Vec<u8>, BodyError),
}

/// Everything observable after feeding an input.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    pub(super) events: Vec<Ev>,
    /// Body bytes of a message still in progress.
    pub(super) pending_body: Vec<u8>,
    /// Bytes left in the receive buffer.
    pub(super) leftover: Vec<u8>,
}

enum State {
    Head,
    Body(BodyDecoder),
    Failed,
}

/// A connection loop in miniature: the way `core` drives the codec.
pub(super) struct Conn {
    cfg: ParseConfig,
    max_body: Option<u64>,
    max_trailer: usize,
    buf: BytesMut,
    state: State,
    events: Vec<Ev>,
    body: Vec<u8>,
}

impl Conn {
    /// Starts by reading a request head.
    pub(super) fn new(cfg: ParseConfig) -> Conn {
        Conn {
            cfg,
            max_body: None,
            max_trailer: cfg.max_request_headers_total_size,
            buf: BytesMut::new(),
            state: State::Head,
            events: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Starts inside a body with the given framing; what follows is parsed as requests.
    pub(super) fn body(framing: BodyFraming, max_body: Option<u64>, max_trailer: usize) -> Conn {
        Conn {
            max_body,
            max_trailer,
            state: State::Body(BodyDecoder::new(framing, max_body, max_trailer)),
            ..Conn::new(CFG)
        }
    }

    pub(super) fn with_max_body(mut self, max_body: Option<u64>) -> Conn {
        self.max_body = max_body;
        self
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            match &mut self.state {
                State::Failed => return,
                State::Head => {
                    let before = self.buf.clone();
                    match parse_request(&mut self.buf, &self.cfg) {
                        Ok(None) => {
                            assert_eq!(self.buf, before, "Ok(None) must leave the buffer alone");
                            return;
                        }
                        Ok(Some(head)) => {
                            self.events.push(Ev::Head(Head::from(&head)));
                            let dec =
                                BodyDecoder::new(head.framing, self.max_body, self.max_trailer);
                            self.state = State::Body(dec);
                        }
                        Err(e) => {
                            self.events.push(Ev::HeadError(e));
                            self.state = State::Failed;
                        }
                    }
                }
                State::Body(dec) => match dec.decode(&mut self.buf) {
                    Ok(BodyEvent::Data(data)) => {
                        assert!(!data.is_empty(), "Data is never empty");
                        self.body.extend_from_slice(&data);
                    }
                    Ok(BodyEvent::NeedMore) => {
                        assert!(self.buf.is_empty(), "NeedMore only once the buffer is used up");
                        assert!(!dec.is_done());
                        return;
                    }
                    Ok(BodyEvent::Done) => {
                        assert!(dec.is_done());
                        assert_eq!(dec.decode(&mut self.buf), Ok(BodyEvent::Done), "Done stays");
                        self.events.push(Ev::Body(std::mem::take(&mut self.body)));
                        self.state = State::Head;
                    }
                    Err(e) => {
                        assert_eq!(dec.decode(&mut self.buf), Err(e), "errors are sticky");
                        self.events.push(Ev::BodyError(std::mem::take(&mut self.body), e));
                        self.state = State::Failed;
                    }
                },
            }
        }
    }

    fn finish(self) -> Outcome {
        Outcome { events: self.events, pending_body: self.body, leftover: self.buf.to_vec() }
    }
}

/// Feeds `input` to fresh connections from `conn` whole, split at every byte boundary, and one
/// byte at a time; asserts all agree and returns the outcome. Inputs over 2 KiB are split at
/// every boundary near both ends and at a stride in between, to keep debug-build tests fast.
pub(super) fn run(input: &[u8], conn: impl Fn() -> Conn) -> Outcome {
    let mut c = conn();
    c.feed(input);
    let whole = c.finish();

    let n = input.len();
    let splits: Vec<usize> = if n <= 2048 {
        (0..=n).collect()
    } else {
        (0..=n).filter(|&i| i < 512 || n - i < 512 || i % 31 == 0).collect()
    };
    for at in splits {
        let mut c = conn();
        c.feed(&input[..at]);
        c.feed(&input[at..]);
        assert_eq!(c.finish(), whole, "split at {at} of {:?}", String::from_utf8_lossy(input));
    }

    let mut c = conn();
    for b in input {
        c.feed(std::slice::from_ref(b));
    }
    assert_eq!(c.finish(), whole, "byte at a time: {:?}", String::from_utf8_lossy(input));
    whole
}

/// [`run`] with request heads parsed under `cfg`.
pub(super) fn run_requests(input: &[u8], cfg: ParseConfig) -> Outcome {
    run(input, || Conn::new(cfg))
}

/// Parses a single request (default limits) that must succeed; returns its head.
pub(super) fn head(input: &str) -> Head {
    let out = run_requests(input.as_bytes(), CFG);
    match out.events.first() {
        Some(Ev::Head(h)) => h.clone(),
        other => panic!("expected a head for {input:?}, got {other:?}"),
    }
}

/// Parses a request (default limits) that must fail; returns the error.
pub(super) fn head_error(input: &str) -> ParseError {
    head_error_with(input.as_bytes(), CFG)
}

pub(super) fn head_error_with(input: &[u8], cfg: ParseConfig) -> ParseError {
    let out = run_requests(input, cfg);
    match out.events.as_slice() {
        [Ev::HeadError(e)] => *e,
        other => {
            panic!("expected an error for {:?}, got {other:?}", String::from_utf8_lossy(input))
        }
    }
}
