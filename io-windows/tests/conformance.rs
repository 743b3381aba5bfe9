//! Runs the shared driver conformance suite (`driver-conformance/suite.rs`) against the IOCP
//! driver. In CI this runs under Wine (see `.ci/wine-env.sh`).
#![cfg(windows)]

use std::os::windows::io::{AsRawSocket, OwnedSocket, RawSocket};

use peregrine_io_windows as driver;
use peregrine_io_windows::{Driver, DriverConfig, DriverKind};

#[path = "../../driver-conformance/suite.rs"]
mod suite;

type Owned = OwnedSocket;
type Raw = RawSocket;

fn raw<T: AsRawSocket>(socket: &T) -> Raw {
    socket.as_raw_socket()
}

fn drivers() -> Vec<Driver> {
    let d = Driver::new(&DriverConfig::default()).unwrap();
    assert_eq!(d.kind(), DriverKind::Iocp);
    vec![d]
}
