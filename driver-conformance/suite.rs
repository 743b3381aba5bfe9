//! Driver conformance: the same behaviour from every driver and backend, over real loopback
//! sockets. One source, run by both drivers' test targets (`io-linux/tests/conformance.rs`
//! and `io-windows/tests/conformance.rs`), each of which provides, next to this module:
//!
//! - `driver`: the driver crate (`peregrine_io_linux` or `peregrine_io_windows`);
//! - `drivers()`: one driver per backend to test (io_uring is skipped, with a note, where
//!   the kernel refuses it, as io-uring's own test suite does);
//! - `Owned` / `Raw` and `raw(&socket)`: the OS's socket handle types (`OwnedFd`/`RawFd`,
//!   `OwnedSocket`/`RawSocket`).
//!
//! Each test runs once per backend.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::driver::{is_canceled, Driver, Outcome, SendBuf};
use super::{drivers, raw, Owned, Raw};

/// An owned record of a completion (the received slice copied out).
#[derive(Debug)]
enum Done {
    Accepted(std::io::Result<Owned>, bool),
    Received(std::io::Result<Vec<u8>>),
    Sent(std::io::Result<usize>, SendBuf),
    Closed(std::io::Result<()>),
    Connected(std::io::Result<()>),
    /// Not produced by the shared operations (file sends have their own Linux test).
    FileSent,
}

/// Runs the driver until `n` completions arrived (or 5 s passed).
fn collect(driver: &mut Driver, n: usize) -> Vec<(u64, Done)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < n && Instant::now() < deadline {
        driver
            .wait(Some(Duration::from_millis(50)), &mut |c| {
                let done = match c.outcome {
                    Outcome::Accepted { result, more } => Done::Accepted(result, more),
                    Outcome::Received(r) => Done::Received(r.map(<[u8]>::to_vec)),
                    Outcome::Sent { result, buf } => Done::Sent(result, buf),
                    Outcome::Closed(r) => Done::Closed(r),
                    Outcome::Connected(r) => Done::Connected(r),
                    Outcome::FileSent(_) => Done::FileSent,
                };
                out.push((c.token, done));
            })
            .unwrap();
    }
    assert_eq!(out.len(), n, "{:?}: completions {out:?}", driver.kind());
    out
}

fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// An address where connections are refused for as long as the returned socket lives:
/// bound, never listening. (A port merely freed can be handed at once to another test's
/// listener running in parallel, and a connect meant to fail then succeeds.)
fn refusing() -> (socket2::Socket, socket2::SockAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// Accepts one connection through the driver.
fn accept_one(driver: &mut Driver, l: &TcpListener) -> Owned {
    let op = driver.accept(raw(l), 1);
    let mut got = collect(driver, 1);
    driver.cancel(op);
    // The cancelled multishot accept reports its end once.
    let end = collect(driver, 1);
    assert!(matches!(end[0].1, Done::Accepted(Err(_), false)), "{end:?}");
    match got.pop().unwrap().1 {
        Done::Accepted(Ok(fd), _) => fd,
        other => panic!("{other:?}"),
    }
}

#[test]
fn accepts_receives_and_sends() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let client = thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 9];
            s.read_exact(&mut buf).unwrap();
            buf
        });
        let fd = accept_one(&mut d, &l);
        d.recv(raw(&fd), 2);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (2, Done::Received(Ok(b))) if b == b"ping"), "{got:?}");
        let mut buf = SendBuf::new();
        buf.push(Bytes::from_static(b"pong"));
        buf.push(Bytes::from_static(b", pong"));
        buf.advance(1); // partial-send bookkeeping: only "ong, pong" goes out
        d.send(raw(&fd), buf, 3);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (3, Done::Sent(Ok(9), _))), "{got:?}");
        assert_eq!(&client.join().unwrap(), b"ong, pong");
    }
}

#[test]
fn multishot_accept_keeps_accepting() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let clients: Vec<_> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        d.accept(raw(&l), 7);
        let got = collect(&mut d, 5);
        for (token, done) in got {
            assert_eq!(token, 7);
            assert!(matches!(done, Done::Accepted(Ok(_), true)), "{:?}: {done:?}", d.kind());
        }
        drop(clients);
    }
}

#[test]
fn eof_is_an_empty_receive() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let s = TcpStream::connect(addr).unwrap();
        let fd = accept_one(&mut d, &l);
        drop(s);
        d.recv(raw(&fd), 4);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0].1, Done::Received(Ok(b)) if b.is_empty()), "{got:?}");
    }
}

#[test]
fn the_end_after_a_short_receive_is_still_reported() {
    // A backend may skip asking the kernel after a receive that did not fill its buffer (the
    // socket is empty; new data raises a new edge). The peer's end raises no further edge
    // once reported, so when it came with the data the next receive must still see it.
    for mut d in drivers() {
        for fin_with_data in [true, false] {
            let (l, addr) = listener();
            let mut s = TcpStream::connect(addr).unwrap();
            let fd = accept_one(&mut d, &l);
            // The receive waits on an empty socket first, so the data's arrival is reported.
            d.recv(raw(&fd), 4);
            d.wait(Some(Duration::ZERO), &mut |c| panic!("nothing arrived yet: {c:?}")).unwrap();
            s.write_all(b"last words").unwrap();
            if fin_with_data {
                s.shutdown(std::net::Shutdown::Write).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            let got = collect(&mut d, 1);
            assert!(matches!(&got[0].1, Done::Received(Ok(b)) if b == b"last words"), "{got:?}");
            if !fin_with_data {
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            d.recv(raw(&fd), 5);
            let got = collect(&mut d, 1);
            assert!(
                matches!(&got[0].1, Done::Received(Ok(b)) if b.is_empty()),
                "{:?} (FIN {}): {got:?}",
                d.kind(),
                if fin_with_data { "with the data" } else { "after it" }
            );
        }
    }
}

#[test]
fn cancelled_receive_completes_with_ecanceled() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let _s = TcpStream::connect(addr).unwrap();
        let fd = accept_one(&mut d, &l);
        let op = d.recv(raw(&fd), 5);
        d.wait(Some(Duration::ZERO), &mut |c| panic!("unexpected {c:?}")).unwrap();
        d.cancel(op);
        let got = collect(&mut d, 1);
        match &got[0].1 {
            Done::Received(Err(e)) => assert!(is_canceled(e), "{:?}: {e:?}", d.kind()),
            other => panic!("{:?}: {other:?}", d.kind()),
        }
        assert_eq!(d.in_flight(), 0);
    }
}

#[test]
fn close_completes_and_the_peer_sees_eof() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let mut s = TcpStream::connect(addr).unwrap();
        let fd = accept_one(&mut d, &l);
        d.close(fd, 6);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (6, Done::Closed(Ok(())))), "{got:?}");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    }
}

/// 8 MiB to send to a client that reads only once told to (so the socket buffer fills
/// first, however the threads are scheduled): the accepted socket, the payload queued in
/// 1 MiB chunks, the payload, the signal to start reading (also given by dropping it), and
/// the client, which returns everything it read once the socket closes.
struct SlowReader {
    fd: Owned,
    buf: SendBuf,
    payload: Bytes,
    go: std::sync::mpsc::Sender<()>,
    reader: thread::JoinHandle<Vec<u8>>,
}

fn large_send_to_a_slow_reader(d: &mut Driver) -> SlowReader {
    let (l, addr) = listener();
    let total = 8 * 1024 * 1024;
    let (go, start) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = start.recv();
        let mut data = Vec::new();
        s.read_to_end(&mut data).unwrap();
        data
    });
    let fd = accept_one(d, &l);
    let payload: Bytes = (0..total).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let mut buf = SendBuf::new();
    for piece in payload.chunks(1 << 20) {
        buf.push(payload.slice_ref(piece));
    }
    SlowReader { fd, buf, payload, go, reader }
}

/// Submits a send of `buf` and waits for it; returns `buf` less what was sent.
fn send_once(d: &mut Driver, fd: Raw, buf: SendBuf) -> SendBuf {
    d.send(fd, buf, 8);
    let mut got = collect(d, 1);
    let Done::Sent(Ok(n), mut back) = got.pop().unwrap().1 else { panic!() };
    back.advance(n);
    back
}

#[test]
fn large_sends_complete_partially_and_lose_nothing() {
    for mut d in drivers() {
        let SlowReader { fd, mut buf, payload, go, reader } = large_send_to_a_slow_reader(&mut d);
        let mut sends = 0;
        while !buf.is_empty() {
            buf = send_once(&mut d, raw(&fd), buf);
            let _ = go.send(());
            sends += 1;
        }
        assert!(sends > 1, "{:?}: 8 MiB went out in one send", d.kind());
        drop(fd);
        assert!(reader.join().unwrap() == payload, "{:?}: bytes differ", d.kind());
    }
}

#[test]
fn an_immediate_send_reports_what_it_sent_or_declines() {
    // `try_send` either sends now (epoll), reporting what a send's completion would, or
    // declines (io_uring, IOCP, a full socket) without sending a byte: never `WouldBlock`,
    // never a lost or reordered byte, and a send submitted after it completes normally.
    for mut d in drivers() {
        let SlowReader { fd, mut buf, payload, go, reader } = large_send_to_a_slow_reader(&mut d);
        let (mut immediate, mut declined) = (0, false);
        while !buf.is_empty() {
            match d.try_send(raw(&fd), &buf) {
                Some(result) => {
                    let n = result.unwrap_or_else(|e| panic!("{:?}: {e}", d.kind()));
                    assert!(n > 0, "{:?}: an immediate send of nothing", d.kind());
                    buf.advance(n);
                    immediate += 1;
                }
                None => {
                    declined = true;
                    let _ = go.send(());
                    buf = send_once(&mut d, raw(&fd), buf);
                }
            }
        }
        assert!(
            declined,
            "{:?}: 8 MiB went out in {immediate} immediate sends past a reader that waits",
            d.kind()
        );
        drop(fd);
        assert!(reader.join().unwrap() == payload, "{:?}: bytes differ", d.kind());
    }
}

#[test]
fn a_send_to_a_reset_peer_reports_the_error() {
    // Whether made on the spot or submitted, a send to a peer that reset the connection
    // ends in an error (EPIPE / ECONNRESET), never in a hang or a silent success forever.
    for mut d in drivers() {
        let (l, addr) = listener();
        let s = socket2::Socket::from(TcpStream::connect(addr).unwrap());
        let fd = accept_one(&mut d, &l);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // RST
        thread::sleep(Duration::from_millis(20));
        let mut failed = None;
        for _ in 0..8 {
            let mut buf = SendBuf::new();
            buf.push(Bytes::from_static(b"are you there?"));
            let result = match d.try_send(raw(&fd), &buf) {
                Some(result) => result,
                None => {
                    d.send(raw(&fd), buf, 12);
                    match collect(&mut d, 1).pop().unwrap().1 {
                        Done::Sent(result, _) => result,
                        other => panic!("{other:?}"),
                    }
                }
            };
            if let Err(e) = result {
                failed = Some(e);
                break;
            }
        }
        assert!(failed.is_some(), "{:?}: sends to a reset peer kept succeeding", d.kind());
    }
}

#[test]
fn many_idle_receives_share_a_small_buffer_pool() {
    // 600 receives parked at once with 256 provided buffers: data arriving on all of them
    // must still be delivered (the io_uring backend retries on ENOBUFS).
    for mut d in drivers() {
        let (l, addr) = listener();
        let n = 600;
        // Connect from another thread while the driver accepts: the backlog is only 128.
        let connector =
            thread::spawn(move || (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect());
        d.accept(raw(&l), 0);
        let fds: Vec<Owned> = collect(&mut d, n)
            .into_iter()
            .map(|(_, done)| match done {
                Done::Accepted(Ok(fd), _) => fd,
                other => panic!("{other:?}"),
            })
            .collect();
        let clients: Vec<TcpStream> = connector.join().unwrap();
        let raws: Vec<Raw> = fds.iter().map(raw).collect();
        for (i, fd) in raws.iter().enumerate() {
            d.recv(*fd, 1000 + i as u64);
        }
        d.wait(Some(Duration::ZERO), &mut |c| panic!("idle receive completed: {c:?}")).unwrap();
        for mut c in &clients {
            c.write_all(&[b'x'; 100]).unwrap();
        }
        let got = collect(&mut d, n);
        for (_, done) in got {
            assert!(matches!(done, Done::Received(Ok(ref b)) if b.len() == 100), "{done:?}");
        }
    }
}

#[test]
fn waker_interrupts_an_unbounded_wait() {
    for mut d in drivers() {
        let waker = d.waker();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            waker.wake();
        });
        let start = Instant::now();
        d.wait(None, &mut |c| panic!("unexpected {c:?}")).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}

#[test]
fn wait_times_out_without_completions() {
    // `wait` may return early (a signal, task work from another ring on this thread), so
    // callers re-check their deadlines; what it must never do is hang or invent completions.
    for mut d in drivers() {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            d.wait(Some(Duration::from_millis(50)), &mut |c| panic!("unexpected {c:?}")).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", d.kind());
    }
}

#[test]
fn a_ready_operation_does_not_wait_out_the_timeout() {
    // A send to a socket with room completes at once; `wait` must report it without first
    // blocking for its timeout (the epoll backend attempts it before polling, and no new
    // readiness edge will arrive to end the poll).
    for mut d in drivers() {
        let (l, addr) = listener();
        let _s = TcpStream::connect(addr).unwrap();
        let fd = accept_one(&mut d, &l);
        let send = |d: &mut Driver| {
            let mut buf = SendBuf::new();
            buf.push(Bytes::from_static(b"x"));
            d.send(raw(&fd), buf, 9);
        };
        send(&mut d);
        collect(&mut d, 1);
        // Let every edge from the first send be consumed.
        for _ in 0..3 {
            d.wait(Some(Duration::from_millis(20)), &mut |c| panic!("unexpected {c:?}")).unwrap();
        }
        send(&mut d);
        let start = Instant::now();
        let mut got = 0;
        while got == 0 && start.elapsed() < Duration::from_secs(10) {
            d.wait(Some(Duration::from_secs(3)), &mut |_| got += 1).unwrap();
        }
        assert_eq!(got, 1);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}: {:?}", d.kind(), start.elapsed());
    }
}

/// Receives until `want` bytes arrived (each receive one completion).
fn recv_exactly(d: &mut Driver, fd: Raw, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        d.recv(fd, 11);
        match collect(d, 1).pop().unwrap().1 {
            Done::Received(Ok(b)) if !b.is_empty() => got.extend_from_slice(&b),
            other => panic!("{:?}: {other:?} after {} bytes", d.kind(), got.len()),
        }
    }
    got
}

#[test]
fn data_arriving_between_receives_is_kept_in_order() {
    // With io_uring the socket's multishot receive stays armed between receives: data that
    // arrives meanwhile is held (and past a few buffers the multishot pauses), never lost.
    for mut d in drivers() {
        let (l, addr) = listener();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let fd = accept_one(&mut d, &l);
        s.write_all(b"first").unwrap();
        assert_eq!(recv_exactly(&mut d, raw(&fd), 5), b"first");
        let mut expected = Vec::new();
        for i in 0..12u8 {
            let piece = vec![b'a' + i; 100 + usize::from(i)];
            s.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
            // Separate segments, and let the driver see them while no receive waits.
            thread::sleep(Duration::from_millis(5));
            d.wait(Some(Duration::ZERO), &mut |c| panic!("nothing was asked for: {c:?}")).unwrap();
        }
        assert_eq!(recv_exactly(&mut d, raw(&fd), expected.len()), expected, "{:?}", d.kind());
    }
}

#[test]
fn a_reused_descriptor_gets_only_its_own_data() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let mut first = TcpStream::connect(addr).unwrap();
        let fd = accept_one(&mut d, &l);
        let op = d.recv(raw(&fd), 20);
        d.cancel(op);
        collect(&mut d, 1);
        first.write_all(b"stale").unwrap();
        thread::sleep(Duration::from_millis(20));
        d.close(fd, 21);
        collect(&mut d, 1);
        // The next connection very likely gets the same descriptor number.
        let mut second = TcpStream::connect(addr).unwrap();
        let fd2 = accept_one(&mut d, &l);
        second.write_all(b"fresh").unwrap();
        assert_eq!(recv_exactly(&mut d, raw(&fd2), 5), b"fresh", "{:?}", d.kind());
        drop(first);
    }
}

/// A fresh stream socket for `addr`'s family, as the server makes for an upstream.
fn stream_socket(addr: &socket2::SockAddr) -> socket2::Socket {
    socket2::Socket::new(addr.domain(), socket2::Type::STREAM, None).unwrap()
}

#[test]
fn connects_then_carries_data_both_ways() {
    for mut d in drivers() {
        let (l, addr) = listener();
        let peer = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"hello back").unwrap();
            buf
        });
        let addr = socket2::SockAddr::from(addr);
        let socket = stream_socket(&addr);
        d.connect(raw(&socket), &addr, 4);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (4, Done::Connected(Ok(())))), "{:?}: {got:?}", d.kind());
        let socket = Owned::from(socket);
        let mut buf = SendBuf::new();
        buf.push(Bytes::from_static(b"hello"));
        d.send(raw(&socket), buf, 5);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (5, Done::Sent(Ok(5), _))), "{got:?}");
        assert_eq!(&recv_exactly(&mut d, raw(&socket), 10), b"hello back");
        assert_eq!(&peer.join().unwrap(), b"hello");
    }
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    for mut d in drivers() {
        // A port bound but never listening: nothing accepts there.
        let (_reserved, addr) = refusing();
        let socket = stream_socket(&addr);
        d.connect(raw(&socket), &addr, 6);
        let got = collect(&mut d, 1);
        match &got[0] {
            (6, Done::Connected(Err(e))) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{:?}: {e}", d.kind())
            }
            other => panic!("{:?}: {other:?}", d.kind()),
        }
    }
}

#[cfg(unix)]
#[test]
fn connects_to_a_unix_socket() {
    for mut d in drivers() {
        let dir =
            std::env::temp_dir().join(format!("peregrine-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:?}.sock", d.kind()));
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let addr = socket2::SockAddr::unix(&path).unwrap();
        let socket = stream_socket(&addr);
        d.connect(raw(&socket), &addr, 8);
        let got = collect(&mut d, 1);
        assert!(matches!(&got[0], (8, Done::Connected(Ok(())))), "{:?}: {got:?}", d.kind());
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"over unix").unwrap();
        let socket = Owned::from(socket);
        assert_eq!(&recv_exactly(&mut d, raw(&socket), 9), b"over unix");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn a_socket_reusing_a_failed_connect_s_handle_still_connects() {
    for mut d in drivers() {
        let (l, good) = listener();
        let (_reserved, refused) = refusing();
        let good = socket2::SockAddr::from(good);
        for round in 0..4u64 {
            // Fails, then is closed without the driver (the handle value is free again) ...
            let socket = stream_socket(&refused);
            d.connect(raw(&socket), &refused, 20 + round);
            let got = collect(&mut d, 1);
            assert!(matches!(&got[0], (_, Done::Connected(Err(_)))), "{:?}: {got:?}", d.kind());
            drop(socket);
            // ... and the next socket, likely with that handle value, must still connect.
            let socket = stream_socket(&good);
            d.connect(raw(&socket), &good, 30 + round);
            let got = collect(&mut d, 1);
            assert!(matches!(&got[0], (_, Done::Connected(Ok(())))), "{:?}: {got:?}", d.kind());
            let _ = l.accept().unwrap();
        }
    }
}
