//! What only the Windows driver has to show: how one listener's connections reach several
//! cores' completion ports, and the listener protection the server relies on. In CI this
//! runs under Wine (see `.ci/wine-env.sh`).
#![cfg(windows)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::windows::io::{AsRawSocket, OwnedSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peregrine_io_windows::{
    is_canceled, set_exclusive_address_use, Driver, DriverConfig, Outcome, SendBuf,
};
use socket2::{Domain, Socket, Type};

/// Waits on each driver in turn until `n` accepts arrived in all (or 10 s passed); returns
/// the connections per driver.
fn accept_across(drivers: &mut [Driver], n: usize) -> Vec<Vec<OwnedSocket>> {
    let mut got: Vec<Vec<OwnedSocket>> = drivers.iter().map(|_| Vec::new()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.iter().map(Vec::len).sum::<usize>() < n && Instant::now() < deadline {
        for (d, mine) in drivers.iter_mut().zip(&mut got) {
            d.wait(Some(Duration::from_millis(10)), &mut |c| match c.outcome {
                Outcome::Accepted { result: Ok(s), more: true } => mine.push(s),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        }
    }
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), n, "accepted per driver: {got:?}");
    got
}

#[test]
fn one_listener_feeds_every_core_and_each_serves_its_own() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut drivers: Vec<Driver> =
        (0..2).map(|_| Driver::new(&DriverConfig::default()).unwrap()).collect();
    for d in &mut drivers {
        d.accept(l.as_raw_socket(), 1);
    }
    let mut clients: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let got = accept_across(&mut drivers, 8);
    for (i, mine) in got.iter().enumerate() {
        assert!(!mine.is_empty(), "driver {i} got no connection: {got:?}");
    }
    // Each driver does IO on the sockets it was handed, on its own port: an echo per socket.
    for c in &mut clients {
        c.write_all(b"hi").unwrap();
    }
    for (d, mine) in drivers.iter_mut().zip(&got) {
        for s in mine {
            d.recv(s.as_raw_socket(), 2);
            let mut data = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while data.is_empty() && Instant::now() < deadline {
                d.wait(Some(Duration::from_millis(50)), &mut |c| match c.outcome {
                    Outcome::Received(Ok(b)) => data.extend_from_slice(b),
                    // The previous socket's reply.
                    Outcome::Sent { result: Ok(2), .. } => {}
                    other => panic!("unexpected {other:?}"),
                })
                .unwrap();
            }
            assert_eq!(data, b"hi");
            let mut buf = SendBuf::new();
            buf.push(Bytes::from_static(b"ok"));
            d.send(s.as_raw_socket(), buf, 3);
        }
    }
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = [0u8; 2];
        // The sends complete on the next waits; keep both drivers turning meanwhile.
        for d in &mut drivers {
            d.wait(Some(Duration::ZERO), &mut |_| {}).unwrap();
        }
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"ok");
    }
}

#[test]
fn accepting_again_after_cancel_gets_the_waiting_connection() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut d = Driver::new(&DriverConfig::default()).unwrap();
    let op = d.accept(l.as_raw_socket(), 1);
    d.cancel(op);
    assert!(until_accept_ends(&mut d).is_empty(), "nothing was waiting to be accepted");
    // Connected while nobody accepts: it waits in the backlog, not accepted-and-dropped.
    let mut client = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    d.accept(l.as_raw_socket(), 2);
    let got = accept_across(std::slice::from_mut(&mut d), 1);
    drop(got);
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server side was dropped (closed): the client sees the end of the stream.
    assert!(matches!(client.read(&mut [0u8; 1]), Ok(0) | Err(_)));
}

/// A connection accepted before the cancellation took effect is delivered ahead of the end,
/// as a cancelled io_uring multishot accept delivers it: a server that stops accepting (a
/// graceful shutdown, an upgrade's old process) serves that client rather than reset it.
#[test]
fn a_connection_accepted_before_a_cancel_is_delivered_ahead_of_the_end() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut d = Driver::new(&DriverConfig::default()).unwrap();
    let op = d.accept(l.as_raw_socket(), 1);
    let mut client = TcpStream::connect(addr).unwrap();
    // The accept thread takes it and hands it to the driver, which has not looked yet.
    std::thread::sleep(Duration::from_millis(100));
    d.cancel(op);
    let mut accepted = until_accept_ends(&mut d);
    assert_eq!(accepted.len(), 1, "the connection accepted before the cancel was not delivered");
    let mut served = TcpStream::from(accepted.pop().unwrap());
    served.write_all(b"ok").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = [0u8; 2];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok");
}

/// Waits (up to 5 s) for a cancelled accept's end, which comes once the accept thread has
/// its cancelled `AcceptEx` calls back; returns the connections delivered before it.
fn until_accept_ends(d: &mut Driver) -> Vec<OwnedSocket> {
    let (mut accepted, mut ended) = (Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ended && Instant::now() < deadline {
        d.wait(Some(Duration::from_millis(50)), &mut |c| match c.outcome {
            Outcome::Accepted { result: Ok(s), more: true } => accepted.push(s),
            Outcome::Accepted { result: Err(e), more: false } => ended = is_canceled(&e),
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    }
    assert!(ended, "a cancelled accept did not end");
    accepted
}

#[test]
fn exclusive_address_use_keeps_the_port_from_other_sockets() {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let owner = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    set_exclusive_address_use(&owner).unwrap();
    owner.bind(&addr.into()).unwrap();
    owner.listen(16).unwrap();
    let bound = owner.local_addr().unwrap();
    // SO_REUSEADDR on Windows would let this socket take over the port; exclusive use on the
    // owner forbids it.
    let thief = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    thief.set_reuse_address(true).unwrap();
    assert!(thief.bind(&bound).is_err(), "a second socket bound an exclusively used port");
}

/// Waits for the one `FileSent` completion and returns its result.
fn file_sent(d: &mut Driver) -> std::io::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        d.wait(Some(Duration::from_millis(50)), &mut |c| {
            if let Outcome::FileSent(r) = c.outcome {
                got = Some(r);
            }
        })
        .unwrap();
    }
    got.expect("no completion within 10 s")
}

/// `TransmitFile`: the bytes a client reads are the file's region, a send reports at most
/// 1 MiB, a region running past the end sends what there is, and one at the end sends none.
#[test]
fn transmit_file_sends_a_file_region_to_a_socket() {
    use std::os::windows::io::AsRawHandle;
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = std::env::temp_dir().join(format!("peregrine-transmit-{}", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let mut d = Driver::new(&DriverConfig::default()).unwrap();

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let (server, _) = l.accept().unwrap();
    let socket = server.as_raw_socket();
    let (start, len) = (1_000, 2_500_000usize);
    let mut sent = 0;
    while sent < len {
        let offset = (start + sent) as u64;
        d.send_file(socket, file.as_raw_handle(), offset, len - sent, 7).unwrap().unwrap();
        let n = file_sent(&mut d).unwrap();
        assert!(n > 0 && n <= (len - sent).min(1 << 20), "sent {n}");
        sent += n;
    }
    let tail = 500;
    let offset = (content.len() - tail) as u64;
    d.send_file(socket, file.as_raw_handle(), offset, 10_000, 9).unwrap().unwrap();
    assert_eq!(file_sent(&mut d).unwrap(), tail);
    let end = content.len() as u64;
    d.send_file(socket, file.as_raw_handle(), end, 10, 8).unwrap().unwrap();
    assert_eq!(file_sent(&mut d).unwrap(), 0);
    drop(server);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), len + tail);
    assert!(got[..len] == content[start..start + len], "the client read other bytes");
    assert!(got[len..] == content[content.len() - tail..], "the file's tail differs");
    drop(file);
    let _ = std::fs::remove_file(&path);
}
