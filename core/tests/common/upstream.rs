//! A scripted HTTP/1.1 upstream for the proxy tests: plain blocking sockets, one thread per
//! connection, every request recorded (head text, body, which connection it came on) and
//! answered by the test's closure. It reads request bodies by Content-Length or chunked
//! framing, so a request smuggled through the proxy would show up here as a second request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request line and fields, as received (CRLFs included).
    pub head: String,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Which accepted connection (0, 1, ...) it came on.
    pub conn: usize,
}

impl Seen {
    /// The first value of field `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The request target.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// What the upstream does with one request.
pub enum Reply {
    /// Writes these bytes and waits for the next request on the connection.
    Bytes(Vec<u8>),
    /// Writes these bytes and closes the connection.
    BytesThenClose(Vec<u8>),
    /// Sleeps, then replies.
    After(Duration, Box<Reply>),
    /// Writes these bytes, then holds the connection until the peer closes it; records
    /// when that happened in `closed_by_peer`.
    BytesThenHold(Vec<u8>),
}

/// A `200` whose body is `body`, with `extra` fields (each `name: value\r\n`).
pub fn ok(body: &str, extra: &str) -> Reply {
    Reply::Bytes(
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{body}", body.len())
            .into_bytes(),
    )
}

/// The running upstream. Stops accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// Connections the proxy closed while the upstream held them (`Reply::BytesThenHold`).
    pub closed_by_peer: Arc<AtomicUsize>,
}

impl Upstream {
    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

type Respond = dyn Fn(&Seen) -> Reply + Send + Sync;

/// Starts an upstream on 127.0.0.1 (port 0) answering with `respond`.
pub fn start(respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
    start_on(TcpListener::bind("127.0.0.1:0").unwrap(), respond)
}

/// Starts an upstream on `listener`.
pub fn start_on(
    listener: TcpListener,
    respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Upstream {
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let closed_by_peer = Arc::new(AtomicUsize::new(0));
    let respond: Arc<Respond> = Arc::new(respond);
    let up = Upstream {
        addr,
        seen: Arc::clone(&seen),
        connections: Arc::clone(&connections),
        closed_by_peer: Arc::clone(&closed_by_peer),
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let conn = connections.fetch_add(1, Ordering::SeqCst);
            let (seen, respond, closed) =
                (Arc::clone(&seen), Arc::clone(&respond), Arc::clone(&closed_by_peer));
            std::thread::spawn(move || serve(stream, conn, &seen, &*respond, &closed));
        }
    });
    up
}

fn serve(
    stream: TcpStream,
    conn: usize,
    seen: &Mutex<Vec<Seen>>,
    respond: &Respond,
    closed: &AtomicUsize,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Ok(Some(request)) = read_request(&mut reader, conn) else { return };
        seen.lock().unwrap().push(request.clone());
        let mut reply = respond(&request);
        loop {
            match reply {
                Reply::After(d, next) => {
                    std::thread::sleep(d);
                    reply = *next;
                }
                Reply::Bytes(b) => {
                    if writer.write_all(&b).is_err() {
                        return;
                    }
                    break;
                }
                Reply::BytesThenClose(b) => {
                    let _ = writer.write_all(&b);
                    return;
                }
                Reply::BytesThenHold(b) => {
                    let _ = writer.write_all(&b);
                    let mut sink = [0u8; 1024];
                    loop {
                        match reader.read(&mut sink) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// Reads one request (head and body); `None` at a clean EOF.
fn read_request(r: &mut BufReader<TcpStream>, conn: usize) -> io::Result<Option<Seen>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut seen = Seen { head, body: Vec::new(), conn };
    if seen.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size:?}")))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            seen.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = seen.header("content-length") {
        let n: usize = n.parse().map_err(|_| io::Error::other("bad content-length"))?;
        seen.body = vec![0; n];
        r.read_exact(&mut seen.body)?;
    }
    Ok(Some(seen))
}
