//! Full TLS handshakes with `openssl s_time -new`, and parsing its report.
//!
//! Why this tool: the handshake scenario must pay a *full* handshake per
//! connection. Both h2load (`--h1` with `Connection: close`, which it follows
//! by reconnecting) and wrk (`Connection: close` over https) resume the TLS
//! session on every reconnect: checked against nginx logging
//! `$ssl_session_reused`, all but the first connection per client were
//! resumptions. `s_time -new` starts every connection without a session, so
//! every one is a full TLS 1.3 handshake (the same nginx log showed none
//! reused). With `-www PATH` it sends `GET PATH HTTP/1.0` after the handshake
//! and reads until the server closes, so each connection also carries one
//! request, as the issue asks.
//!
//! Its limits: one connection at a time per process (the harness runs several
//! processes side by side), and it does not check the HTTP status: it only
//! counts bytes read. The harness therefore requires a non-trivial number of
//! bytes per connection, and a server's routing is checked over cleartext
//! before any run.

/// What one `s_time` process reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct STimeStats {
    /// Connections completed (handshake, request, response, close).
    pub connections: u64,
    /// Bytes read per connection (response head and body).
    pub bytes_per_connection: u64,
}

/// Fewest response bytes a real `200 Hello, World!` answer can take: a
/// status line and the 13-byte body. Anything shorter was no answer.
pub const MIN_RESPONSE_BYTES: u64 = 30;

/// Parses `s_time`'s report, from its line
/// `N connections in T real seconds, B bytes read per connection`.
///
/// The other line, `N connections in X.XXs; Y connections/user sec`, times
/// the client's own user CPU, not the run, so it is not used.
pub fn parse_output(output: &str) -> Result<STimeStats, String> {
    for line in output.lines() {
        // Progress stars (one per connection) may share the line.
        let line = line.trim_start_matches('*').trim();
        let Some((count, rest)) = line.split_once(" connections in ") else { continue };
        if !rest.contains(" real seconds, ") {
            continue;
        }
        let bytes = rest
            .split(", ")
            .nth(1)
            .and_then(|b| b.strip_suffix(" bytes read per connection"))
            .ok_or_else(|| format!("bad s_time line: {line:?}"))?;
        return Ok(STimeStats {
            connections: count.parse().map_err(|_| format!("bad s_time line: {line:?}"))?,
            bytes_per_connection: bytes
                .parse()
                .map_err(|_| format!("bad s_time line: {line:?}"))?,
        });
    }
    // s_time prints `ERROR` and OpenSSL's error queue when a connection fails.
    let why = output
        .lines()
        .find(|l| l.contains(":error:"))
        .map(|l| l.split(':').skip(5).collect::<Vec<_>>().join(":"))
        .unwrap_or_else(|| "no `connections in … real seconds` line".into());
    Err(format!("s_time: {why}"))
}

/// Sums the reports of the processes of one run. Every process must have
/// completed connections with a plausible response size.
pub fn combine(reports: &[STimeStats]) -> Result<u64, String> {
    let mut total = 0;
    for (i, r) in reports.iter().enumerate() {
        if r.connections == 0 {
            return Err(format!("s_time client {i} completed no connection"));
        }
        if r.bytes_per_connection < MIN_RESPONSE_BYTES {
            return Err(format!(
                "s_time client {i} read {} bytes per connection: no HTTP response",
                r.bytes_per_connection
            ));
        }
        total += r.connections;
    }
    Ok(total)
}

/// Arguments for one `openssl s_time` process (after the program name).
///
/// `-new`: a new session for every connection (never resumed). `-time`: run
/// length; s_time finishes the connection in progress when it is up.
pub fn args(host_port: &str, path: &str, duration_s: u64) -> Vec<String> {
    ["s_time", "-connect", host_port, "-new", "-time", &duration_s.to_string(), "-www", path]
        .map(str::to_owned)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real OpenSSL 3.0.19 `s_time` output: against nginx 1.22 over TLS 1.3;
    // against a refused port; against a cleartext HTTP/1 port.
    const NGINX: &str = include_str!("../fixtures/s_time_nginx.txt");
    const REFUSED: &str = include_str!("../fixtures/s_time_refused.txt");
    const NOT_TLS: &str = include_str!("../fixtures/s_time_no_tls.txt");

    #[test]
    fn parses_a_run() {
        let s = parse_output(NGINX).unwrap();
        assert_eq!(s, STimeStats { connections: 861, bytes_per_connection: 149 });
        assert_eq!(combine(&[s, s]), Ok(1722));
    }

    #[test]
    fn failures_carry_the_openssl_reason() {
        let e = parse_output(REFUSED).unwrap_err();
        assert!(e.contains("Connection refused"), "{e}");
        let e = parse_output(NOT_TLS).unwrap_err();
        assert!(e.contains("wrong version number"), "{e}");
        assert!(parse_output("").is_err());
        assert!(
            parse_output("5 connections in 3 real seconds, x bytes read per connection").is_err()
        );
    }

    #[test]
    fn empty_or_tiny_responses_fail_the_run() {
        let ok = STimeStats { connections: 10, bytes_per_connection: 149 };
        assert!(combine(&[ok, STimeStats { connections: 0, ..ok }]).is_err());
        assert!(combine(&[STimeStats { bytes_per_connection: 0, ..ok }]).is_err());
    }

    #[test]
    fn command_line() {
        assert_eq!(
            args("127.0.0.1:8443", "/plaintext", 3),
            ["s_time", "-connect", "127.0.0.1:8443", "-new", "-time", "3", "-www", "/plaintext"]
        );
    }
}
