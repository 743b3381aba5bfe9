//! Everything that calls Windows directly. All of this crate's `unsafe` lives under this
//! module; each block says why it is sound.
//!
//! - [`iocp`]: the per-core driver (one completion port per reactor thread).
//! - [`acceptor`]: the process-wide `AcceptEx` loop that hands connections to the cores.
//! - this file: Winsock start-up, small socket helpers, and the helpers the server uses
//!   (CPU affinity, exclusive address use, console Ctrl+C / Ctrl+Break).

pub(crate) mod acceptor;
pub(crate) mod iocp;
mod process;

pub use process::{contain_child, interrupt_child, supervise_child, ChildJob};

use std::io;
use std::os::windows::io::{AsRawSocket, OwnedSocket, RawSocket};
use std::sync::{Once, OnceLock};

use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{CloseHandle, FALSE, HANDLE, TRUE};
use windows_sys::Win32::Networking::WinSock::{
    bind, ioctlsocket, recv, setsockopt, shutdown, WSADuplicateSocketW, WSAGetLastError, WSAIoctl,
    WSASocketW, WSAStartup, FIONBIO, FROM_PROTOCOL_INFO, INVALID_SOCKET, LPFN_CONNECTEX,
    LPFN_TRANSMITFILE, SD_SEND, SIO_GET_EXTENSION_FUNCTION_POINTER, SOCKADDR, SOCKET, SOCKET_ERROR,
    SOL_SOCKET, SO_EXCLUSIVEADDRUSE, WSADATA, WSAID_CONNECTEX, WSAID_TRANSMITFILE,
    WSAPROTOCOL_INFOW, WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED,
};
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, GetProcessAffinityMask, SetThreadAffinityMask,
};

/// Starts Winsock once per process. std does the same lazily on its first socket call, but
/// the driver may run before std has touched a socket; WSAStartup counts its callers, so
/// both starting it is harmless.
pub(crate) fn wsa_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: WSADATA is plain data WSAStartup fills in; all-zero is a valid initial value.
        let mut data: WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: version 2.2 and a pointer to a live WSADATA.
        let _ = unsafe { WSAStartup(0x0202, &mut data) };
    });
}

/// The calling thread's last Winsock error.
pub(crate) fn last_wsa_error() -> io::Error {
    // SAFETY: reads thread-local error state; no arguments.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

/// Turns a Winsock return value into `io::Result`.
fn cvt(ret: i32) -> io::Result<i32> {
    if ret == SOCKET_ERROR {
        Err(last_wsa_error())
    } else {
        Ok(ret)
    }
}

/// A kernel handle closed on drop (the completion ports).
pub(crate) struct Handle(pub(crate) HANDLE);

// SAFETY: a completion port handle may be used from any thread; that is what
// PostQueuedCompletionStatus from other threads relies on.
unsafe impl Send for Handle {}
// SAFETY: as above; the handle value is only read.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is owned by this value and closed exactly once.
        unsafe { CloseHandle(self.0) };
    }
}

/// Duplicates `socket` for the process `pid` (`WSADuplicateSocketW`): the bytes of the
/// `WSAPROTOCOL_INFOW` that process passes to [`socket_from_duplicate`] to get it (what a
/// binary upgrade hands the new process).
pub fn duplicate_socket(socket: &impl AsRawSocket, pid: u32) -> io::Result<Vec<u8>> {
    wsa_init();
    // SAFETY: WSAPROTOCOL_INFOW is plain data the call fills in; all-zero is a valid start.
    let mut info: WSAPROTOCOL_INFOW = unsafe { std::mem::zeroed() };
    // SAFETY: a socket we hold (borrowed for the call) and a pointer to a live struct.
    cvt(unsafe { WSADuplicateSocketW(socket.as_raw_socket() as SOCKET, pid, &mut info) })?;
    // SAFETY: the struct is plain data of exactly this many bytes, alive for the borrow.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&info as *const WSAPROTOCOL_INFOW).cast::<u8>(),
            std::mem::size_of::<WSAPROTOCOL_INFOW>(),
        )
    };
    Ok(bytes.to_vec())
}

/// The socket another process duplicated for this one with [`duplicate_socket`]; usable
/// with the completion ports (overlapped), and not inherited by processes started later.
pub fn socket_from_duplicate(info: &[u8]) -> io::Result<OwnedSocket> {
    if info.len() != std::mem::size_of::<WSAPROTOCOL_INFOW>() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a WSAPROTOCOL_INFOW"));
    }
    wsa_init();
    // SAFETY: WSAPROTOCOL_INFOW is plain data; every byte pattern is a valid value, and the
    // length was checked, so the copy fills it exactly.
    let info: WSAPROTOCOL_INFOW = unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
    let flags = WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT;
    // SAFETY: FROM_PROTOCOL_INFO takes family, type and protocol from `info`, a live struct.
    let socket = unsafe {
        WSASocketW(FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, &info, 0, flags)
    };
    if socket == INVALID_SOCKET {
        return Err(last_wsa_error());
    }
    // SAFETY: a new socket handle that nothing else owns.
    Ok(unsafe {
        <OwnedSocket as std::os::windows::io::FromRawSocket>::from_raw_socket(socket as RawSocket)
    })
}

/// Puts a socket in non-blocking mode. Overlapped operations are unaffected (they still
/// pend); the plain `recv` after a zero-byte read must not block when the data is gone.
pub(crate) fn set_nonblocking(socket: RawSocket) -> io::Result<()> {
    let mut on: u32 = 1;
    // SAFETY: FIONBIO reads one u32 from a live local.
    cvt(unsafe { ioctlsocket(socket as SOCKET, FIONBIO, &mut on) })?;
    Ok(())
}

/// One non-blocking receive into `buf`; `WouldBlock` when nothing is there.
pub(crate) fn recv_now(socket: RawSocket, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len().min(i32::MAX as usize) as i32;
    // SAFETY: the pointer and length describe `buf`, valid for writes during the call.
    let n = cvt(unsafe { recv(socket as SOCKET, buf.as_mut_ptr(), len, 0) })?;
    Ok(n as usize)
}

/// Sets a socket option whose value is one `i32`/`u32`/`SOCKET`-sized plain value.
pub(crate) fn set_option<T: Copy>(
    socket: RawSocket,
    level: i32,
    name: i32,
    value: T,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, a live plain-data local.
    cvt(unsafe {
        setsockopt(
            socket as SOCKET,
            level,
            name,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as i32,
        )
    })?;
    Ok(())
}

/// Binds a socket about to connect to the unspecified address of `peer`'s family (any
/// interface, an ephemeral port), which `ConnectEx` requires. IPv4 and IPv6 only.
pub(crate) fn bind_unspecified(socket: RawSocket, peer: &socket2::SockAddr) -> io::Result<()> {
    let local: std::net::SocketAddr = match peer.as_socket() {
        Some(std::net::SocketAddr::V4(_)) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        Some(std::net::SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the IOCP driver connects to IPv4 and IPv6 addresses only",
            ))
        }
    };
    let local = socket2::SockAddr::from(local);
    // SAFETY: the pointer and length describe `local`'s storage, live for this call.
    cvt(unsafe { bind(socket as SOCKET, local.as_ptr().cast(), local.len()) })?;
    Ok(())
}

/// An extension function of the base provider, loaded once through `WSAIoctl` (Winsock
/// exports these only that way) into `cache`. Every TCP socket of the base provider shares
/// them.
///
/// # Safety
/// `T` must be the `LPFN_*` type of `guid`'s function: an `Option` of its function pointer
/// (all-zero is `None`, and the pointer WSAIoctl writes is a valid `Some`).
unsafe fn extension<T: Copy>(
    socket: RawSocket,
    guid: windows_sys::core::GUID,
    cache: &'static OnceLock<T>,
) -> io::Result<T> {
    if let Some(&f) = cache.get() {
        return Ok(f);
    }
    let mut f = std::mem::MaybeUninit::<T>::zeroed();
    let mut returned = 0u32;
    // SAFETY: the in and out pointers and sizes describe live locals; no overlapped call.
    cvt(unsafe {
        WSAIoctl(
            socket as SOCKET,
            SIO_GET_EXTENSION_FUNCTION_POINTER,
            (&guid as *const windows_sys::core::GUID).cast(),
            std::mem::size_of_val(&guid) as u32,
            f.as_mut_ptr().cast(),
            std::mem::size_of::<T>() as u32,
            &mut returned,
            std::ptr::null_mut(),
            None,
        )
    })?;
    // SAFETY: per the contract, `T` is an `Option` of a function pointer, for which
    // all-zero (`None`) and what WSAIoctl wrote are both valid values.
    let f = unsafe { f.assume_init() };
    Ok(*cache.get_or_init(|| f))
}

/// The `ConnectEx` extension function.
pub(crate) fn connect_ex(socket: RawSocket) -> io::Result<ConnectEx> {
    static CONNECT_EX: OnceLock<LPFN_CONNECTEX> = OnceLock::new();
    // SAFETY: LPFN_CONNECTEX is the Option of ConnectEx's pointer.
    unsafe { extension(socket, WSAID_CONNECTEX, &CONNECT_EX) }?
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no ConnectEx"))
}

/// The `TransmitFile` extension function.
pub(crate) fn transmit_file(socket: RawSocket) -> io::Result<TransmitFile> {
    static TRANSMIT_FILE: OnceLock<LPFN_TRANSMITFILE> = OnceLock::new();
    // SAFETY: LPFN_TRANSMITFILE is the Option of TransmitFile's pointer.
    unsafe { extension(socket, WSAID_TRANSMITFILE, &TRANSMIT_FILE) }?
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no TransmitFile"))
}

/// Whether `TransmitFile` runs here without a system-wide cap: on server editions it does;
/// client editions (Windows 10 and 11) run at most two at once across the whole system and
/// queue the rest, which would hold every file response behind two slow clients. Asked once.
pub fn transmit_file_unthrottled() -> bool {
    static SERVER: OnceLock<bool> = OnceLock::new();
    *SERVER.get_or_init(|| {
        use windows_sys::Win32::System::SystemInformation::{GetVersionExW, OSVERSIONINFOEXW};
        use windows_sys::Win32::System::SystemServices::VER_NT_WORKSTATION;
        // SAFETY: OSVERSIONINFOEXW is plain data; all-zero is valid.
        let mut info: OSVERSIONINFOEXW = unsafe { std::mem::zeroed() };
        info.dwOSVersionInfoSize = std::mem::size_of::<OSVERSIONINFOEXW>() as u32;
        // SAFETY: a live OSVERSIONINFOEXW whose size field says so (the extended form
        // GetVersionExW accepts in place of OSVERSIONINFOW).
        let ok = unsafe { GetVersionExW((&mut info as *mut OSVERSIONINFOEXW).cast()) };
        ok != FALSE && u32::from(info.wProductType) != VER_NT_WORKSTATION
    })
}

/// The type of `TransmitFile`.
pub(crate) type TransmitFile = unsafe extern "system" fn(
    SOCKET,
    HANDLE,
    u32,
    u32,
    *mut windows_sys::Win32::System::IO::OVERLAPPED,
    *const windows_sys::Win32::Networking::WinSock::TRANSMIT_FILE_BUFFERS,
    u32,
) -> BOOL;

/// The type of `ConnectEx`.
pub(crate) type ConnectEx = unsafe extern "system" fn(
    SOCKET,
    *const SOCKADDR,
    i32,
    *const core::ffi::c_void,
    u32,
    *mut u32,
    *mut windows_sys::Win32::System::IO::OVERLAPPED,
) -> BOOL;

/// Pins the calling thread to one CPU (of the first 64: one processor group).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= usize::BITS as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "cpu index out of range"));
    }
    // SAFETY: GetCurrentThread returns a pseudo-handle that needs no closing; the mask is a
    // plain value.
    let previous = unsafe { SetThreadAffinityMask(GetCurrentThread(), 1usize << cpu) };
    if previous == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on, in order (within its processor group).
pub fn allowed_cpus() -> Vec<usize> {
    let (mut process, mut system) = (0usize, 0usize);
    // SAFETY: a pseudo-handle for this process and two live locals to fill in.
    let ok = unsafe { GetProcessAffinityMask(GetCurrentProcess(), &mut process, &mut system) };
    if ok == FALSE || process == 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..usize::BITS as usize).filter(|c| process & (1 << c) != 0).collect()
}

/// Windows has no per-process limit on open sockets comparable to `RLIMIT_NOFILE` (handles
/// are bounded by memory), so there is nothing to raise: this returns a soft figure from
/// which the server derives its default `max_connections`, as nginx's
/// `worker_connections` is a configured number on Windows too.
pub fn raise_open_files_limit() -> u64 {
    65536
}

/// Shuts down the write side of a socket: the peer sees EOF after the bytes already sent.
/// Used for lingering close, so a client gets an error response before any reset.
pub fn shutdown_write(socket: &OwnedSocket) -> io::Result<()> {
    // SAFETY: shutdown acts only on the socket, which `socket` keeps open.
    cvt(unsafe { shutdown(socket.as_raw_socket() as SOCKET, SD_SEND) })?;
    Ok(())
}

/// Sets `SO_EXCLUSIVEADDRUSE` on a socket before it is bound, so no other socket (of any
/// process, with or without `SO_REUSEADDR`) can bind the same address and steal its
/// connections. The Windows counterpart of Unix's default port protection; Microsoft
/// recommends it for every server socket.
pub fn set_exclusive_address_use(socket: &impl AsRawSocket) -> io::Result<()> {
    wsa_init();
    set_option(socket.as_raw_socket(), SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1i32)
}

/// The function the console control handler calls.
static ON_CTRL: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

unsafe extern "system" fn console_ctrl(kind: u32) -> BOOL {
    match kind {
        CTRL_C_EVENT | CTRL_BREAK_EVENT | CTRL_CLOSE_EVENT => match ON_CTRL.get() {
            Some(f) => {
                f();
                TRUE
            }
            None => FALSE,
        },
        // Logoff and system shutdown reach services, not console programs.
        _ => FALSE,
    }
}

/// Calls `f` (on a thread Windows creates for the purpose) when the console sends Ctrl+C,
/// Ctrl+Break or a close event: the Windows counterpart of SIGINT/SIGTERM. `f` should start
/// a graceful shutdown and return quickly. Can be installed once per process; a second call
/// fails with `AlreadyExists`.
pub fn on_console_ctrl(f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
    ON_CTRL.set(Box::new(f)).map_err(|_| {
        io::Error::new(io::ErrorKind::AlreadyExists, "console control handler already set")
    })?;
    // SAFETY: `console_ctrl` is a valid handler routine for the life of the process.
    if unsafe { SetConsoleCtrlHandler(Some(console_ctrl), TRUE) } == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
