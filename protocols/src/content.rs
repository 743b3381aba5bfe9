//! Whether a response carries content, and which length it advertises: the rules every HTTP
//! version shares (RFC 9110 §6.4.1, §8.6, §9.3.2, §9.3.6), decided once for HTTP/1 and HTTP/2.
//!
//! The length always comes from the body the server is about to send, never from a
//! `content-length` field the application set: both codecs own that field, so a handler that
//! gets it wrong cannot produce a malformed message (HTTP/1 framing that desynchronises the
//! connection, or an HTTP/2 stream whose DATA disagrees with its header, RFC 9113 §8.1.1).

use http::{Method, StatusCode};

/// What a response to a given request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// No content follows the head: 1xx, 204, 304, a 2xx answer to CONNECT, or any answer to
    /// HEAD. `content_length` is advertised for HEAD (the length a GET would have had) when
    /// the body's length is known.
    None {
        /// Content-Length to advertise, if any.
        content_length: Option<u64>,
    },
    /// The body follows; `length` is its exact size when known (sent as Content-Length).
    Body {
        /// The body's exact length, if known in advance.
        length: Option<u64>,
    },
}

/// Decides [`Content`] for a `status` answering `method`, whose body is `body_len` long
/// (`None`: unknown until it ends).
///
/// In order: 1xx, 204 and 304 never have content; a 2xx answer to CONNECT turns the stream
/// into a tunnel and advertises no length (§9.3.6); a HEAD response has none but may
/// advertise the length a GET would have had (§9.3.2); anything else sends its body.
pub fn response_content(status: StatusCode, method: &Method, body_len: Option<u64>) -> Content {
    let no_content_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if no_content_status || (method == Method::CONNECT && status.is_success()) {
        Content::None { content_length: None }
    } else if method == Method::HEAD {
        Content::None { content_length: body_len }
    } else {
        Content::Body { length: body_len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_without_content_advertise_no_length() {
        for status in [100, 103, 204, 304] {
            let status = StatusCode::from_u16(status).unwrap();
            let c = response_content(status, &Method::GET, Some(5));
            assert_eq!(c, Content::None { content_length: None }, "{status}");
        }
        let tunnel = response_content(StatusCode::OK, &Method::CONNECT, Some(5));
        assert_eq!(tunnel, Content::None { content_length: None });
    }

    #[test]
    fn head_advertises_the_body_length_and_others_send_it() {
        let head = response_content(StatusCode::OK, &Method::HEAD, Some(13));
        assert_eq!(head, Content::None { content_length: Some(13) });
        let get = response_content(StatusCode::OK, &Method::GET, Some(13));
        assert_eq!(get, Content::Body { length: Some(13) });
        let streamed = response_content(StatusCode::NOT_FOUND, &Method::POST, None);
        assert_eq!(streamed, Content::Body { length: None });
    }
}
