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
