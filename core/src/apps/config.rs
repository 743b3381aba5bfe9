//! `[[app]]`: an application process Peregrine starts, supervises and proxies to (and what
//! `--app "COMMAND"` builds). The defaults are the ASP.NET Core Module's.
//!
//! ```toml
//! [[app]]
//! name = "api"
//! command = "dotnet Api.dll"          # split like a shell would; no shell runs it
//! working_dir = "/srv/api"
//! env = { DOTNET_ENVIRONMENT = "Production" }
//! start = "on_first_request"          # or "at_start"
//! startup_time_limit = "120s"
//! shutdown_time_limit = "10s"
//! rapid_fails_per_minute = 10
//! processes = 1
//! stdout_log = "/var/log/peregrine/api"   # api_20261205093000_4242.log; off when absent
//! ready_path = "/healthz"             # absent: ready once its port accepts connections
//!
//! [[route]]
//! path_prefix = "/"
//! app = "api"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One hosted application.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The name routes, metrics and logs use.
    pub name: String,
    /// The program and its arguments, split as a POSIX shell splits words (quotes and
    /// backslashes work); no shell runs it. On Windows, write paths with `/` or inside
    /// double quotes: an unquoted backslash escapes the next character.
    pub command: String,
    /// More arguments, taken as they are (after those in `command`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The working directory (default: Peregrine's), where `offline_file` is looked for.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables (Peregrine's own environment is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When the app starts: on the first request for it (default) or with Peregrine.
    #[serde(default)]
    pub start: StartMode,
    /// How long a process has to become ready before it is killed and counted as failed.
    #[serde(default = "defaults::startup", with = "humantime_serde")]
    pub startup_time_limit: Duration,
    /// How long a process has after being asked to stop (SIGTERM, Ctrl+Break) before it is
    /// killed.
    #[serde(default = "defaults::shutdown", with = "humantime_serde")]
    pub shutdown_time_limit: Duration,
    /// Failures (crashes and failed starts) allowed in `rapid_fail_window`; past it, no
    /// restart until the window has passed, and requests get 502.
    #[serde(default = "defaults::rapid_fails")]
    pub rapid_fails_per_minute: u32,
    /// The window `rapid_fails_per_minute` counts over: a minute, shorter only for tests.
    #[serde(default = "defaults::minute", with = "humantime_serde")]
    pub rapid_fail_window: Duration,
    /// Processes of the app run at once; requests go round robin across them.
    #[serde(default = "defaults::one")]
    pub processes: u32,
    /// Captures the processes' stdout and stderr to `{stdout_log}_{timestamp}_{pid}.log`.
    /// Absent: not kept, but the last lines of a process that fails are logged by Peregrine.
    pub stdout_log: Option<PathBuf>,
    /// A log file past this size is renamed to `.1` (replacing the previous one) and a new
    /// one started.
    #[serde(default = "defaults::log_size")]
    pub stdout_log_max_size: u64,
    /// How the app is reached: `tcp` (a free loopback port in `PORT`) or `unix` (a socket
    /// path in `PEREGRINE_SOCKET`; Linux).
    #[serde(default)]
    pub listen: AppListen,
    /// A path answering 2xx once the app is ready. Absent: ready once it accepts connections.
    pub ready_path: Option<String>,
    /// While this file exists (default `app_offline.htm` in `working_dir`) the app is stopped
    /// and requests for it get 503 with the file's contents.
    pub offline_file: Option<PathBuf>,
    /// Answer a failed app's requests with a page naming the app, its exit status and its
    /// log (default); `false`: a bare 502, for production.
    #[serde(default = "defaults::yes")]
    pub error_page: bool,
    /// Requests that may wait for the app to start; more get 503 at once.
    #[serde(default = "defaults::queue")]
    pub max_queued_requests: u32,
}

/// When an app starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// On the first request for it; after a crash, on the next request.
    #[default]
    OnFirstRequest,
    /// With Peregrine; after a crash, at once (within the rapid-fail limit).
    AtStart,
}

/// How Peregrine reaches an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppListen {
    /// A free loopback TCP port, passed in `PORT` and `ASPNETCORE_PORT`.
    #[default]
    Tcp,
    /// A Unix socket path, passed in `PEREGRINE_SOCKET`.
    Unix,
}

mod defaults {
    use std::time::Duration;
    pub(super) fn startup() -> Duration {
        Duration::from_secs(120)
    }
    pub(super) fn shutdown() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn minute() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn rapid_fails() -> u32 {
        10
    }
    pub(super) fn one() -> u32 {
        1
    }
    pub(super) fn log_size() -> u64 {
        10 << 20
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn queue() -> u32 {
        1024
    }
}

impl AppConfig {
    /// An app named `name` running `command` with every default (`--app`).
    pub fn from_command(name: &str, command: &str) -> AppConfig {
        AppConfig {
            name: name.into(),
            command: command.into(),
            args: Vec::new(),
            working_dir: None,
            env: BTreeMap::new(),
            start: StartMode::default(),
            startup_time_limit: defaults::startup(),
            shutdown_time_limit: defaults::shutdown(),
            rapid_fails_per_minute: defaults::rapid_fails(),
            rapid_fail_window: defaults::minute(),
            processes: 1,
            stdout_log: None,
            stdout_log_max_size: defaults::log_size(),
            listen: AppListen::default(),
            ready_path: None,
            offline_file: None,
            error_page: true,
            max_queued_requests: defaults::queue(),
        }
    }

    /// The program and its arguments.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let mut words = shell_words::split(&self.command).map_err(|e| format!("command: {e}"))?;
        if words.is_empty() {
            return Err("command: empty".into());
        }
        words.extend(self.args.iter().cloned());
        Ok(words)
    }

    /// The offline file's path.
    pub fn offline_path(&self) -> PathBuf {
        match (&self.offline_file, &self.working_dir) {
            (Some(f), Some(dir)) if f.is_relative() => dir.join(f),
            (Some(f), _) => f.clone(),
            (None, Some(dir)) => dir.join("app_offline.htm"),
            (None, None) => PathBuf::from("app_offline.htm"),
        }
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['"', '\\', '\n']) {
            return Err(format!("name: `{}` is not a usable name", self.name));
        }
        self.argv()?;
        if self.processes == 0 {
            return Err("processes must be at least 1".into());
        }
        if self.startup_time_limit.is_zero() {
            return Err("startup_time_limit must be more than 0".into());
        }
        if self.rapid_fail_window.is_zero() {
            return Err("rapid_fail_window must be more than 0".into());
        }
        if let Some(p) = &self.ready_path {
            if !p.starts_with('/') {
                return Err(format!("ready_path: `{p}` must start with `/`"));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.is_dir() {
                return Err(format!("working_dir: {} is not a directory", dir.display()));
            }
        }
        if cfg!(windows) && self.listen == AppListen::Unix {
            return Err("listen: \"unix\" is not supported on Windows".into());
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(format!("env: `{key}` is not a variable name"));
            }
        }
        Ok(())
    }
}
