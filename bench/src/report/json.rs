//! The machine-readable report (hand-written JSON; no dependencies).

use std::fmt::Write as _;

use super::{IdleRecord, Report, RunRecord, DRIFT_NOTE};
use crate::perf;
use crate::wrk::{Percentiles, PERCENTILE_LEVELS};

impl Report {
    /// The machine-readable report.
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let mut j = String::from("{\n");
        let _ = writeln!(j, "  \"started\": {},", js(&self.started.iso8601()));
        let _ = writeln!(j, "  \"note\": {},", js(DRIFT_NOTE));
        let _ = writeln!(
            j,
            "  \"machine\": {{\"nproc\": {}, \"kernel\": {}, \"cpu_model\": {}}},",
            js(&self.machine.nproc),
            js(&self.machine.kernel),
            self.machine.cpu_model.as_deref().map_or("null".into(), js)
        );
        let perf = match &c.perf {
            perf::Support::Available(_) => "null".to_owned(),
            perf::Support::Unavailable(why) => js(why),
        };
        let _ = writeln!(
            j,
            "  \"config\": {{\"quick\": {}, \"rounds\": {}, \"duration_s\": {}, \
             \"warmup_s\": {}, \"server_cpus\": {}, \"wrk_cpus\": {}, \"pinned\": {}, \
             \"clk_tck\": {}, \"wrk\": {}, \"h2load\": {}, \"openssl\": {}, \
             \"instructions_unavailable\": {perf}, \
             \"idle_connections\": {}, \"nofile_limit\": {}}},",
            c.quick,
            c.rounds,
            c.duration_s,
            c.warmup_s,
            js(&c.server_cpus),
            js(&c.wrk_cpus),
            c.pinned,
            c.clk_tck,
            js(&c.wrk_version),
            c.h2load_version.as_deref().map_or("null".into(), js),
            c.openssl_version.as_deref().map_or("null".into(), js),
            c.idle_connections,
            c.nofile_limit.map_or("null".into(), |n| n.to_string()),
        );
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("{{\"name\": {}, \"version\": {}}}", js(&s.name), js(&s.version)))
            .collect();
        let _ = writeln!(j, "  \"servers\": [{}],", servers.join(", "));
        let notes: Vec<String> = self.notes.iter().map(|n| js(n)).collect();
        let _ = writeln!(j, "  \"notes\": [{}],", notes.join(", "));
        let _ = writeln!(
            j,
            "  \"latency_plot\": {},",
            self.plot_file.as_deref().map_or("null".into(), js)
        );
        let levels: Vec<String> = PERCENTILE_LEVELS.iter().map(|&l| jf(Some(l))).collect();
        let _ = writeln!(j, "  \"percentile_levels\": [{}],", levels.join(", "));

        j.push_str("  \"scenarios\": [\n");
        for (i, s) in self.scenarios.iter().enumerate() {
            let _ = writeln!(j, "    {{");
            let _ = writeln!(
                j,
                "      \"name\": {}, \"description\": {}, \"tool\": {}, \"tls\": {}, \
                 \"connections\": {}, \"pipeline_depth\": {}, \"peer\": {}, \
                 \"target_req_per_cpu_s_ratio\": {},",
                js(s.name),
                js(s.description),
                js(s.load.tool()),
                s.load.tls(),
                s.load.connections(),
                s.load.pipeline_depth(),
                js(s.peer),
                jf(s.target_cpu_ratio)
            );
            let r = self.ratios(s.name);
            let _ = writeln!(
                j,
                "      \"ratio_peregrine_over_peer\": {{\"req_per_s\": {}, \"req_per_cpu_s\": {}, \
                 \"kernel_ceiling\": {}, \"p99\": {}, \"mean_request_time\": {}, \
                 \"instructions_per_req\": {}}},",
                jf(r.and_then(|r| r.req_per_s)),
                jf(r.and_then(|r| r.req_per_cpu_s)),
                jf(r.and_then(|r| r.kernel_ceiling)),
                jf(r.and_then(|r| r.p99)),
                jf(r.and_then(|r| r.mean_request)),
                jf(r.and_then(|r| r.instructions_per_req))
            );
            j.push_str("      \"servers\": {");
            let per_server: Vec<String> = self
                .servers_in(s)
                .into_iter()
                .map(|server| {
                    let body = match self.summary(s.name, &server.name) {
                        Some(m) => format!(
                            "{{\"median_req_per_s\": {}, \"median_req_per_cpu_s\": {}, \
                             \"median_cpu_utilisation\": {}, \"median_kernel_share\": {}, \
                             \"median_latency_us\": {}, \
                             \"median_instructions_per_req\": {}, \
                             \"median_mean_request_us\": {}, \"median_sd_request_us\": {}, \
                             \"max_request_us\": {}, \"median_errors\": {}, \
                             \"errors_total\": {}, \"runs_ok\": {}, \"runs_failed\": {}}}",
                            jf(Some(m.req_per_s)),
                            jf(m.req_per_cpu_s),
                            jf(m.cpu_utilisation),
                            jf(m.kernel_share),
                            jp(&m.latency),
                            jf(m.instructions_per_req),
                            jf(m.mean_request_us),
                            jf(m.sd_request_us),
                            jf(m.max_request_us),
                            jf(Some(m.errors_median)),
                            m.errors_total,
                            m.runs_ok,
                            m.runs_failed
                        ),
                        None => "null".into(),
                    };
                    format!("\n        {}: {body}", js(&server.name))
                })
                .collect();
            j.push_str(&per_server.join(","));
            j.push_str("\n      }\n");
            let _ = writeln!(j, "    }}{}", if i + 1 < self.scenarios.len() { "," } else { "" });
        }
        j.push_str("  ],\n");

        let _ = writeln!(
            j,
            "  \"idle_memory\": {{\"ratio_peregrine_over_nginx\": {}, \"servers\": [{}]}},",
            jf(self.idle_ratio()),
            self.idle.iter().map(idle_json).collect::<Vec<_>>().join(",")
        );

        j.push_str("  \"runs\": [");
        let runs: Vec<String> = self.runs.iter().map(run_json).collect();
        j.push_str(&runs.join(","));
        j.push_str("\n  ]\n}\n");
        j
    }
}

fn run_json(run: &RunRecord) -> String {
    let head = format!(
        "\"round\": {}, \"scenario\": {}, \"server\": {}",
        run.round,
        js(run.scenario),
        js(&run.server)
    );
    match &run.outcome {
        Ok(m) => format!(
            "\n    {{{head}, \"req_per_s\": {}, \"total_requests\": {}, \"elapsed_s\": {}, \
             \"cpu_s\": {}, \"system_s\": {}, \"req_per_cpu_s\": {}, \"latency_us\": {}, \
             \"request_time_us\": {}, \"instructions\": {}, \"instructions_per_req\": {}, \
             \"errors\": {}}}",
            jf(Some(m.req_per_s)),
            m.total_requests,
            jf(Some(m.elapsed_s)),
            jf(Some(m.cpu_s)),
            jf(Some(m.system_s)),
            jf(m.req_per_cpu_s()),
            jp(&m.latency),
            m.request_time.map_or("null".into(), |t| format!(
                "{{\"min\": {}, \"max\": {}, \"mean\": {}, \"sd\": {}}}",
                jf(Some(t.min_us)),
                jf(Some(t.max_us)),
                jf(Some(t.mean_us)),
                jf(Some(t.sd_us))
            )),
            m.instructions.map_or("null".into(), |n| n.to_string()),
            jf(m.instructions_per_request()),
            m.errors
        ),
        Err(e) => format!("\n    {{{head}, \"error\": {}}}", js(e)),
    }
}

fn idle_json(record: &IdleRecord) -> String {
    let head = format!("\"server\": {}, \"path\": {}", js(&record.server), js(record.path));
    match &record.outcome {
        Ok(m) => format!(
            "\n    {{{head}, \"target\": {}, \"opened\": {}, \"open_at_sample\": {}, \
             \"rss_before\": {}, \"rss_after\": {}, \"bytes_per_connection\": {}, \
             \"stopped_by\": {}}}",
            m.target,
            m.opened,
            m.open_at_sample,
            m.rss_before,
            m.rss_after,
            jf(m.bytes_per_connection()),
            m.stopped_by.as_deref().map_or("null".into(), js)
        ),
        Err(e) => format!("\n    {{{head}, \"error\": {}}}", js(e)),
    }
}

/// Percentiles as an object keyed by level: `{"50": 637, ..., "99.9": null}`.
fn jp(p: &Percentiles) -> String {
    let fields: Vec<String> = PERCENTILE_LEVELS
        .iter()
        .zip(p.0)
        .map(|(level, us)| format!("\"{level}\": {}", jf(us)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON number, or `null` for missing/non-finite values. Rounded to 3
/// decimals: more digits than that are noise here.
fn jf(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => {
            let rounded = (x * 1000.0).round() / 1000.0;
            format!("{rounded}")
        }
        _ => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{idle, measurement, report, run};
    use super::super::{NGINX, PEREGRINE};
    use super::*;

    #[test]
    fn json_is_well_formed_enough() {
        let runs = vec![
            run(1, NGINX, Ok(measurement(100.0, 300, 0.0, 0))),
            run(1, PEREGRINE, Err("boom \"quoted\"\n\tline".into())),
        ];
        let mut r = report(runs, &[PEREGRINE, NGINX]);
        r.idle = vec![
            IdleRecord {
                server: PEREGRINE.into(),
                path: "HTTP/1.1",
                outcome: Ok(idle(10, 100, 1100)),
            },
            IdleRecord {
                server: NGINX.into(),
                path: "HTTP/1.1",
                outcome: Err("no \"port\"".into()),
            },
        ];
        let j = r.to_json();
        // Balanced brackets outside strings, and escapes where expected.
        let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
        for c in j.chars() {
            match (in_str, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') | (false, _, '"') => in_str = !in_str,
                (false, _, '{' | '[') => depth += 1,
                (false, _, '}' | ']') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
            assert!(!(in_str && c == '\n'), "raw newline inside a JSON string");
        }
        assert_eq!(depth, 0);
        assert!(!in_str);
        assert!(j.contains(r#""error": "boom \"quoted\"\n\tline""#));
        assert!(j.contains(r#""cpu_model": "Test \"CPU\"""#));
        // Zero CPU time gives no per-CPU rate rather than infinity.
        assert!(j.contains(r#""req_per_cpu_s": null"#));
        assert!(j.contains(
            r#""latency_us": {"50": 500, "75": 700, "90": 900, "99": 1500, "99.9": null}"#
        ));
        assert!(j.contains(r#""bytes_per_connection": 100"#));
        assert!(j.contains(r#""instructions_unavailable": "not supported on this machine""#));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(jf(Some(1.23456)), "1.235");
        assert_eq!(jf(Some(f64::INFINITY)), "null");
        assert_eq!(jf(None), "null");
    }
}
