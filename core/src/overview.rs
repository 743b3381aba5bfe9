//! What a started server offers, told the way a person who just started it needs it: the
//! `try:` lines the binary prints and the welcome page at `/`. Both are built from the
//! listeners actually bound (address, protocols, TLS), so neither can go stale.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::listener::{ListenerSpec, Protocols};

const WELCOME_TEMPLATE: &str = include_str!("welcome.html");

/// One bound listener as the overview shows it.
#[derive(Debug, Clone)]
pub struct ListenerView {
    /// The bound address (a configured port 0 is the port the kernel chose).
    pub addr: SocketAddr,
    /// The protocols it serves.
    pub protocols: Protocols,
    /// `None`: cleartext. `Some(true)`: TLS with the generated development certificate
    /// (clients need `-k`); `Some(false)`: TLS with configured certificates.
    pub tls: Option<bool>,
}

impl ListenerView {
    /// The view of `spec` bound at `addr`; `development`: its certificate is the generated one.
    pub fn new(addr: SocketAddr, spec: &ListenerSpec, development: bool) -> ListenerView {
        ListenerView {
            addr,
            protocols: spec.protocols,
            tls: spec.tls.as_ref().map(|_| development),
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// What it speaks, in words: "HTTP/1.1 and h2c (prior knowledge)", "h2 and HTTP/1.1 by ALPN".
    fn speaks(&self) -> String {
        let Protocols { http1, h2 } = self.protocols;
        match (self.tls.is_some(), http1, h2) {
            (false, true, true) => "HTTP/1.1 and h2c (HTTP/2 by prior knowledge), same port".into(),
            (false, true, false) => "HTTP/1.1".into(),
            (false, false, _) => "h2c (HTTP/2 by prior knowledge)".into(),
            (true, true, true) => "h2 and HTTP/1.1 over TLS, chosen by ALPN".into(),
            (true, true, false) => "HTTP/1.1 over TLS".into(),
            (true, false, _) => "h2 over TLS".into(),
        }
    }

    /// Commands that exercise this listener, one per protocol it serves.
    fn commands(&self) -> Vec<String> {
        let url = self.url("/plaintext");
        let mut out = Vec::new();
        match self.tls {
            None => {
                if self.protocols.http1 {
                    out.push(format!("curl {url}"));
                    out.push(format!("wrk -t1 -c64 -d10s {url}"));
                }
                if self.protocols.h2 {
                    if !self.protocols.http1 {
                        out.push(format!("curl --http2-prior-knowledge {url}"));
                    }
                    out.push(format!("h2load -n10000 -c16 -m10 {url}"));
                }
            }
            Some(_) => {
                let curl = match (self.protocols.http1, self.protocols.h2) {
                    (true, true) => "curl -k",
                    (true, false) => "curl -k --http1.1",
                    (false, _) => "curl -k --http2",
                };
                out.push(format!("{curl} {url}"));
                if self.protocols.h2 {
                    out.push(format!("h2load -n10000 -c16 -m10 {url}"));
                }
            }
        }
        out
    }
}

/// The server as started: its listeners and admin address.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The listeners, in configuration order.
    pub listeners: Vec<ListenerView>,
    /// The admin listener, when enabled.
    pub admin: Option<SocketAddr>,
    /// Paths of the fixed routes from the config file.
    pub fixed_routes: Vec<String>,
}

impl Overview {
    /// The `try:` lines printed at start: one per listener, its commands joined by ` | `.
    pub fn hints(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.listeners {
            let mut line = format!("try: {}", l.commands().join(" | "));
            if l.tls == Some(true) {
                line.push_str("  (-k: the development certificate is not trusted)");
            }
            out.push(line);
        }
        if let Some(admin) = self.admin {
            out.push(format!("try: curl http://{admin}/metrics"));
        }
        out
    }

    /// The welcome page served at `/`: what runs, with a command to try for each listener.
    /// Self-contained HTML (no external assets).
    pub fn welcome_page(&self) -> String {
        let mut listeners = String::new();
        for l in &self.listeners {
            let cert = match l.tls {
                None => "",
                Some(true) => {
                    " (self-signed development certificate: clients need <code>-k</code>)"
                }
                Some(false) => " (configured certificates)",
            };
            let _ = writeln!(
                listeners,
                "<li><code>{}</code>: {}{cert}</li>",
                escape(&l.url("")),
                escape(&l.speaks())
            );
        }
        if let Some(admin) = self.admin {
            let _ = writeln!(
                listeners,
                "<li><code>http://{admin}</code>: admin (<code>/metrics</code>, \
                 <code>/healthz</code>, <code>/readyz</code>)</li>"
            );
        }
        let mut commands = String::new();
        for line in self.listeners.iter().flat_map(ListenerView::commands) {
            let _ = writeln!(commands, "{}", escape(&line));
        }
        let mut routes = String::new();
        for path in &self.fixed_routes {
            let _ = writeln!(
                routes,
                "<li><code>{}</code>: a fixed response from the config file</li>",
                escape(path)
            );
        }
        WELCOME_TEMPLATE
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{listeners}}", &listeners)
            .replace("{{commands}}", &commands)
            .replace("{{fixed_routes}}", &routes)
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsSettings;

    fn embedded_default() -> Overview {
        let tls = TlsSettings::from_files("cert.pem", "key.pem");
        let plain: ListenerSpec = SocketAddr::from(([127, 0, 0, 1], 8080)).into();
        let secure = ListenerSpec::tls(SocketAddr::from(([127, 0, 0, 1], 8443)), tls);
        Overview {
            listeners: vec![
                ListenerView::new(plain.address, &plain, false),
                ListenerView::new(secure.address, &secure, true),
            ],
            admin: None,
            fixed_routes: Vec::new(),
        }
    }

    #[test]
    fn embedded_default_hints_cover_both_protocols_on_both_ports() {
        let hints = embedded_default().hints();
        assert_eq!(
            hints,
            [
                "try: curl http://127.0.0.1:8080/plaintext | wrk -t1 -c64 -d10s \
                 http://127.0.0.1:8080/plaintext | h2load -n10000 -c16 -m10 \
                 http://127.0.0.1:8080/plaintext",
                "try: curl -k https://127.0.0.1:8443/plaintext | h2load -n10000 -c16 -m10 \
                 https://127.0.0.1:8443/plaintext  (-k: the development certificate is not \
                 trusted)",
            ]
        );
    }

    #[test]
    fn h2_only_listener_gets_no_http1_commands() {
        let spec = ListenerSpec::from(SocketAddr::from(([127, 0, 0, 1], 9000)))
            .with_protocols(Protocols::H2);
        let overview = Overview {
            listeners: vec![ListenerView::new(spec.address, &spec, false)],
            admin: None,
            fixed_routes: Vec::new(),
        };
        assert_eq!(
            overview.hints(),
            ["try: curl --http2-prior-knowledge http://127.0.0.1:9000/plaintext | h2load \
              -n10000 -c16 -m10 http://127.0.0.1:9000/plaintext"]
        );
    }

    #[test]
    fn welcome_page_lists_what_runs_and_escapes_config_text() {
        let mut overview = embedded_default();
        overview.admin = Some(SocketAddr::from(([127, 0, 0, 1], 9901)));
        overview.fixed_routes = vec!["/a<b>".into()];
        let page = overview.welcome_page();
        assert!(page.contains("HTTP/1.1 and h2c"), "{page}");
        assert!(page.contains("h2 and HTTP/1.1 over TLS, chosen by ALPN"), "{page}");
        assert!(page.contains("h2load -n10000 -c16 -m10 https://127.0.0.1:8443/plaintext"));
        assert!(page.contains("http://127.0.0.1:9901"), "{page}");
        assert!(page.contains("/a&lt;b&gt;") && !page.contains("/a<b>"), "{page}");
        assert!(!page.contains("{{"), "every placeholder filled: {page}");
    }
}
