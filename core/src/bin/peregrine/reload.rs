//! Reloading the config (SIGHUP, or `POST /reload` on the admin listener, which is how it
//! is done on Windows): the config file is read again and built exactly as at start; if
//! any of it fails, nothing changes and the log says why, in the same words a start would.
//!
//! Hosted apps whose settings are unchanged keep running and are restarted without losing a
//! request (what SIGHUP did before reloads); new apps start before the switch (and are
//! stopped again if it fails); apps the config no longer has stop once it is in place.

use std::sync::{Mutex, MutexGuard};

use peregrine::apps::Apps;
use peregrine::routes::WelcomePage;
use peregrine::{ReloadHandle, Server};

use crate::plan::{self, Boot, Plan};
use crate::Cli;

/// What a reload needs besides the config file.
pub(crate) struct Reloader {
    cli: Cli,
    boot: Boot,
    /// The running apps; one reload at a time (the lock is held throughout).
    apps: Mutex<Apps>,
    handle: ReloadHandle,
    admin: Option<std::net::SocketAddr>,
}

impl Reloader {
    pub(crate) fn new(cli: Cli, boot: Boot, apps: Apps, server: &Server) -> Reloader {
        Reloader {
            cli,
            boot,
            apps: Mutex::new(apps),
            handle: server.reload_handle(),
            admin: server.admin_addr(),
        }
    }

    /// The apps running now.
    pub(crate) fn apps(&self) -> MutexGuard<'_, Apps> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the config again and switches the server to it. Logs the outcome, and returns
    /// what to tell an admin client.
    pub(crate) fn reload(&self) -> Result<String, String> {
        let mut apps = self.apps();
        let plan = plan::load_config(&self.cli)
            .and_then(|config| Plan::build(&self.cli, &config, &self.boot))
            .and_then(|plan| {
                let next = apps.reconcile(plan.apps.clone(), &plan.app_forwarding())?;
                Ok((plan, next))
            });
        let (plan, next) = match plan {
            Ok(p) => p,
            Err(e) => {
                self.handle.record_failure();
                tracing::error!(error = %e, "config reload failed; nothing changed");
                return Err(e);
            }
        };
        let welcome = WelcomePage::default();
        match self.handle.reload(plan.server.clone(), plan.factory(&next.apps, &welcome)) {
            Ok(reloaded) => {
                let addrs = self.handle.local_addrs();
                let _ = welcome.set(plan.overview(&addrs, self.admin).welcome_page().into());
                next.kept.restart();
                let removed = next.removed;
                if !removed.is_empty() {
                    // Their graceful stops take time; the reload is done without them.
                    std::thread::spawn(move || removed.stop());
                }
                *apps = next.apps;
                for key in &reloaded.needs_restart {
                    tracing::warn!(key, "config reload: this setting changes on the next start or upgrade (SIGUSR2)");
                }
                tracing::info!(listeners = addrs.len(), "config reloaded");
                Ok(format!("reloaded: {} listeners\n", addrs.len()))
            }
            Err(e) => {
                next.started.stop();
                tracing::error!(error = %e, "config reload failed; nothing changed");
                Err(e.to_string())
            }
        }
    }
}
