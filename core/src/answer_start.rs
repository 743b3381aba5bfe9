//! The start of the last fixed answer's head, per protocol, on this core (`percore` holds
//! it). A route answers with the same fixed response again and again (a health check, a
//! redirect, a plain page), and the same status, `content-type` and length make the same
//! start of a head: the status line (`:status`), the field and the length, formatted once
//! and copied after that. What follows it (`connection`, `date`, `server`) depends on the
//! request, the second and, for HTTP/2, the connection's HPACK table, and is written each
//! time.

use http::{HeaderValue, StatusCode};
use peregrine_protocols::h1::HeadStart;
use peregrine_protocols::h2::ResponseStart;

use crate::handler::Fixed;
use crate::percore;

/// This core's last fixed answer heads.
pub(crate) struct AnswerStarts {
    /// HTTP/1's: what `encode_head_start` wrote.
    pub(crate) h1: Known<H1Start>,
    /// HTTP/2's: a block start the codec sends as it is.
    pub(crate) h2: Known<ResponseStart>,
}

impl AnswerStarts {
    pub(crate) const fn new() -> AnswerStarts {
        AnswerStarts { h1: Known(None), h2: Known(None) }
    }
}

/// An HTTP/1 head's start: its bytes, and what they said of `date` and `server`.
pub(crate) struct H1Start {
    pub(crate) start: HeadStart,
    pub(crate) bytes: Vec<u8>,
}

/// Heads longer than this (a long `content-type`) are not kept.
pub(crate) const MAX_KEPT: usize = 256;

/// One protocol's last start, and the answer it belongs to.
pub(crate) struct Known<T>(Option<(Key, T)>);

/// What makes two fixed answers' starts the same.
struct Key {
    status: StatusCode,
    content_type: HeaderValue,
    len: u64,
}

impl<T> Known<T> {
    /// The start kept for `answer` with a body of `len` bytes, if it is the last one.
    pub(crate) fn get(&self, answer: &Fixed, len: u64) -> Option<&T> {
        let (key, start) = self.0.as_ref()?;
        let (kept, given) = (key.content_type.as_bytes(), answer.content_type.as_bytes());
        // A route's type is usually one static value: the same bytes at the same place.
        let same_type =
            kept.len() == given.len() && (kept.as_ptr() == given.as_ptr() || kept == given);
        let same = key.status == answer.status && key.len == len && same_type;
        same.then_some(start)
    }

    /// Keeps `start` as `answer`'s (with a body of `len` bytes), in place of the last one.
    pub(crate) fn set(&mut self, answer: &Fixed, len: u64, start: T) {
        let key = Key { status: answer.status, content_type: answer.content_type.clone(), len };
        self.0 = Some((key, start));
    }

    /// Takes the last one out (to reuse its room).
    pub(crate) fn take(&mut self) -> Option<T> {
        self.0.take().map(|(_, start)| start)
    }
}

/// Runs `f` on this core's starts.
pub(crate) fn with<R>(f: impl FnOnce(&mut AnswerStarts) -> R) -> R {
    percore::with(|p| f(&mut p.answer_starts.borrow_mut()))
}
