//! The container image and its friends (`deploy/`). Containers cannot run on these machines
//! (crun fails on setrlimit), but podman builds images. So:
//!
//! - the static (musl) binary the image ships is checked to be static;
//! - podman builds the image (`deploy/build-local-image.sh`: the Dockerfile's final stage
//!   from the static binary), its config is inspected against the Dockerfile, and its
//!   exported file system is run in an empty root under `chroot` as its user;
//! - the Dockerfile's final stage is also laid out by hand as an empty root directory (its
//!   `COPY`s, `ENV`, `USER`, `ENTRYPOINT`, `HEALTHCHECK`) and run the same way;
//! - `seccomp-run` (deploy/seccomp-run) stands in for the container runtime's seccomp
//!   profile: blocking io_uring as the default profiles do, and enforcing the shipped
//!   `deploy/seccomp/peregrine-io-uring.json`;
//! - `strace` lists the syscalls Peregrine makes, which the profile must all allow;
//! - the Kubernetes and systemd files are checked against the image and the config.
//!
//! Artifacts are built by `./test.sh` before `cargo test`: the musl binary (`cargo build
//! --target x86_64-unknown-linux-musl -p peregrine`) and `seccomp-run` (`cargo build -p
//! peregrine-seccomp-run`). A test whose artifact or tool is missing prints a note and passes,
//! unless `PEREGRINE_CONTAINER_TESTS=require` (set by test.sh), when it fails.
//!
//! Every server binds 127.0.0.1 port 0, every wait is bounded, and children are killed when
//! their guard drops.
// Linux only: static musl builds, chroot, seccomp and strace.
#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use peregrine::config::Config;

#[path = "support/process.rs"]
mod process;
use process::{Proc, WAIT};

/// How long a server may take to start, or to stop after SIGTERM.
/// How long the admin listener's line may take after the main one.
const ADMIN_WAIT: Duration = Duration::from_secs(5);
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The user and group the image runs as (`USER` in deploy/Dockerfile).
const IMAGE_USER: &str = "65532:65532";

// ---- locating things ------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("core/ has a parent").to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `target/<profile>/`, where cargo put this test's `peregrine` (and `seccomp-run`, built by
/// the same profile).
fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_peregrine")).parent().expect("bin dir").to_path_buf()
}

/// `target/`, honouring CARGO_TARGET_DIR as cargo did.
fn target_dir() -> PathBuf {
    profile_dir().parent().expect("target dir").to_path_buf()
}

fn required() -> bool {
    std::env::var("PEREGRINE_CONTAINER_TESTS").is_ok_and(|v| v == "require")
}

/// `Some(())` to go on; `None` (with a note) to skip when something is missing, or a panic
/// when test.sh said everything must be there.
fn need(present: bool, what: &str, how: &str) -> Option<()> {
    if present {
        return Some(());
    }
    assert!(!required(), "{what} is missing (PEREGRINE_CONTAINER_TESTS=require): {how}");
    println!("note: {what} is missing; skipping ({how}, or run ./test.sh)");
    None
}

/// The static binary the image ships, built for the musl target (debug profile in CI).
fn musl_peregrine() -> Option<PathBuf> {
    let profile = profile_dir();
    let profile = profile.file_name().expect("profile name").to_str().expect("utf-8");
    let path = target_dir().join(MUSL_TARGET).join(profile).join("peregrine");
    let how = format!("build it with `cargo build --target {MUSL_TARGET} -p peregrine`");
    need(path.is_file(), &path.display().to_string(), &how)?;
    Some(path)
}

/// The seccomp launcher. Integration tests see only their own package's binaries through
/// CARGO_BIN_EXE_*, so it is looked for beside them.
fn seccomp_run() -> Option<PathBuf> {
    let path = profile_dir().join("seccomp-run");
    let how = "build it with `cargo build -p peregrine-seccomp-run`";
    need(path.is_file(), &path.display().to_string(), how)?;
    Some(path)
}

/// A program on PATH or in the sbin directories (chroot lives in /usr/sbin).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// [`tool`], or a skip (or, when required, a failure) when it is missing.
fn need_tool(name: &str, how: &str) -> Option<PathBuf> {
    let found = tool(name);
    need(found.is_some(), name, how)?;
    found
}

fn is_root() -> bool {
    let status = read_proc("/proc/self/status");
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Sends `request` (raw bytes; the server must close after it) and reads the response:
/// (status line, body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).expect("send request");
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read response (the server must close)");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// `GET path` with `Connection: close`: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn assert_plaintext(addr: SocketAddr) {
    let (status, body) = get(addr, "/plaintext");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "Hello, World!"));
}

/// The `driver=` of the start-up log line, text or JSON format.
fn driver(log: &str) -> Option<&'static str> {
    let line = log.lines().find(|l| l.contains("started"))?;
    if line.contains("driver=io_uring") || line.contains(r#""driver":"io_uring""#) {
        Some("io_uring")
    } else if line.contains("driver=epoll") || line.contains(r#""driver":"epoll""#) {
        Some("epoll")
    } else {
        None
    }
}

/// A plain `peregrine` (debug, this test's) with the test flags, and the log env.
fn peregrine(binary: &Path) -> Command {
    let mut c = Command::new(binary);
    c.args(["--listen", "127.0.0.1:0", "--threads", "1", "--no-pin"]);
    quiet_env(&mut c);
    c
}

/// Info-level uncoloured logs, and none of the developer's PEREGRINE_* settings.
fn quiet_env(c: &mut Command) -> &mut Command {
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("PEREGRINE_CONFIG")
        .env_remove("PEREGRINE_ADMIN")
        .env_remove("PEREGRINE_IO")
}

/// Whether io_uring can be set up on this machine at all (outside any filter of ours):
/// Peregrine's own probe, as its `--io auto` start-up log reports it.
fn host_has_io_uring() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let mut p = Proc::spawn(&mut peregrine(Path::new(env!("CARGO_BIN_EXE_peregrine"))));
        p.listening();
        let log = p.wait_stderr("started");
        driver(&log) == Some("io_uring")
    })
}

// ---- the static binary ----------------------------------------------------------------

/// Checks that an ELF file needs no dynamic loader: no `PT_INTERP` program header, and no
/// `DT_NEEDED` library in its dynamic section. (A static-pie binary, which Rust's musl
/// target makes, has a dynamic section for relocating itself, but needs nothing.)
fn check_static_elf(elf: &[u8]) -> Result<(), String> {
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |at: usize| elf.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let truncated = || "truncated ELF header".to_string();
    let phoff = u64_at(0x20).ok_or_else(truncated)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(truncated)? as usize;
    let phnum = u16_at(0x38).ok_or_else(truncated)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = u32_at(ph).ok_or_else(truncated)?;
        if kind == PT_INTERP {
            return Err("has a PT_INTERP header: it needs a dynamic loader".into());
        }
        if kind == PT_DYNAMIC {
            let offset = u64_at(ph + 8).ok_or_else(truncated)? as usize;
            let size = u64_at(ph + 32).ok_or_else(truncated)? as usize;
            for entry in (offset..offset + size).step_by(16) {
                match u64_at(entry).ok_or_else(truncated)? {
                    DT_NULL => break,
                    DT_NEEDED => return Err("needs a shared library (DT_NEEDED)".into()),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[test]
fn elf_check_tells_static_from_dynamic() {
    // This test's own peregrine is linked against glibc dynamically.
    let dynamic = std::fs::read(env!("CARGO_BIN_EXE_peregrine")).expect("read test binary");
    assert!(check_static_elf(&dynamic).is_err(), "the glibc build passed as static");
    assert!(check_static_elf(b"#!/bin/sh\n").is_err());
}

#[test]
fn musl_binary_is_static() {
    let Some(binary) = musl_peregrine() else { return };
    let elf = std::fs::read(&binary).expect("read the musl binary");
    if let Err(e) = check_static_elf(&elf) {
        panic!("{}: {e}; the image (FROM scratch) has no libc to load", binary.display());
    }
}

// ---- the Dockerfile -------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// deploy/Dockerfile's stages, each a list of instructions starting with its `FROM`.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read("deploy/Dockerfile");
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        // Comment lines are dropped, also inside a continued instruction (as Docker does).
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let whole = std::mem::take(&mut logical);
        let whole = whole.trim();
        if whole.is_empty() {
            continue;
        }
        let (keyword, args) = whole.split_once(char::is_whitespace).unwrap_or((whole, ""));
        let instruction =
            Instruction { keyword: keyword.to_ascii_uppercase(), args: args.trim().to_string() };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("instruction before FROM").push(instruction);
    }
    stages
}

/// A JSON array of strings (the exec form of ENTRYPOINT, CMD, HEALTHCHECK).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args.trim()).unwrap_or_else(|e| panic!("not the exec form {args:?}: {e}"))
}

/// What the image's final stage says, as far as running it goes.
#[derive(Debug, Default)]
struct Image {
    base: String,
    /// (source, destination): `from` is the build stage or `None` for the build context.
    copies: Vec<(Option<String>, String, String)>,
    env: BTreeMap<String, String>,
    user: String,
    exposed: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

fn final_image() -> Image {
    let stages = dockerfile_stages();
    let last = stages.last().expect("a FROM");
    let mut image = Image::default();
    for i in last {
        match i.keyword.as_str() {
            "FROM" => image.base = i.args.clone(),
            "COPY" => {
                let mut from = None;
                let mut paths = Vec::new();
                for word in i.args.split_whitespace() {
                    if let Some(stage) = word.strip_prefix("--from=") {
                        from = Some(stage.to_string());
                    } else if word.starts_with("--") {
                        panic!("COPY option {word} is not understood by this test: {i:?}");
                    } else {
                        paths.push(word.to_string());
                    }
                }
                assert_eq!(paths.len(), 2, "COPY of one source to one destination: {i:?}");
                image.copies.push((from, paths[0].clone(), paths[1].clone()));
            }
            "ENV" => {
                for pair in i.args.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair}"));
                    image.env.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
            "USER" => image.user = i.args.clone(),
            "EXPOSE" => image.exposed = i.args.split_whitespace().map(str::to_string).collect(),
            "ENTRYPOINT" => image.entrypoint = exec_form(&i.args),
            "CMD" => image.cmd = exec_form(&i.args),
            "HEALTHCHECK" => {
                let (_, command) = i.args.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
                image.healthcheck = exec_form(command);
            }
            "STOPSIGNAL" => assert_eq!(i.args, "SIGTERM", "Peregrine drains on SIGTERM"),
            "LABEL" | "ARG" | "WORKDIR" => {}
            other => panic!("{other} in the final stage: teach this test what it does"),
        }
    }
    image
}

#[test]
fn dockerfile_builds_static_and_runs_non_root_on_scratch() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let builder: Vec<_> = stages[0].iter().map(|i| format!("{} {}", i.keyword, i.args)).collect();
    let builder = builder.join("\n");
    assert!(
        stages[0][0].args.starts_with("rust:"),
        "an official Rust image: {}",
        stages[0][0].args
    );
    for needle in [
        "rustup target add x86_64-unknown-linux-musl",
        "musl-tools",
        "cargo build --release --locked --target x86_64-unknown-linux-musl -p peregrine",
    ] {
        assert!(builder.contains(needle), "the builder stage lacks {needle:?}:\n{builder}");
    }

    let image = final_image();
    assert_eq!(image.base, "scratch");
    assert_eq!(image.user, IMAGE_USER, "a numeric non-root user (scratch has no /etc/passwd)");
    assert_eq!(image.exposed, ["8080", "9090"]);
    assert_eq!(
        image.env.get("PEREGRINE_CONFIG").map(String::as_str),
        Some("/etc/peregrine/peregrine.toml")
    );
    assert_eq!(image.env.get("PEREGRINE_ADMIN").map(String::as_str), Some("0.0.0.0:9090"));
    assert_eq!(image.env.get("PEREGRINE_LOG_FORMAT").map(String::as_str), Some("json"));
    let config = &image.env["PEREGRINE_CONFIG"];
    assert!(
        image.copies.iter().any(|(from, src, dst)| from.is_none()
            && src == "deploy/container.toml"
            && dst == config),
        "deploy/container.toml must be copied to PEREGRINE_CONFIG ({config}): {:?}",
        image.copies
    );
    assert_eq!(image.entrypoint.len(), 1, "ENTRYPOINT is the binary alone: {:?}", image.entrypoint);
    assert!(image.cmd.is_empty(), "flags come from the environment, not CMD");

    // The config the image ships is valid, and listens where EXPOSE says.
    let shipped = Config::load(&repo().join("deploy/container.toml")).expect("container.toml");
    let addrs = shipped.listen_addrs().expect("container.toml listeners");
    assert_eq!(addrs, ["0.0.0.0:8080".parse::<SocketAddr>().unwrap()]);
}

/// An empty root directory holding the final stage's files, removed when dropped.
struct ImageRoot(PathBuf);

impl ImageRoot {
    /// A new empty directory.
    fn empty() -> ImageRoot {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("peregrine-image-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        mkdir(&root);
        ImageRoot(root)
    }

    /// Lays out `image`'s COPYs: the builder's `peregrine` is the musl binary; its
    /// `busybox` is this machine's if that is static too (else it is left out, and so is
    /// the health check); the rest come from the repository.
    fn build(image: &Image, musl: &Path) -> (ImageRoot, bool) {
        let root = ImageRoot::empty();
        let mut has_busybox = false;
        for (from, src, dst) in &image.copies {
            let source = match from.as_deref() {
                None => repo().join(src),
                Some(_) if src.ends_with("/peregrine") => musl.to_path_buf(),
                Some(_) if src.ends_with("/busybox") => {
                    let host = Path::new("/bin/busybox");
                    let static_ok =
                        std::fs::read(host).is_ok_and(|elf| check_static_elf(&elf).is_ok());
                    if !static_ok {
                        println!("note: no static /bin/busybox here (busybox-static); the HEALTHCHECK is not run");
                        continue;
                    }
                    has_busybox = true;
                    host.to_path_buf()
                }
                Some(stage) => panic!("COPY --from={stage} {src}: teach this test what that is"),
            };
            let dest = root.0.join(dst.trim_start_matches('/'));
            let mut dir = root.0.clone();
            for part in Path::new(dst.trim_start_matches('/')).parent().unwrap().components() {
                dir.push(part);
                mkdir(&dir);
            }
            std::fs::copy(&source, &dest)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", source.display(), dest.display()));
            // As Docker copies them: owned by root, mode kept (executables 0755, files 0644).
            let mode = std::fs::metadata(&source).unwrap().permissions().mode() & 0o777;
            let mode = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        (root, has_busybox)
    }

    /// `chroot --userspec=USER ROOT argv...`, with exactly `env` as the environment.
    fn command(&self, user: &str, argv: &[String], env: &BTreeMap<String, String>) -> Command {
        let chroot = tool("chroot").expect("chroot (coreutils)");
        let mut c = Command::new(chroot);
        c.env_clear().envs(env).arg(format!("--userspec={user}")).arg(&self.0).args(argv);
        c
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkdir(dir: &Path) {
    if !dir.is_dir() {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    // Whatever the umask, the image's user must be able to look in.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The ids in /proc/PID/status: (uid, gid, supplementary groups).
fn ids(pid: u32) -> (String, String, String) {
    let status = read_proc(&format!("/proc/{pid}/status"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// The image, run as the Dockerfile says, in an empty root holding only its files: static
/// binary, config, user, environment, health check, graceful stop. Only the listeners move
/// to 127.0.0.1 port 0 (flags override the image's config and PEREGRINE_ADMIN).
#[test]
fn image_runs_in_an_empty_root_as_its_user() {
    let Some(musl) = musl_peregrine() else { return };
    if !is_root() {
        println!("note: not root, so no chroot or user switch; skipping the image run");
        return;
    }
    let Some(_) = need_tool("chroot", "install coreutils") else { return };
    let image = final_image();
    let (root, has_busybox) = ImageRoot::build(&image, &musl);
    serve_from_root(&root, &image, has_busybox);
}

/// Runs `image`'s entry point in `root` as its user and checks what the image promises:
/// serving, the user, the JSON log, the admin listener, the health check (when `root` has
/// busybox) and the graceful stop.
fn serve_from_root(root: &ImageRoot, image: &Image, has_busybox: bool) {
    let mut argv = image.entrypoint.clone();
    argv.extend(
        ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--threads", "1"].map(String::from),
    );
    let mut p = Proc::spawn(&mut root.command(&image.user, &argv, &image.env));
    let addr = p.listening();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_plaintext(addr);

    // chroot execs the binary: the child is Peregrine, running as the image's user.
    let pid = p.child.id();
    let (uid, gid, groups) = ids(pid);
    assert_eq!(uid, "65532 65532 65532 65532", "real, effective, saved, fs uid");
    assert_eq!(gid, "65532 65532 65532 65532");
    assert!(groups.is_empty() || groups == "65532", "supplementary groups: {groups:?}");
    // PEREGRINE_LOG_FORMAT=json took effect.
    let log = p.wait_stderr("started");
    let started = log.lines().find(|l| l.contains("started")).unwrap();
    assert!(started.starts_with('{'), "not a JSON log line: {started}");

    let admin = p.line_starting("admin listening on http://", ADMIN_WAIT).unwrap_or_else(|| {
        panic!(
            "no `admin listening on http://ADDR` line within {ADMIN_WAIT:?} of the main \
             listener: is --admin implemented? stderr: {}",
            p.stderr()
        )
    });
    let admin: SocketAddr =
        admin["admin listening on http://".len()..].parse().expect("admin addr");
    assert_eq!(get(admin, "/healthz").0, "HTTP/1.1 200 OK", "/healthz");
    assert_eq!(get(admin, "/readyz").0, "HTTP/1.1 200 OK", "/readyz before shutdown");

    if has_busybox {
        // The HEALTHCHECK command, in the same root as the same user, aimed at this admin
        // port instead of 9090.
        let argv: Vec<String> = image
            .healthcheck
            .iter()
            .map(|a| a.replace("127.0.0.1:9090", &admin.to_string()))
            .collect();
        assert!(argv.iter().any(|a| a.contains("/healthz")), "{:?}", image.healthcheck);
        let mut check = Proc::spawn(&mut root.command(&image.user, &argv, &BTreeMap::new()));
        let status = check.exit_within(WAIT).expect("HEALTHCHECK command did not finish");
        assert!(status.success(), "HEALTHCHECK {argv:?}: {status}; {}", check.final_stderr());
        let out = check.stdout.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        assert_eq!(out, "ok", "HEALTHCHECK output");
    }

    let status = p.sigterm(pid);
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; stderr: {}", p.final_stderr());
}

// ---- the image, built by podman -------------------------------------------------------------

/// podman with storage of its own in `dir` (vfs: no overlay mounts needed), so a test run
/// neither sees nor leaves images in the machine's store.
fn podman(binary: &Path, dir: &Path) -> Command {
    let mut c = Command::new(binary);
    c.args(podman_args(dir));
    c
}

fn podman_args(dir: &Path) -> Vec<String> {
    vec![
        "--storage-driver=vfs".into(),
        "--root".into(),
        dir.join("root").display().to_string(),
        "--runroot".into(),
        dir.join("run").display().to_string(),
    ]
}

/// Runs `c`, failing with its output unless it succeeds; returns its stdout.
fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman builds the image from the static binary (`deploy/build-local-image.sh`); its
/// config is what the Dockerfile says, and its exported file system serves in an empty root
/// as its user, health check included.
#[test]
fn podman_builds_the_image_and_it_serves_from_its_own_files() {
    let Some(musl) = musl_peregrine() else { return };
    let Some(podman_bin) = need_tool("podman", "apt-get install podman") else { return };
    if !is_root() {
        println!("note: not root, so no chroot; skipping the image build");
        return;
    }
    let Some(_) = need_tool("chroot", "install coreutils") else { return };
    let busybox_static =
        std::fs::read("/bin/busybox").is_ok_and(|elf| check_static_elf(&elf).is_ok());
    let Some(()) = need(busybox_static, "a static /bin/busybox", "apt-get install busybox-static")
    else {
        return;
    };
    let store = ImageRoot::empty();
    let tag = format!("localhost/peregrine-test:{}", std::process::id());
    run_ok(
        Command::new(repo().join("deploy/build-local-image.sh"))
            .arg(&musl)
            .arg(&tag)
            .env("PODMAN", &podman_bin)
            .env("PODMAN_ARGS", podman_args(&store.0).join(" ")),
    );

    // The image's config, against the Dockerfile's final stage.
    let image = final_image();
    let inspect = run_ok(podman(&podman_bin, &store.0).args(["image", "inspect", &tag]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], IMAGE_USER, "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(image.entrypoint), "{config}");
    let ports: BTreeSet<&str> = config["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .map(|k| k.as_str())
        .collect();
    let want: BTreeSet<String> = image.exposed.iter().map(|p| format!("{p}/tcp")).collect();
    assert_eq!(ports, want.iter().map(String::as_str).collect(), "{config}");
    let env: Vec<&str> =
        config["Env"].as_array().expect("Env").iter().filter_map(|v| v.as_str()).collect();
    for (k, v) in &image.env {
        assert!(env.contains(&format!("{k}={v}").as_str()), "{k}={v} not in {env:?}");
    }
    let mut health = vec!["CMD".to_string()];
    health.extend(image.healthcheck.iter().cloned());
    // podman shows the health check beside the config (Docker's format carries it).
    let check = &inspect[0]["Healthcheck"];
    assert_eq!(check["Test"], serde_json::json!(health), "{check}");
    assert_eq!(check["Retries"], 3, "{check}");
    assert_eq!(config["StopSignal"], "SIGTERM", "{config}");
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "peregrine", "{config}");

    // Its file system, exported, is exactly the final stage's files; and it serves.
    let id = run_ok(podman(&podman_bin, &store.0).args(["create", &tag])).trim().to_string();
    let tar = store.0.join("rootfs.tar");
    run_ok(podman(&podman_bin, &store.0).args(["export", "-o"]).arg(&tar).arg(&id));
    let _ = podman(&podman_bin, &store.0).args(["rm", &id]).output();
    let root = ImageRoot::empty();
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&root.0));
    for (_, _, dst) in &image.copies {
        let file = root.0.join(dst.trim_start_matches('/'));
        assert!(file.is_file(), "{dst} is not in the image");
    }
    let elf = std::fs::read(root.0.join("usr/local/bin/peregrine")).expect("the binary");
    check_static_elf(&elf).expect("the image's binary is static");
    serve_from_root(&root, &image, true);
    let _ = podman(&podman_bin, &store.0).args(["rmi", "-f", &tag]).output();
}

// ---- seccomp ---------------------------------------------------------------------------

/// Under a filter that refuses io_uring with EPERM, as Docker's and containerd's default
/// profiles do, `--io auto` runs on epoll, says why, and serves.
#[test]
fn io_uring_blocked_by_seccomp_falls_back_to_epoll() {
    let Some(launcher) = seccomp_run() else { return };
    let mut command = Command::new(&launcher);
    command.arg("--").arg(env!("CARGO_BIN_EXE_peregrine")).args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--no-pin",
    ]);
    quiet_env(&mut command);
    let mut p = Proc::spawn(&mut command);
    let addr = p.listening();
    let log = p.wait_stderr("started");
    assert_eq!(driver(&log), Some("epoll"), "start-up log: {log}");
    let started = log.lines().find(|l| l.contains("started")).unwrap();
    assert!(started.contains("io_uring unavailable"), "the reason is logged: {started}");
    assert!(started.contains("EPERM"), "the reason names EPERM: {started}");
    assert_plaintext(addr);
    let status = p.sigterm(p.child.id());
    assert_eq!(status.code(), Some(0), "{}", p.final_stderr());
}

/// The same start without the launcher runs on io_uring here (where io_uring exists).
#[test]
fn io_uring_runs_without_the_launcher() {
    let mut p = Proc::spawn(&mut peregrine(Path::new(env!("CARGO_BIN_EXE_peregrine"))));
    let addr = p.listening();
    let log = p.wait_stderr("started");
    if driver(&log) != Some("io_uring") {
        assert!(log.contains("io_uring unavailable"), "epoll without a reason: {log}");
        println!("note: io_uring is unavailable on this machine; not asserting it: {log}");
        return;
    }
    assert_plaintext(addr);
}

/// deploy/seccomp/peregrine-io-uring.json: (default action, allowed names, errno rules).
struct SeccompProfile {
    json: serde_json::Value,
    allowed: BTreeSet<String>,
    errno: BTreeMap<String, u64>,
}

fn seccomp_profile() -> SeccompProfile {
    let json: serde_json::Value =
        serde_json::from_str(&read("deploy/seccomp/peregrine-io-uring.json")).expect("JSON");
    let mut allowed = BTreeSet::new();
    let mut errno = BTreeMap::new();
    for rule in json["syscalls"].as_array().expect("syscalls") {
        for name in rule["names"].as_array().expect("names") {
            let name = name.as_str().expect("name").to_string();
            match rule["action"].as_str() {
                Some("SCMP_ACT_ALLOW") => assert!(allowed.insert(name.clone()), "{name} twice"),
                Some("SCMP_ACT_ERRNO") => {
                    errno.insert(name, rule["errnoRet"].as_u64().unwrap_or(1));
                }
                other => panic!("{name}: unexpected action {other:?}"),
            }
        }
    }
    SeccompProfile { json, allowed, errno }
}

#[test]
fn seccomp_profile_is_default_deny_plus_io_uring() {
    let p = seccomp_profile();
    assert_eq!(p.json["defaultAction"], "SCMP_ACT_ERRNO", "like Docker's default profile");
    assert_eq!(p.json["defaultErrnoRet"], 1, "EPERM, as Docker's");
    for name in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register", // the point of it
        "epoll_create1",
        "epoll_ctl",
        "epoll_wait",
        "epoll_pwait", // the fallback
        "socket",
        "bind",
        "listen",
        "accept4",
        "setsockopt",
        "getsockname",
        "shutdown",
        "sendmsg",
        "sendto",
        "recvfrom",
        "close",
        "read",
        "write",
        "openat",
        "futex",
        "mmap",
        "munmap",
        "mprotect",
        "clone",
        "exit",
        "exit_group",
        "rt_sigreturn",
        "rt_sigaction",
        "sched_getaffinity",
        "sched_setaffinity",
        "prlimit64",
        "execve",
    ] {
        assert!(p.allowed.contains(name), "{name} is not allowed");
    }
    // clone3's flags are out of seccomp's reach: ENOSYS makes glibc use clone, whose flags
    // are filtered (no new namespaces), as in Docker's profile.
    assert_eq!(p.errno, BTreeMap::from([("clone3".to_string(), 38)]), "errno rules");
    let clone = p.json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"].as_array().unwrap().iter().any(|n| n == "clone"))
        .unwrap();
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], 0x7E02_0000u64, "the CLONE_NEW* flags");
}

/// The shipped profile, enforced by seccomp-run: Peregrine (the glibc debug build and the
/// image's musl build) starts on io_uring, serves, answers /healthz and stops cleanly.
#[test]
fn seccomp_profile_enforced_runs_io_uring() {
    let Some(launcher) = seccomp_run() else { return };
    let profile = repo().join("deploy/seccomp/peregrine-io-uring.json");
    let mut binaries = vec![PathBuf::from(env!("CARGO_BIN_EXE_peregrine"))];
    binaries.extend(musl_peregrine());
    for binary in binaries {
        let mut command = Command::new(&launcher);
        command.arg("--profile").arg(&profile).arg("--").arg(&binary).args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            "2",
        ]);
        quiet_env(&mut command);
        let mut p = Proc::spawn(&mut command);
        let addr = p.listening();
        let log = p.wait_stderr("started");
        let expected = if host_has_io_uring() { "io_uring" } else { "epoll" };
        assert_eq!(driver(&log), Some(expected), "{}: {log}", binary.display());
        assert_plaintext(addr);
        let admin = p.addr("admin listening on ", ADMIN_WAIT);
        assert_eq!(get(admin, "/healthz").0, "HTTP/1.1 200 OK");
        let status = p.sigterm(p.child.id());
        assert_eq!(status.code(), Some(0), "{}: {}", binary.display(), p.final_stderr());
    }
}

/// Runs `binary` under `strace -f` with `--io io`, exercises it (requests on both
/// listeners, pipelining, a chunked body, a bad request, an idle connection at shutdown)
/// and stops it with SIGTERM; returns the syscall names seen.
fn syscalls_seen(strace: &Path, binary: &Path, io: &str) -> BTreeSet<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("peregrine-strace-{}-{n}", std::process::id()));
    let mut command = Command::new(strace);
    command
        .args(["-f", "-qq", "-o"])
        .arg(&out)
        .arg("--")
        .arg(binary)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--threads", "2", "--io", io])
        .arg("--config")
        .arg(repo().join("deploy/container.toml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut p = Proc::spawn(&mut command);
    let addr = p.listening();
    let admin = p.addr("admin listening on ", ADMIN_WAIT);
    assert_plaintext(addr);
    let (status, body) = exchange(
        addr,
        b"GET /json HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("hello\r\n0\r\n\r\n"), "{body:?}");
    assert!(exchange(addr, b"NOT HTTP\r\n\r\n").0.starts_with("HTTP/1.1 400"));
    assert_eq!(get(admin, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(get(admin, "/metrics").0, "HTTP/1.1 200 OK");
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = idle.read(&mut [0u8; 1024]);

    // strace runs Peregrine as its child: signal that, not strace.
    let strace_pid = p.child.id();
    let pid = (0..100)
        .find_map(|_| {
            let found = child_of(strace_pid);
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            found
        })
        .expect("strace's child");
    let status = p.sigterm(pid);
    assert_eq!(status.code(), Some(0), "strace's exit; stderr: {}", p.final_stderr());
    let trace = std::fs::read_to_string(&out).expect("strace output");
    let _ = std::fs::remove_file(&out);
    // Lines look like `1234 name(args...) = 0`, `1234 <... name resumed>...`, or
    // `1234 +++ exited with 0 +++`: the first kind names every syscall made.
    trace
        .lines()
        .filter_map(|line| {
            let rest = line.split_once(' ')?.1.trim_start();
            let name = &rest[..rest.find('(')?];
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .then(|| name.to_string())
        })
        .collect()
}

/// The pid of a child of `parent`, from /proc/*/stat.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// Every syscall Peregrine makes while starting, serving and stopping, under both drivers
/// and in both builds (glibc: this test's; musl: the image's), is in the profile's allow
/// list, or is `clone3`, which the profile answers with ENOSYS on purpose.
#[test]
fn seccomp_profile_allows_every_syscall_strace_sees() {
    let Some(strace) = need_tool("strace", "apt-get install strace") else { return };
    let profile = seccomp_profile();
    let mut binaries = vec![PathBuf::from(env!("CARGO_BIN_EXE_peregrine"))];
    binaries.extend(musl_peregrine());
    for binary in &binaries {
        for io in ["uring", "epoll"] {
            if io == "uring" && !host_has_io_uring() {
                println!("note: no io_uring on this machine; tracing epoll only");
                continue;
            }
            let seen = syscalls_seen(&strace, binary, io);
            assert!(seen.contains("execve") && seen.len() > 20, "strace saw too little: {seen:?}");
            let missing: Vec<_> = seen
                .iter()
                .filter(|s| !profile.allowed.contains(*s) && !profile.errno.contains_key(*s))
                .collect();
            assert!(
                missing.is_empty(),
                "{} --io {io} makes syscalls deploy/seccomp/peregrine-io-uring.json does not \
                 allow: {missing:?}",
                binary.display()
            );
        }
    }
}

// ---- Kubernetes and systemd -----------------------------------------------------------

/// The lines of a YAML block scalar (`key: |`), dedented.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}: |` block"));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The number after `key:` on the first line that has it.
fn yaml_number(yaml: &str, key: &str) -> u64 {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split('#').next()?.trim().trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no number for {key}"))
}

#[test]
fn kubernetes_manifests_agree_with_the_image() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let service = read("deploy/kubernetes/service.yaml");

    // The ConfigMap's config is one Peregrine accepts (unknown keys would crash-loop).
    let config = Config::parse(&yaml_block(&deployment, "peregrine.toml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's peregrine.toml: {e}"));
    let shutdown = config.limits.shutdown_timeout.as_secs();
    let grace = yaml_number(&deployment, "terminationGracePeriodSeconds");
    let pre_stop = yaml_number(&deployment, "seconds");
    assert!(
        pre_stop + shutdown < grace,
        "preStop {pre_stop} s + shutdown_timeout {shutdown} s must fit in the grace period {grace} s"
    );
    assert_eq!(grace, 45);

    let (uid, gid) = IMAGE_USER.split_once(':').unwrap();
    assert_eq!(yaml_number(&deployment, "runAsUser").to_string(), uid);
    assert_eq!(yaml_number(&deployment, "runAsGroup").to_string(), gid);
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "path: /readyz",
        "path: /healthz",
        "port: metrics",
        "containerPort: 9090",
        "containerPort: 8080",
        "mountPath: /etc/peregrine",
        "type: RuntimeDefault",
        "localhostProfile: profiles/peregrine-io-uring.json",
    ] {
        assert!(deployment.contains(needle), "deployment.yaml lacks {needle:?}");
    }
    assert!(deployment.contains("readinessProbe:") && deployment.contains("livenessProbe:"));
    for needle in [
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9090\"",
        "prometheus.io/path: /metrics",
        "name: metrics",
        "port: 8080",
        "port: 9090",
    ] {
        assert!(service.contains(needle), "service.yaml lacks {needle:?}");
    }
    // The image's config path is where the ConfigMap is mounted.
    assert!(final_image().env["PEREGRINE_CONFIG"].starts_with("/etc/peregrine/"));
}

/// The manifests are valid Kubernetes objects: checked against the API's own schemas
/// (`kubernetes-validate --strict`, from PyPI: every field known and of its type).
#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let tool = Command::new("kubernetes-validate").arg("--version").output();
    let how = "pip install kubernetes-validate";
    if need(tool.is_ok_and(|o| o.status.success()), "kubernetes-validate", how).is_none() {
        return;
    }
    let dir = repo().join("deploy/kubernetes");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 2, "manifests: {manifests:?}");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&manifests)
        .output()
        .expect("run kubernetes-validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("deployment/peregrine") && text.contains("service/peregrine"), "{text}");
}

#[test]
fn systemd_unit_outlasts_the_graceful_shutdown() {
    let unit = read("deploy/systemd/peregrine.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("peregrine.service has no {key}="))
            .trim()
            .to_string()
    };
    let exec = value("ExecStart");
    assert_eq!(
        exec,
        "/usr/local/bin/peregrine --config /etc/peregrine/peregrine.toml --admin 127.0.0.1:9090"
    );
    // The config it names by default is the sample, which must parse.
    let sample =
        Config::load(&repo().join("deploy/peregrine.toml")).expect("deploy/peregrine.toml");
    let stop: u64 = value("TimeoutStopSec").parse().expect("TimeoutStopSec in seconds");
    assert!(stop > sample.limits.shutdown_timeout.as_secs(), "TimeoutStopSec {stop}");
    for (key, expected) in [
        ("Type", "simple"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("KillSignal", "SIGTERM"),
        // `systemctl reload`: SIGHUP reloads the config (reload_binary.rs tests what it does).
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "1048576"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(value(key), expected, "{key}=");
    }
}
