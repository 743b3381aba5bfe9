//! Static files: a directory served as nginx, Caddy and HTTP.sys serve one.
//!
//! ```text
//!   request ─► path.rs: decode once, clean, refuse what could leave the root (400)
//!           ─► open.rs: per-core open-file cache; misses and revalidation on the disk pool
//!           ─► respond.rs: representation (precompressed sibling by Accept-Encoding),
//!                          preconditions (304/412), ranges (206/416), headers
//!           ─► body.rs: the file's regions, spliced to the socket or read on the pool
//! ```
//!
//! A file route is a [`FileRoute`] (shared by every core) and one [`Files`] per core (its
//! open-file cache). It is a room of its own: the router (`routes.rs`) calls [`Files::serve`]
//! and gets the request back when no file answers it, for the upstream or app behind.

pub(crate) mod body;
mod conditional;
mod open;
mod path;
mod respond;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::content_coding::Coding;
use crate::handler::respond as fixed;
use crate::Body;
pub(crate) use conditional::weak_match;
use open::{Found, LoadSettings, OpenCache};

/// `[files]`: settings shared by every file route (each core keeps its own cache per route).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSection {
    /// Open files each core keeps per route (descriptor, validators, headers): nginx's
    /// `open_file_cache max`.
    pub open_file_cache_entries: usize,
    /// How long a cached file is trusted before it is checked on disk again (a file changed
    /// on disk is seen after this long at most).
    #[serde(with = "humantime_serde")]
    pub revalidate_after: Duration,
    /// Files up to this size are kept in memory by the cache and sent from there.
    pub inline_max_size: u64,
    /// The most bytes of small files each core's cache of a route holds.
    pub inline_cache_size: u64,
    /// Threads of the disk pool that opens, stats and reads files off the reactors.
    pub disk_threads: usize,
    /// Ranges one request may ask for; more get the whole file (as nginx's `max_ranges`).
    pub max_ranges: usize,
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            open_file_cache_entries: 1024,
            revalidate_after: Duration::from_secs(1),
            inline_max_size: 32 * 1024,
            inline_cache_size: 8 * 1024 * 1024,
            disk_threads: crate::rt::blocking::DEFAULT_THREADS,
            max_ranges: 16,
        }
    }
}

impl FilesSection {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.open_file_cache_entries == 0 {
            return Err("open_file_cache_entries: must be at least 1".into());
        }
        if self.disk_threads == 0 || self.disk_threads > 1024 {
            return Err("disk_threads: between 1 and 1024".into());
        }
        if self.max_ranges == 0 {
            return Err("max_ranges: must be at least 1".into());
        }
        Ok(())
    }

    /// Sizes the disk pool (before the server starts).
    pub fn apply(&self) {
        crate::rt::blocking::set_threads(self.disk_threads);
    }
}

/// How a route serves a directory (the `[[route]]` keys next to `root`).
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Index files tried, in order, for a path ending in `/` (default `index.html`).
    pub index: Vec<String>,
    /// Precompressed siblings looked for (`x.br`, `x.zst`, `x.gz`), chosen by the client's
    /// `Accept-Encoding` (default all three).
    pub precompressed: Vec<Coding>,
    /// `Cache-Control` sent with files, if any.
    pub cache_control: Option<String>,
    /// Serve dot-files and dot-directories (default: hidden, as missing).
    pub show_hidden: bool,
    /// Follow symlinks whose target is outside the root (default: refused, as missing).
    pub symlinks_outside_root: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            index: vec!["index.html".into()],
            precompressed: Coding::ALL.to_vec(),
            cache_control: None,
            show_hidden: false,
            symlinks_outside_root: false,
        }
    }
}

/// A file route's settings, shared by every core.
pub struct FileRoute {
    load: Arc<LoadSettings>,
    cache_control: Option<HeaderValue>,
    show_hidden: bool,
    section: FilesSection,
}

impl std::fmt::Debug for FileRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRoute").field("root", &self.load.root).finish()
    }
}

impl FileRoute {
    /// A route serving `root` (which must be a directory) with `options`.
    pub fn new(
        root: impl Into<PathBuf>,
        options: &FileOptions,
        section: &FilesSection,
    ) -> Result<FileRoute, String> {
        let root = root.into();
        let canonical =
            std::fs::canonicalize(&root).map_err(|e| format!("root `{}`: {e}", root.display()))?;
        if !canonical.is_dir() {
            return Err(format!("root `{}`: not a directory", root.display()));
        }
        let cache_control = match &options.cache_control {
            Some(v) => Some(
                HeaderValue::from_str(v).map_err(|_| "cache_control: not a valid header value")?,
            ),
            None => None,
        };
        if options.index.iter().any(|i| i.is_empty() || i.contains(['/', '\\'])) {
            return Err("index: file names, without slashes".into());
        }
        Ok(FileRoute {
            load: Arc::new(LoadSettings {
                root: canonical,
                index: options.index.clone(),
                precompressed: options.precompressed.clone(),
                symlinks_outside_root: options.symlinks_outside_root,
                inline_max_size: section.inline_max_size,
            }),
            cache_control,
            show_hidden: options.show_hidden,
            section: section.clone(),
        })
    }
}

/// Why no file answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No such file (or a hidden one, or a symlink leaving the root).
    NotFound,
    /// Not a GET or HEAD.
    Method,
}

impl Miss {
    /// The answer when nothing stands behind the file route.
    pub fn response(self) -> Response<Body> {
        match self {
            Miss::NotFound => {
                fixed(StatusCode::NOT_FOUND, crate::handler::content_type::TEXT, "Not Found\n")
            }
            Miss::Method => {
                let mut r = fixed(
                    StatusCode::METHOD_NOT_ALLOWED,
                    crate::handler::content_type::TEXT,
                    "Method Not Allowed\n",
                );
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        }
    }
}

/// One core's side of a file route: the route and this core's open-file cache.
#[derive(Clone)]
pub struct Files {
    route: Arc<FileRoute>,
    cache: Rc<OpenCache>,
}

impl Files {
    /// This core's server of `route`.
    pub fn new(route: Arc<FileRoute>) -> Files {
        let s = &route.section;
        let cache = OpenCache::new(
            s.open_file_cache_entries,
            s.inline_cache_size as usize,
            s.revalidate_after,
        );
        Files { route, cache: Rc::new(cache) }
    }

    /// Answers `request` from the root, or gives it back with why no file answers it.
    pub async fn serve(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, (Request<Body>, Miss)> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Err((request, Miss::Method));
        }
        let relative = match path::resolve(request.uri().path(), self.route.show_hidden) {
            Ok(r) => r,
            Err(path::PathError::Hidden) => return Err((request, Miss::NotFound)),
            Err(path::PathError::Invalid(why)) => {
                tracing::debug!(path = request.uri().path(), why, "file path refused");
                return Ok(fixed(
                    StatusCode::BAD_REQUEST,
                    crate::handler::content_type::TEXT,
                    "Bad Request\n",
                ));
            }
        };
        let mut key = relative.path;
        if relative.trailing_slash || key.is_empty() {
            key.push('/');
        }
        match self.cache.lookup(&self.route, &key).await {
            Found::File(entry) => Ok(respond::file(&self.route, &request, &entry)),
            Found::Directory => Ok(respond::to_directory(&request)),
            Found::Forbidden => {
                Ok(fixed(StatusCode::FORBIDDEN, crate::handler::content_type::TEXT, "Forbidden\n"))
            }
            Found::Missing => Err((request, Miss::NotFound)),
        }
    }
}
