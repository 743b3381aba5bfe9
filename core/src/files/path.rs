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
///
/// Every request for a file comes through here, so it makes one pass over the encoded
/// path and one over the decoded one, and allocates only the cleaned path (and the decoded
/// one when there are escapes).
pub(crate) fn resolve(raw: &str, show_hidden: bool) -> Result<Relative, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::Invalid("path does not start with /"));
    }
    let decoded = if check_escapes(raw.as_bytes())? {
        percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathError::Invalid("path is not UTF-8"))?
    } else {
        // No escapes: the path is its own decoding (and already UTF-8).
        std::borrow::Cow::Borrowed(raw)
    };
    check_decoded(decoded.as_bytes())?;
    let mut path = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => match path.rfind('/') {
                Some(at) => path.truncate(at),
                None if !path.is_empty() => path.clear(),
                None => return Err(PathError::Invalid("path climbs above the root")),
            },
            s => {
                if s.ends_with('.') || s.ends_with(' ') {
                    return Err(PathError::Invalid("segment ends in a dot or space"));
                }
                if is_device_name(s) {
                    return Err(PathError::Invalid("device name in path"));
                }
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(s);
            }
        }
    }
    // Checked on the cleaned path: a dot segment a later `..` removed names nothing.
    let bytes = path.as_bytes();
    let hidden = (0..bytes.len()).any(|i| bytes[i] == b'.' && (i == 0 || bytes[i - 1] == b'/'));
    if hidden && !show_hidden {
        return Err(PathError::Hidden);
    }
    Ok(Relative { path, trailing_slash: decoded.ends_with('/') })
}

/// Whether `segment` is one of Windows' device names, with or without an extension.
fn is_device_name(segment: &str) -> bool {
    let stem = match segment.as_bytes().iter().position(|&b| b == b'.') {
        Some(dot) => &segment[..dot],
        None => segment,
    }
    .trim_end();
    // The names are 3 to 7 bytes: most segments are ruled out by their length alone.
    (3..=7).contains(&stem.len()) && DEVICE_NAMES.iter().any(|d| stem.eq_ignore_ascii_case(d))
}

/// Every `%` must start a two-digit hex escape (`percent_decode` leaves bad ones as they
/// are; a strict server refuses them), and none may encode a slash or a backslash, which
/// would change the path's structure after decoding. `Ok(true)`: there are escapes.
fn check_escapes(raw: &[u8]) -> Result<bool, PathError> {
    let mut bad = false;
    let mut slash = false;
    let mut any = false;
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            i += 1;
            continue;
        }
        match raw.get(i + 1..i + 3) {
            Some([hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                let lo = lo.to_ascii_lowercase();
                slash |= (*hi == b'2' && lo == b'f') || (*hi == b'5' && lo == b'c');
                any = true;
                i += 3;
            }
            _ => {
                bad = true;
                i += 1;
            }
        }
    }
    if slash {
        Err(PathError::Invalid("encoded slash"))
    } else if bad {
        Err(PathError::Invalid("bad percent-encoding"))
    } else {
        Ok(any)
    }
}

/// Refuses control bytes, backslashes and colons (a Windows drive letter or alternate data
/// stream) in the decoded path, reporting the first kind in that order.
fn check_decoded(decoded: &[u8]) -> Result<(), PathError> {
    let (mut control, mut backslash, mut colon) = (false, false, false);
    for &b in decoded {
        control |= b < 0x20 || b == 0x7f;
        backslash |= b == b'\\';
        colon |= b == b':';
    }
    if control {
        Err(PathError::Invalid("control byte in path"))
    } else if backslash {
        Err(PathError::Invalid("backslash in path"))
    } else if colon {
        Err(PathError::Invalid("colon in path"))
    } else {
        Ok(())
    }
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
        assert_eq!(ok("/a/b/../../c/"), "c");
        // A dot segment that a later `..` removed hides nothing.
        assert_eq!(ok("/.git/../a"), "a");
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
