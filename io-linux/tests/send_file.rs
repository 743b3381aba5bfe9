//! The Linux driver's file-to-socket send (io_uring: splices through a pipe for a cold file,
//! `sendfile` for a cached one): the bytes a client reads are the file's, a send reports
//! what went, a region past the file's end reports zero, and epoll declines (its callers
//! read the file instead).

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

/// Whether every page of `file` is in the page cache (`cachestat(2)`, number 451 on every
/// architecture); `None` where the kernel cannot tell.
fn all_cached(file: &std::fs::File, len: u64) -> Option<bool> {
    #[repr(C)]
    struct Range(u64, u64);
    let range = Range(0, len.div_ceil(4096) * 4096);
    let mut stat = [0u64; 5];
    // SAFETY: cachestat reads the range and writes five u64s into `stat`; flags must be 0.
    let ret = unsafe { libc::syscall(451, file.as_raw_fd(), &range, stat.as_mut_ptr(), 0u32) };
    (ret == 0).then(|| stat[0] >= len.div_ceil(4096))
}

/// Drops `file`'s pages from the page cache (written back first, so they can go).
fn evict(file: &std::fs::File) {
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise only advises the kernel about a descriptor we hold open.
    let ret = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(ret, 0, "posix_fadvise failed");
}

/// Sends `file`'s `start..start + len` to `socket` in as many sends as it takes.
fn send_region(d: &mut Driver, socket: &TcpStream, file: &std::fs::File, start: usize, len: usize) {
    let mut sent = 0;
    while sent < len {
        let op =
            d.send_file(socket.as_raw_fd(), file.as_raw_fd(), (start + sent) as u64, len - sent, 7);
        op.expect("io_uring sends files").unwrap();
        let n = file_sent(d).unwrap();
        assert!(n > 0 && n <= len - sent, "sent {n}");
        sent += n;
    }
}

/// Both ways io_uring sends a file: a region whose pages are not in the page cache goes
/// through a pipe (splices, in io_uring's workers, which may wait on the disk); one whose
/// pages all are goes by `sendfile` on the reactor once the socket has room.
#[test]
fn io_uring_sends_a_file_to_a_socket_cold_and_cached() {
    let Some(mut d) = driver(IoChoice::Uring) else {
        eprintln!("skipping: io_uring unavailable here");
        return;
    };
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Under the build directory, on a disk: a tmpfs file is always "cached".
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-splice-{}", std::process::id()));
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
    let (start, len) = (1_000, 2_500_000usize);
    // Cold: the splice path.
    evict(&file);
    let cold = all_cached(&file, content.len() as u64);
    assert_ne!(cold, Some(true), "the file's pages are still cached after eviction");
    send_region(&mut d, &server, &file, start, len);
    // Now cached (the splices read it in): the sendfile path, where the kernel can tell.
    if cold.is_some() {
        let _ = std::fs::read(&path).unwrap();
        assert_eq!(all_cached(&file, content.len() as u64), Some(true));
    }
    send_region(&mut d, &server, &file, start, len);
    // A region running past the file's end: what there is (on the splice path the linked
    // drain's link breaks on the short fill, and the bytes are drained on their own).
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
    assert_eq!(got.len(), 2 * len + tail);
    for (i, sent) in got[..2 * len].chunks(len).enumerate() {
        assert!(sent == &content[start..start + len], "send {i}: other bytes than the file's");
    }
    assert!(got[2 * len..] == content[content.len() - tail..], "the file's tail differs");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn epoll_declines_to_send_files() {
    let mut d = driver(IoChoice::Epoll).unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(d.send_file(l.as_raw_fd(), file.as_raw_fd(), 0, 10, 1).is_none());
}
