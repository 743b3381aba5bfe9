//! `seccomp-run`: runs a command under a seccomp filter, so that what Peregrine does under a
//! container runtime's seccomp profile can be tested on a bare machine, with no container
//! engine.
//!
//! ```text
//! seccomp-run [--profile FILE] [--] COMMAND [ARG]...
//! ```
//!
//! - Without `--profile`, every syscall is allowed except `io_uring_setup`, `io_uring_enter`
//!   and `io_uring_register`, which fail with `EPERM`. That is what the default profiles of
//!   Docker (Engine 25 and later) and containerd (2.0 and later) do to io_uring: they leave it
//!   off their allow lists, and their default action is `EPERM`. Peregrine's `--io auto` must
//!   then fall back to epoll by itself.
//! - With `--profile FILE`, it enforces a seccomp profile in the JSON format of Docker and of
//!   the OCI runtime spec (containerd, CRI-O, Kubernetes `Localhost` profiles), such as
//!   `deploy/seccomp/peregrine-io-uring.json`. See [`Profile`] for the subset understood.
//!
//! The filter is installed on this process (with `no_new_privs`, which seccomp requires of a
//! caller without `CAP_SYS_ADMIN`) and stays in force across the `execve` of COMMAND, which
//! replaces this process: COMMAND gets this process's id, standard streams and signals.
//!
//! Exit status: COMMAND's own; 2 for a usage error or a bad profile; 1 when the filter cannot
//! be installed; 127 when COMMAND cannot be executed.
#![forbid(unsafe_code)]

use std::process::ExitCode;

/// Syscalls blocked without `--profile`: all of io_uring.
const IO_URING_SYSCALLS: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// `EPERM`: what a runtime's default profile answers for a syscall it does not allow.
const EPERM: u32 = 1;

const USAGE: &str = "usage: seccomp-run [--profile FILE] [--] COMMAND [ARG]...

Runs COMMAND under a seccomp filter. Without --profile, io_uring_setup, io_uring_enter and
io_uring_register fail with EPERM (as under Docker's and containerd's default profiles) and
every other syscall is allowed. With --profile FILE, enforces that Docker/OCI seccomp profile
(JSON).";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let mut profile_path = None;
    while let Some(arg) = args.peek() {
        match arg.to_str() {
            Some("--") => {
                args.next();
                break;
            }
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--profile") => {
                args.next();
                match args.next() {
                    Some(path) => profile_path = Some(path),
                    None => return usage("--profile needs a FILE"),
                }
            }
            Some(s) if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            _ => break,
        }
    }
    let Some(command) = args.next() else {
        return usage("no COMMAND given");
    };

    let profile = match &profile_path {
        None => Profile::block_io_uring(),
        Some(path) => {
            let loaded = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| Profile::parse(&text));
            match loaded {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("seccomp-run: {}: {e}", path.to_string_lossy());
                    return ExitCode::from(2);
                }
            }
        }
    };
    if let Err(e) = sys::install(&profile) {
        eprintln!("seccomp-run: cannot install the seccomp filter: {e}");
        return ExitCode::FAILURE;
    }
    let error = sys::exec(&command, args);
    eprintln!("seccomp-run: cannot execute {}: {error}", command.to_string_lossy());
    ExitCode::from(127)
}

fn usage(message: &str) -> ExitCode {
    eprintln!("seccomp-run: {message}\n{USAGE}");
    ExitCode::from(2)
}

/// What a rule (or the default) does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// `SCMP_ACT_ALLOW`.
    Allow,
    /// `SCMP_ACT_ERRNO`: the syscall fails with this errno without running.
    Errno(u32),
}

/// One argument comparison of a rule (`args` in the profile); all of a rule's comparisons
/// must hold for it to match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArgCmp {
    index: u8,
    /// The seccompiler operator: `"eq"`, `"ne"`, `"lt"`, `"le"`, `"gt"`, `"ge"`, or
    /// `{"masked_eq": mask}`.
    op: serde_json::Value,
    value: u64,
}

/// A rule: these syscalls, when the argument comparisons hold (always, if there are none),
/// get this action.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    names: Vec<String>,
    action: Action,
    args: Vec<ArgCmp>,
}

/// A seccomp profile: a default action and rules.
///
/// Understood from the Docker / OCI JSON format: `defaultAction` and a rule's `action`
/// (`SCMP_ACT_ALLOW` or `SCMP_ACT_ERRNO`), `defaultErrnoRet` and `errnoRet` (default `EPERM`),
/// `names`, `args` (`index`, `value`, `valueTwo`, `op`: `SCMP_CMP_EQ`, `_NE`, `_LT`, `_LE`,
/// `_GT`, `_GE`, `_MASKED_EQ`) and `comment`. `architectures` and `archMap` are read but only
/// the native architecture is filtered (syscalls of other ABIs are refused). Anything else
/// (other actions, `includes`/`excludes`, `flags`) is an error rather than silently ignored,
/// so a profile that passes here means what it says. Syscall names unknown on this
/// architecture are skipped, as Docker and runc do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Profile {
    default: Action,
    rules: Vec<Rule>,
}

impl Profile {
    /// Everything allowed but io_uring, which fails with `EPERM`.
    fn block_io_uring() -> Profile {
        Profile {
            default: Action::Allow,
            rules: vec![Rule {
                names: IO_URING_SYSCALLS.iter().map(|s| s.to_string()).collect(),
                action: Action::Errno(EPERM),
                args: Vec::new(),
            }],
        }
    }

    /// Parses a Docker / OCI seccomp profile.
    fn parse(text: &str) -> Result<Profile, String> {
        use serde_json::Value;
        let json: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let top = json.as_object().ok_or("the profile must be a JSON object")?;
        for key in top.keys() {
            if !["defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls"]
                .contains(&key.as_str())
            {
                return Err(format!("unsupported key {key:?}"));
            }
        }
        let default = action(top.get("defaultAction"), top.get("defaultErrnoRet"))
            .map_err(|e| format!("defaultAction: {e}"))?;
        let mut rules = Vec::new();
        let syscalls = match top.get("syscalls") {
            None => &Vec::new(),
            Some(v) => v.as_array().ok_or("syscalls: must be an array")?,
        };
        for (i, rule) in syscalls.iter().enumerate() {
            let rule = parse_rule(rule).map_err(|e| format!("syscalls[{i}]: {e}"))?;
            rules.push(rule);
        }
        Ok(Profile { default, rules })
    }
}

fn parse_rule(rule: &serde_json::Value) -> Result<Rule, String> {
    let rule = rule.as_object().ok_or("must be an object")?;
    for key in rule.keys() {
        if !["names", "action", "errnoRet", "args", "comment"].contains(&key.as_str()) {
            return Err(format!("unsupported key {key:?}"));
        }
    }
    let names = rule
        .get("names")
        .and_then(|v| v.as_array())
        .ok_or("names: must be an array of syscall names")?
        .iter()
        .map(|n| n.as_str().map(str::to_string).ok_or("names: must be strings"))
        .collect::<Result<Vec<_>, _>>()?;
    let action = action(rule.get("action"), rule.get("errnoRet"))?;
    let mut args = Vec::new();
    if let Some(list) = rule.get("args").filter(|v| !v.is_null()) {
        for arg in list.as_array().ok_or("args: must be an array")? {
            args.push(parse_arg(arg)?);
        }
    }
    Ok(Rule { names, action, args })
}

fn parse_arg(arg: &serde_json::Value) -> Result<ArgCmp, String> {
    let number = |key: &str| arg.get(key).and_then(|v| v.as_u64());
    let index = number("index")
        .and_then(|i| u8::try_from(i).ok())
        .filter(|&i| i <= 5)
        .ok_or("args: index must be 0 to 5")?;
    let value = number("value").ok_or("args: value must be an unsigned integer")?;
    let value_two = number("valueTwo").unwrap_or(0);
    let op = arg.get("op").and_then(|v| v.as_str()).ok_or("args: op must be a string")?;
    // libseccomp's SCMP_CMP_MASKED_EQ is `(arg & value) == valueTwo`: seccompiler's
    // `masked_eq` takes the mask and compares with `val`.
    let (op, value) = match op {
        "SCMP_CMP_EQ" => ("eq".into(), value),
        "SCMP_CMP_NE" => ("ne".into(), value),
        "SCMP_CMP_LT" => ("lt".into(), value),
        "SCMP_CMP_LE" => ("le".into(), value),
        "SCMP_CMP_GT" => ("gt".into(), value),
        "SCMP_CMP_GE" => ("ge".into(), value),
        "SCMP_CMP_MASKED_EQ" => (serde_json::json!({ "masked_eq": value }), value_two),
        other => return Err(format!("args: unsupported op {other:?}")),
    };
    Ok(ArgCmp { index, op, value })
}

fn action(
    action: Option<&serde_json::Value>,
    errno: Option<&serde_json::Value>,
) -> Result<Action, String> {
    match action.and_then(|v| v.as_str()) {
        Some("SCMP_ACT_ALLOW") => Ok(Action::Allow),
        Some("SCMP_ACT_ERRNO") => match errno {
            None => Ok(Action::Errno(EPERM)),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Action::Errno)
                .ok_or_else(|| format!("bad errno {v}")),
        },
        Some(other) => Err(format!("unsupported action {other:?}")),
        None => Err("missing action".into()),
    }
}

#[cfg(target_os = "linux")]
mod sys {
    //! Compiling a [`Profile`] to BPF with seccompiler, installing it, and `execve`.
    //!
    //! A seccompiler filter has one action for a match and one for a miss, while a profile
    //! may have several (allow most, ENOSYS for `clone3`, the default for the rest). So each
    //! action a profile's rules use becomes a filter of its own, and they are stacked: the
    //! kernel runs every installed filter and keeps the result of highest precedence (an
    //! errno beats allow).
    //!
    //! - One filter per errno a rule asks for: a match gets that errno, a miss is allowed
    //!   (it defers to the other filters).
    //! - Last, when the default is an errno: the allow list, whose miss gets the default.
    //!   It also matches (allows) what the errno rules match, so that their errno, not the
    //!   default's, is what wins. It goes last because once it is in force, the `prctl` and
    //!   `seccomp` calls that install a filter are themselves refused.

    use std::collections::{BTreeMap, BTreeSet};
    use std::ffi::OsString;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use seccompiler::{BpfProgram, TargetArch};
    use serde_json::{json, Value};

    use super::{Action, Profile};

    fn action_json(action: Action) -> Value {
        match action {
            Action::Allow => json!("allow"),
            Action::Errno(n) => json!({ "errno": n }),
        }
    }

    /// Compiles one seccompiler filter from its JSON form.
    fn compile(
        arch: TargetArch,
        mismatch: Action,
        matched: Action,
        rules: Value,
    ) -> Result<BpfProgram, String> {
        let doc = json!({
            "filter": {
                "mismatch_action": action_json(mismatch),
                "match_action": action_json(matched),
                "filter": rules,
            }
        });
        let mut map = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch)
            .map_err(|e| e.to_string())?;
        map.remove("filter").ok_or_else(|| "seccompiler returned no filter".into())
    }

    /// Whether seccompiler knows `name` as a syscall of `arch`.
    fn known(arch: TargetArch, name: &str) -> bool {
        compile(arch, Action::Allow, Action::Errno(1), json!([{ "syscall": name }])).is_ok()
    }

    /// The filters for `profile`, in installation order.
    pub(super) fn filters(profile: &Profile) -> Result<Vec<BpfProgram>, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        // For each action other than the default: syscall name -> its rules' conditions
        // (`None` once any rule for it has none: it then matches whatever the arguments).
        let mut by_action: BTreeMap<Action, BTreeMap<&str, Option<Vec<Value>>>> = BTreeMap::new();
        let mut unknown = BTreeSet::new();
        for rule in profile.rules.iter().filter(|r| r.action != profile.default) {
            let conditions: Vec<Value> = rule
                .args
                .iter()
                .map(|a| json!({ "index": a.index, "type": "qword", "op": a.op, "val": a.value }))
                .collect();
            for name in &rule.names {
                if unknown.contains(name.as_str()) {
                    continue;
                }
                let names = by_action.entry(rule.action).or_default();
                if !names.contains_key(name.as_str()) && !known(arch, name) {
                    unknown.insert(name.as_str());
                    continue;
                }
                match names.entry(name).or_insert_with(|| Some(Vec::new())) {
                    Some(rules) if !conditions.is_empty() => {
                        rules.push(Value::Array(conditions.clone()))
                    }
                    slot => *slot = None,
                }
            }
        }
        if !unknown.is_empty() {
            let list: Vec<_> = unknown.into_iter().collect();
            eprintln!("seccomp-run: not syscalls on {arch:?}, skipped: {}", list.join(" "));
        }
        let mut allowed = by_action.remove(&Action::Allow).unwrap_or_default();
        let mut filters = Vec::new();
        for (action, names) in by_action {
            for (&name, conditions) in &names {
                match (allowed.entry(name).or_insert_with(|| Some(Vec::new())), conditions) {
                    (Some(all), Some(these)) => all.extend(these.iter().cloned()),
                    (slot, _) => *slot = None,
                }
            }
            filters.push(compile(arch, Action::Allow, action, rules_json(names))?);
        }
        if let Action::Errno(_) = profile.default {
            // Even if empty: then everything gets the default action.
            filters.push(compile(arch, profile.default, Action::Allow, rules_json(allowed))?);
        }
        Ok(filters)
    }

    fn rules_json(names: BTreeMap<&str, Option<Vec<Value>>>) -> Value {
        let mut rules = Vec::new();
        for (name, conditions) in names {
            match conditions {
                None => rules.push(json!({ "syscall": name })),
                Some(list) => {
                    for args in list {
                        rules.push(json!({ "syscall": name, "args": args }));
                    }
                }
            }
        }
        Value::Array(rules)
    }

    /// Installs `profile` on the calling thread (this program has no other).
    pub(super) fn install(profile: &Profile) -> Result<(), String> {
        for filter in filters(profile)? {
            seccompiler::apply_filter(&filter).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Replaces this process with `command`; returns only on failure.
    pub(super) fn exec(command: &OsString, args: impl Iterator<Item = OsString>) -> std::io::Error {
        Command::new(command).args(args).exec()
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! seccomp is Linux-only.
    use std::ffi::OsString;

    use super::Profile;

    pub(super) fn install(_: &Profile) -> Result<(), String> {
        Err("seccomp exists only on Linux".into())
    }

    pub(super) fn exec(_: &OsString, _: impl Iterator<Item = OsString>) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "not on Linux")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_format() {
        let p = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [
                  {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
                  {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                             "op": "SCMP_CMP_MASKED_EQ"}]},
                  {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
        )
        .unwrap();
        assert_eq!(p.default, Action::Errno(1));
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].names, ["read", "write"]);
        assert_eq!(p.rules[1].args[0].op, serde_json::json!({"masked_eq": 2114060288u64}));
        assert_eq!(p.rules[1].args[0].value, 0);
        assert_eq!(p.rules[2].action, Action::Errno(38));
    }

    #[test]
    fn rejects_what_it_would_misread() {
        for bad in [
            r#"{"defaultAction": "SCMP_ACT_KILL"}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "flags": []}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        ] {
            assert!(Profile::parse(bad).is_err(), "accepted {bad}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn compiles_stacked_filters() {
        let allow_then_errno = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
        )
        .unwrap();
        assert_eq!(sys::filters(&allow_then_errno).unwrap().len(), 2);
        assert_eq!(sys::filters(&Profile::block_io_uring()).unwrap().len(), 1);
    }
}
