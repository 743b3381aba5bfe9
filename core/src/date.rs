//! The cached `Date` header value, refreshed at most once a second per core.

use crate::percore;
use std::time::{SystemTime, UNIX_EPOCH};

/// The formatted date of one second (a core's field in `percore`).
pub(crate) struct DateCache {
    second: u64,
    value: [u8; 29],
}

impl DateCache {
    pub(crate) const fn new() -> DateCache {
        DateCache { second: u64::MAX, value: [b' '; 29] }
    }
}

/// Re-formats the date if the second changed (called once per reactor turn).
pub(crate) fn refresh() {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    percore::with(|p| {
        let mut d = p.date.borrow_mut();
        if d.second != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.value.copy_from_slice(text.as_bytes());
                d.second = second;
            }
        }
    });
}

/// Calls `f` with the current IMF-fixdate (29 bytes).
pub(crate) fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    percore::with(|p| {
        if p.date.borrow().second == u64::MAX {
            refresh();
        }
        f(&p.date.borrow().value)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_is_an_imf_fixdate() {
        super::refresh();
        super::with(|d| {
            let s = std::str::from_utf8(d).unwrap();
            assert!(s.ends_with(" GMT"), "{s}");
            assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
        });
    }
}
