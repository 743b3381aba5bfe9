//! Finding, opening and remembering files: the disk side of the file server.
//!
//! Everything that touches the disk runs on the disk pool ([`crate::rt::blocking`]): the
//! stat, the symlink check, the open, reading a small file whole, and finding its
//! precompressed siblings. What it found is kept in a per-core open-file cache (nginx's
//! `open_file_cache`): the descriptor, the validators and headers, a small file's bytes, so
//! a hot file costs no syscall at all until its entry is older than `revalidate_after`. Then
//! one request re-stats it on the pool while the others go on with the entry they have; a
//! changed file is opened afresh.
//!
//! The cache is bounded in entries (LRU) and in the bytes of small files it holds.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use lru::LruCache;

use super::conditional::whole_seconds;
use super::FileRoute;
use crate::content_coding::Coding;
use crate::rt;

/// One representation of a file as the cache holds it: open, with its headers ready.
pub(crate) struct FileEntry {
    pub(crate) file: Arc<File>,
    pub(crate) len: u64,
    /// Modification time in whole seconds.
    pub(crate) modified: SystemTime,
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
    pub(crate) content_type: HeaderValue,
    /// The whole file, when it is small enough to keep in memory.
    pub(crate) inline: Option<Bytes>,
    /// Precompressed siblings, in the server's order of preference.
    pub(crate) variants: Vec<(Coding, FileEntry)>,
    /// What revalidation compares, per file (the main one first, then each variant's).
    identity: Vec<(PathBuf, Identity)>,
    checked: Cell<Instant>,
}

impl FileEntry {
    /// The codings it has precompressed siblings for.
    pub(crate) fn codings(&self) -> impl Iterator<Item = Coding> + '_ {
        self.variants.iter().map(|(c, _)| *c)
    }

    fn inline_bytes(&self) -> usize {
        self.inline.as_ref().map_or(0, Bytes::len)
            + self.variants.iter().map(|(_, v)| v.inline_bytes()).sum::<usize>()
    }
}

/// What identifies a file's version: a file replaced or written since has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    len: u64,
    modified: SystemTime,
    #[cfg(unix)]
    inode: u64,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            len: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }
}

/// What a lookup found.
pub(crate) enum Found {
    File(Rc<FileEntry>),
    /// A directory named without a trailing slash (answered with a redirect).
    Directory,
    /// Nothing to serve: missing, not a regular file, or a symlink leaving the root.
    Missing,
    /// The server may not read it (`403`).
    Forbidden,
}

/// What the pool found, before it becomes a cache entry on the core.
enum Loaded {
    File(Box<FileEntry>),
    Directory,
    Missing,
    Forbidden,
}

/// The settings a lookup needs on the pool (shared, read-only).
pub(crate) struct LoadSettings {
    /// The root, canonical (symlinks resolved), so resolved paths can be checked against it.
    pub(crate) root: PathBuf,
    pub(crate) index: Vec<String>,
    pub(crate) precompressed: Vec<Coding>,
    pub(crate) symlinks_outside_root: bool,
    pub(crate) inline_max_size: u64,
}

/// One core's open-file cache for one file route.
pub(crate) struct OpenCache {
    entries: RefCell<LruCache<String, Rc<FileEntry>>>,
    inline_bytes: Cell<usize>,
    inline_budget: usize,
    revalidate_after: Duration,
}

impl OpenCache {
    pub(crate) fn new(entries: usize, inline_budget: usize, revalidate_after: Duration) -> Self {
        let cap = NonZeroUsize::new(entries.max(1)).expect("at least one");
        OpenCache {
            entries: RefCell::new(LruCache::new(cap)),
            inline_bytes: Cell::new(0),
            inline_budget,
            revalidate_after,
        }
    }

    /// Finds `key` (a cleaned relative path, `/`-terminated for a directory's index).
    pub(crate) async fn lookup(&self, route: &FileRoute, key: &str) -> Found {
        let cached = self.entries.borrow_mut().get(key).cloned();
        if let Some(entry) = cached {
            let now = rt::now();
            if now.saturating_duration_since(entry.checked.get()) < self.revalidate_after {
                return Found::File(entry);
            }
            // This request revalidates; the others keep using the entry meanwhile.
            entry.checked.set(now);
            let identity = entry.identity.clone();
            let unchanged = rt::blocking::run(move || {
                identity.iter().all(|(path, id)| {
                    std::fs::metadata(path).is_ok_and(|m| Identity::of(&m) == *id)
                })
            })
            .await
            .unwrap_or(false);
            if unchanged {
                return Found::File(entry);
            }
            self.remove(key);
        }
        let settings = Arc::clone(&route.load);
        let relative = key.to_string();
        let loaded = rt::blocking::run(move || load(&settings, &relative)).await;
        match loaded {
            Some(Loaded::File(entry)) => {
                entry.checked.set(rt::now());
                let entry = Rc::new(*entry);
                self.insert(key, Rc::clone(&entry));
                Found::File(entry)
            }
            Some(Loaded::Directory) => Found::Directory,
            Some(Loaded::Forbidden) => Found::Forbidden,
            Some(Loaded::Missing) | None => Found::Missing,
        }
    }

    fn insert(&self, key: &str, entry: Rc<FileEntry>) {
        let bytes = entry.inline_bytes();
        let mut entries = self.entries.borrow_mut();
        // Keep the small files' bytes within budget: the least recently used go first.
        while self.inline_bytes.get() + bytes > self.inline_budget {
            match entries.pop_lru() {
                Some((_, old)) => {
                    self.inline_bytes.set(self.inline_bytes.get() - old.inline_bytes())
                }
                None => break,
            }
        }
        if let Some((_, old)) = entries.push(key.to_string(), entry) {
            self.inline_bytes.set(self.inline_bytes.get() - old.inline_bytes());
        }
        self.inline_bytes.set(self.inline_bytes.get() + bytes);
    }

    fn remove(&self, key: &str) {
        if let Some(old) = self.entries.borrow_mut().pop(key) {
            self.inline_bytes.set(self.inline_bytes.get() - old.inline_bytes());
        }
    }
}

/// Looks `relative` up under the root (on the pool).
fn load(settings: &LoadSettings, relative: &str) -> Loaded {
    let (name, wants_index) = match relative.strip_suffix('/') {
        Some(dir) => (dir, true),
        None => (relative, false),
    };
    let path = settings.root.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return missing_or_forbidden(&e),
    };
    if meta.is_dir() {
        if !wants_index {
            return Loaded::Directory;
        }
        for index in &settings.index {
            match open(settings, &path.join(index)) {
                Loaded::Missing => continue,
                found => return found,
            }
        }
        return Loaded::Missing;
    }
    if wants_index {
        // `file.txt/`: a file is not a directory.
        return Loaded::Missing;
    }
    open(settings, &path)
}

/// Opens the regular file at `path` with its precompressed siblings.
fn open(settings: &LoadSettings, path: &Path) -> Loaded {
    let mut entry = match open_one(settings, path, true) {
        Ok(Some(e)) => e,
        Ok(None) => return Loaded::Missing,
        Err(e) => return missing_or_forbidden(&e),
    };
    for &coding in &settings.precompressed {
        let mut sibling = path.as_os_str().to_owned();
        sibling.push(".");
        sibling.push(coding.extension());
        if let Ok(Some(mut variant)) = open_one(settings, Path::new(&sibling), false) {
            // The variant is its own representation: its own tag, the original's type.
            variant.etag = tag(&variant, Some(coding));
            variant.content_type = entry.content_type.clone();
            entry.identity.extend(variant.identity.iter().cloned());
            entry.variants.push((coding, variant));
        }
    }
    Loaded::File(Box::new(entry))
}

/// Opens one regular file inside the root; `None` when it is not one (or leaves the root).
fn open_one(settings: &LoadSettings, path: &Path, typed: bool) -> io::Result<Option<FileEntry>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        // Directories, devices, FIFOs and sockets are never served (a FIFO would block).
        return Ok(None);
    }
    if !settings.symlinks_outside_root {
        let resolved = std::fs::canonicalize(path)?;
        if !resolved.starts_with(&settings.root) {
            return Ok(None);
        }
    }
    let file = open_shared(path)?;
    // The descriptor's own metadata is the truth (the path may have changed since the stat).
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let inline = if len <= settings.inline_max_size {
        let bytes = super::body::read_at(&file, 0, len as usize)?;
        if bytes.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Some(bytes)
    } else {
        None
    };
    let modified = whole_seconds(meta.modified().unwrap_or(UNIX_EPOCH));
    let content_type = if typed { content_type(path) } else { HeaderValue::from_static("") };
    let mut entry = FileEntry {
        file: Arc::new(file),
        len,
        modified,
        etag: HeaderValue::from_static(""),
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified))
            .expect("dates are ASCII"),
        content_type,
        inline,
        variants: Vec::new(),
        identity: vec![(path.to_path_buf(), Identity::of(&meta))],
        checked: Cell::new(Instant::now()),
    };
    entry.etag = tag(&entry, None);
    Ok(Some(entry))
}

/// Opens `path` for reading. On Windows the cache's open handle must not stop a deploy from
/// replacing or deleting the file (IIS shares files the same way), so delete sharing is on.
fn open_shared(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE.
        options.share_mode(0x1 | 0x2 | 0x4);
    }
    options.open(path)
}

/// A strong entity tag from the length and the full-precision modification time (nginx's
/// scheme, finer), with the coding for a precompressed variant.
fn tag(entry: &FileEntry, coding: Option<Coding>) -> HeaderValue {
    let id = &entry.identity[0].1;
    let nanos = id.modified.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let value = match coding {
        None => format!("\"{:x}-{:x}\"", nanos, id.len),
        Some(c) => format!("\"{:x}-{:x}-{}\"", nanos, id.len, c.token()),
    };
    HeaderValue::from_str(&value).expect("hex digits and a token")
}

/// `Content-Type` from the file name's extension (the `mime_guess` table), with
/// `charset=utf-8` for text, and `application/octet-stream` when unknown.
fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    let value = if textual && mime.get_param("charset").is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn missing_or_forbidden(e: &io::Error) -> Loaded {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Loaded::Forbidden,
        _ => Loaded::Missing,
    }
}
