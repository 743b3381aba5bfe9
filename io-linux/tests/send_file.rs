//! The Linux driver's file-to-socket send (io_uring splice through a pipe): the bytes a
//! client reads are the file's, a send reports at most a pipe's worth, a region past the
//! file's end reports zero, and epoll declines (its callers read the file instead).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use peregrine_io_linux::{Driver, DriverConfig, IoChoice, Outcome};

fn driver(io: IoChoice) -> Option<Driver> {
    Driver::new(&DriverConfig { io, ..DriverConfig::default() }).ok()
}

/// Waits for the one completion of `token` and returns its FileSent result.
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

#[test]
fn io_uring_splices_a_file_to_a_socket() {
    let Some(mut d) = driver(IoChoice::Uring) else {
        eprintln!("skipping: io_uring unavailable here");
        return;
    };
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = std::env::temp_dir().join(format!("peregrine-splice-{}", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
    let file = std::fs::File::open(&path).unwrap();

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let (server, _) = l.accept().unwrap();
    // A region in the middle, sent in as many splices as it takes.
    let (start, len) = (1_000, 2_500_000usize);
    let mut sent = 0;
    while sent < len {
        let op =
            d.send_file(server.as_raw_fd(), file.as_raw_fd(), (start + sent) as u64, len - sent, 7);
        op.expect("io_uring sends files").unwrap();
        let n = file_sent(&mut d).unwrap();
        assert!(n > 0 && n <= len - sent, "sent {n}");
        sent += n;
    }
    // A region running past the file's end: what there is (the linked drain's link breaks
    // on the short fill, and the bytes are drained on their own).
    let tail = 500;
    d.send_file(server.as_raw_fd(), file.as_raw_fd(), (content.len() - tail) as u64, 10_000, 9)
        .unwrap()
        .unwrap();
    assert_eq!(file_sent(&mut d).unwrap(), tail);
    // Past the end of the file: nothing to send.
    d.send_file(server.as_raw_fd(), file.as_raw_fd(), content.len() as u64, 10, 8)
        .unwrap()
        .unwrap();
    assert_eq!(file_sent(&mut d).unwrap(), 0);
    drop(server);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), len + tail);
    assert!(
        got[..len] == content[start..start + len],
        "the client read other bytes than the file's"
    );
    assert!(got[len..] == content[content.len() - tail..], "the file's tail differs");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn epoll_declines_to_send_files() {
    let mut d = driver(IoChoice::Epoll).unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(d.send_file(l.as_raw_fd(), file.as_raw_fd(), 0, 10, 1).is_none());
}
