//! From a request's path to a file's place under the root, before any disk access: the
//! checks that keep every request inside the root whatever the OS.
//!
//! The path is percent-decoded once (a `%2e%2e` is a `..`, a `%252e` stays the text `%2e`),
//! then split on `/` and cleaned: `.` segments and empty ones go, `..` removes the segment
//! before it and may never climb above the root. Refused outright (400): invalid
//! percent-encoding or UTF-8, NUL and other control bytes, an encoded `/`, a backslash, a
//! colon (a Windows drive letter or alternate data stream), a segment ending in `.` or a
//! space (Windows drops those, so `secret.txt.` would name `secret.txt`), and Windows'
//! device names (`CON`, `NUL`, `COM1`, ...) on every OS, so a site behaves the same wherever it
//! is served. Dot-files (`.git`, `.env`) are hidden unless the route shows them.
//!
//! Symlinks that leave the root are the one escape a path cannot show: the open step
//! (`open.rs`) checks the resolved path against the root.

use percent_encoding::percent_decode_str;

/// Why a request path names no file that may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Malformed or unsafe: answered `400`.
    Invalid(&'static str),
    /// A hidden (dot) file or directory: answered as if missing.
    Hidden,
}

/// A cleaned path relative to the root: segments joined by `/`, no leading or trailing
/// slash (empty for the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Relative {
    pub(crate) path: String,
    /// The request path ended in `/` (it names a directory).
    pub(crate) trailing_slash: bool,
}

/// Windows' reserved device names, refused as a segment (with or without an extension).
const DEVICE_NAMES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9", "conin$",
    "conout$",
];

/// Cleans `raw` (a request target's path, still percent-encoded).
pub(crate) fn resolve(raw: &str, show_hidden: bool) -> Result<Relative, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::Invalid("path does not start with /"));
    }
    // An encoded slash or backslash would change the path's structure after decoding.
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PathError::Invalid("encoded slash"));
    }
    if !valid_escapes(raw) {
        return Err(PathError::Invalid("bad percent-encoding"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Invalid("path is not UTF-8"))?;
    if decoded.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Invalid("control byte in path"));
    }
    if decoded.contains('\\') {
        return Err(PathError::Invalid("backslash in path"));
    }
    if decoded.contains(':') {
        return Err(PathError::Invalid("colon in path"));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::Invalid("path climbs above the root"));
                }
            }
            s => {
                if s.ends_with('.') || s.ends_with(' ') {
                    return Err(PathError::Invalid("segment ends in a dot or space"));
                }
                let stem = s.split('.').next().unwrap_or(s).trim_end();
                if DEVICE_NAMES.iter().any(|d| stem.eq_ignore_ascii_case(d)) {
                    return Err(PathError::Invalid("device name in path"));
                }
                segments.push(s);
            }
        }
    }
    if !show_hidden && segments.iter().any(|s| s.starts_with('.')) {
        return Err(PathError::Hidden);
    }
    Ok(Relative { path: segments.join("/"), trailing_slash: decoded.ends_with('/') })
}

/// Whether every `%` starts a two-digit hex escape (`percent_decode` leaves bad ones as they
/// are; a strict server refuses them).
fn valid_escapes(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        resolve(raw, false).expect(raw).path
    }

    #[test]
    fn cleans_dots_and_empty_segments() {
        assert_eq!(ok("/"), "");
        assert_eq!(ok("/a/./b//c"), "a/b/c");
        assert_eq!(ok("/a/b/../c"), "a/c");
        assert_eq!(ok("/a%20b.txt"), "a b.txt");
        assert!(resolve("/a/", false).unwrap().trailing_slash);
    }

    #[test]
    fn refuses_traversal_and_unsafe_bytes() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a%2f..%2f..%2fetc",
            "/..%5c..%5cwindows",
            "/a\\..\\b",
            "/a%00.txt",
            "/a%0a",
            "/c:/windows/win.ini",
            "/C%3A%5Cwindows",
            "/file.txt::$DATA",
            "/secret.txt.",
            "/secret.txt%20",
            "/CON",
            "/nul.txt",
            "/sub/com1.log",
            "/%",
            "/%zz",
            "/%c0%ae%c0%ae/",
            "relative",
        ] {
            assert!(
                matches!(resolve(raw, false), Err(PathError::Invalid(_))),
                "{raw} was not refused"
            );
        }
    }

    #[test]
    fn a_double_encoded_dot_dot_is_a_literal_name() {
        // `%252e%252e` decodes once to the text `%2e%2e`, a name like any other.
        assert_eq!(ok("/%252e%252e/x"), "%2e%2e/x");
    }

    #[test]
    fn hides_dot_files_unless_shown() {
        assert_eq!(resolve("/.env", false), Err(PathError::Hidden));
        assert_eq!(resolve("/.git/config", false), Err(PathError::Hidden));
        assert_eq!(resolve("/a/.hidden/b", false), Err(PathError::Hidden));
        assert_eq!(resolve("/.well-known/x", true).unwrap().path, ".well-known/x");
    }
}
