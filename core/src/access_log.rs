//! The access log: one JSON line per request.
//!
//! Each core formats lines into its own buffer and hands full buffers (or, once a second,
//! whatever it has) to one writer thread over a channel, so a slow disk or a blocked stdout
//! pipe never stalls a reactor; the channel is touched once per 32 KiB of log, not per
//! request. Lines from different cores interleave whole, never torn.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
}

/// A core hands over its buffer once it holds this much.
const FLUSH_AT: usize = 32 * 1024;
/// ...or once this long has passed since the last hand-over.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The writer thread.
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(target: &AccessLogTarget) -> io::Result<Writer> {
        let mut out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
                })?)
            }
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread =
            std::thread::Builder::new().name("peregrine-access-log".into()).spawn(move || {
                for chunk in rx {
                    if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                        tracing::warn!("access log write failed; dropping lines");
                    }
                }
            })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    /// A per-core handle.
    pub(crate) fn core(&self) -> CoreLog {
        CoreLog {
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)),
            tx: self.tx.clone().expect("writer running"),
            last: Cell::new(Instant::now()),
        }
    }

    /// Lets go of this writer's own sender (a reload replaced it): its thread ends once the
    /// cores' handles of it (the connections of the old config) are gone.
    pub(crate) fn retire(&mut self) {
        self.tx.take();
    }

    /// Whether its thread has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for every line handed over so far to be written (call after the cores stop).
    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One core's buffer.
pub(crate) struct CoreLog {
    buf: RefCell<Vec<u8>>,
    tx: mpsc::Sender<Vec<u8>>,
    last: Cell<Instant>,
}

/// Notes whether this core's settings write an access log (set with each settings
/// build, at start and on reload).
pub(crate) fn set_enabled(on: bool) {
    crate::percore::with(|p| p.access_log.set(on));
}

/// Attaches the fields `make` gives to a proxied `response` for its log line, when this
/// core writes an access log: an extension allocates a map per request, and the fields cost
/// a shared count and a copied request id, not worth it for nobody.
pub(crate) fn attach_upstream(
    response: &mut http::Response<crate::Body>,
    make: impl FnOnce() -> UpstreamFields,
) {
    if crate::percore::with(|p| p.access_log.get()) {
        response.extensions_mut().insert(make());
    }
}

/// What a proxied request's line adds: which upstream server answered, its status, how long
/// its response head took, and the request id sent with it. The proxy puts it on the
/// response as an extension; the exchange's record takes it from there.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamFields {
    pub(crate) server: std::sync::Arc<str>,
    pub(crate) status: u16,
    pub(crate) head_us: u64,
    /// `None`: a route's header edits removed it.
    pub(crate) request_id: Option<http::HeaderValue>,
}

/// What one line records.
pub(crate) struct Entry<'a> {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) method: &'a http::Method,
    pub(crate) target: &'a str,
    pub(crate) version: http::Version,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) upstream: Option<&'a UpstreamFields>,
    /// The real client, when a trusted proxy named one other than the peer.
    pub(crate) client: Option<std::net::IpAddr>,
}

impl CoreLog {
    pub(crate) fn record(&self, e: &Entry<'_>, now: Instant) {
        let mut line = String::with_capacity(256);
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        let _ = write!(line, "{{\"time\":\"{time}\",\"peer\":");
        match e.peer {
            Some(p) => {
                let _ = write!(line, "\"{p}\"");
            }
            None => line.push_str("null"),
        }
        if let Some(client) = e.client {
            let _ = write!(line, ",\"client\":\"{client}\"");
        }
        line.push_str(",\"method\":");
        json_string(&mut line, e.method.as_str());
        line.push_str(",\"target\":");
        json_string(&mut line, e.target);
        let _ = write!(
            line,
            ",\"protocol\":\"{:?}\",\"status\":{},\"bytes\":{},\"duration_us\":{}",
            e.version,
            e.status,
            e.bytes,
            e.duration.as_micros()
        );
        if let Some(u) = e.upstream {
            line.push_str(",\"upstream\":");
            json_string(&mut line, &u.server);
            let _ = write!(
                line,
                ",\"upstream_status\":{},\"upstream_head_us\":{},\"request_id\":",
                u.status, u.head_us
            );
            match &u.request_id {
                Some(id) => json_string(&mut line, &String::from_utf8_lossy(id.as_bytes())),
                None => line.push_str("null"),
            }
        }
        line.push_str("}\n");
        self.buf.borrow_mut().extend_from_slice(line.as_bytes());
        self.maybe_flush(now);
    }

    /// Hands the buffer over if it is full or old enough.
    pub(crate) fn maybe_flush(&self, now: Instant) {
        let len = self.buf.borrow().len();
        if len >= FLUSH_AT || (len > 0 && now.duration_since(self.last.get()) >= FLUSH_EVERY) {
            self.flush(now);
        }
    }

    /// When an idle core must wake to hand its buffer over, if it holds lines.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        (!self.buf.borrow().is_empty()).then(|| self.last.get() + FLUSH_EVERY)
    }

    pub(crate) fn flush(&self, now: Instant) {
        let chunk =
            std::mem::replace(&mut *self.buf.borrow_mut(), Vec::with_capacity(FLUSH_AT + 1024));
        self.last.set(now);
        if !chunk.is_empty() {
            let _ = self.tx.send(chunk);
        }
    }
}

/// A core's handle of a writer a reload replaced goes when the last connection of the old
/// config does: what it still holds is handed over then.
impl Drop for CoreLog {
    fn drop(&mut self) {
        let chunk = std::mem::take(&mut *self.buf.borrow_mut());
        if !chunk.is_empty() {
            let _ = self.tx.send(chunk);
        }
    }
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\u{1}");
        assert_eq!(s, r#""a\"b\\c\u0001""#);
    }

    #[test]
    fn lines_reach_the_file_as_json() {
        let path =
            std::env::temp_dir().join(format!("peregrine-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut writer = Writer::start(&AccessLogTarget::File(path.clone())).unwrap();
        let log = writer.core();
        log.record(
            &Entry {
                peer: Some("127.0.0.1:5000".parse().unwrap()),
                method: &http::Method::GET,
                target: "/a?b=c",
                version: http::Version::HTTP_11,
                status: 200,
                bytes: 13,
                duration: Duration::from_micros(42),
                upstream: None,
                client: None,
            },
            Instant::now(),
        );
        log.flush(Instant::now());
        drop(log);
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.starts_with("{\"time\":\""), "{text}");
        let rest = r#""peer":"127.0.0.1:5000","method":"GET","target":"/a?b=c","protocol":"HTTP/1.1","status":200,"bytes":13,"duration_us":42}"#;
        assert!(text.ends_with(&format!("{rest}\n")), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
