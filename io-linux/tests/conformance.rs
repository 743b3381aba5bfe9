//! Runs the shared driver conformance suite (`driver-conformance/suite.rs`) against both Linux
//! backends: io_uring (skipped, with a note, where the kernel refuses it) and epoll.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use peregrine_io_linux as driver;
use peregrine_io_linux::{Driver, DriverConfig, DriverKind, IoChoice};

#[path = "../../driver-conformance/suite.rs"]
mod suite;

type Owned = OwnedFd;
type Raw = RawFd;

fn raw<T: AsRawFd>(socket: &T) -> Raw {
    socket.as_raw_fd()
}

fn drivers() -> Vec<Driver> {
    let mut out = Vec::new();
    match Driver::new(&DriverConfig { io: IoChoice::Uring, ..DriverConfig::default() }) {
        Ok(d) => {
            assert_eq!(d.kind(), DriverKind::Uring);
            out.push(d)
        }
        Err(e) => eprintln!("skipping io_uring backend: {e}"),
    }
    out.push(
        Driver::new(&DriverConfig { io: IoChoice::Epoll, ..DriverConfig::default() }).unwrap(),
    );
    out
}

/// Which backends send at once (`try_send`), beyond the suite's shared rule that a backend
/// may: epoll does whenever the socket has room, io_uring never does (its sends are batched).
#[test]
fn epoll_sends_at_once_and_io_uring_declines() {
    use std::io::Read;
    for mut d in drivers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let mut buf = driver::SendBuf::new();
        buf.push(bytes::Bytes::from_static(b"hello"));
        let sent = d.try_send(raw(&server), &buf);
        match d.kind() {
            DriverKind::Epoll => {
                assert_eq!(sent.map(|r| r.unwrap()), Some(5));
                let mut got = [0u8; 5];
                client.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"hello");
            }
            DriverKind::Uring => assert!(sent.is_none()),
        }
    }
}
