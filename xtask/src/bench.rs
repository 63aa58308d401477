//! `cargo xtask bench`: measurements, reported as figures (not pass/fail).
//!
//! Today: push-to-enforced latency, natively with the cgroup connect
//! enforcer; the Cedar compiler at 10,000 users × 1,000 resources; and
//! open+close overhead in the VM under icount. Results go to
//! `target/bench/`.

use std::{fs, process::Command};

use anyhow::{Context, Result};

use crate::{
    Workspace, bootstrap, ebpf, guest,
    process::{run, step},
    vm,
};

pub fn run_all(ws: &Workspace) -> Result<()> {
    bootstrap::ebpf_toolchain(ws)?;
    ebpf::build(ws)?;
    let out = ws.target().join("bench");
    fs::create_dir_all(&out)?;
    step("building release binaries");
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "ward-agent",
            "-p",
            "ward-coordinator",
            "--bins",
        ])
        .current_dir(&ws.root))?;
    step(
        "native: push to enforced (1000 pushes), expiry precision (200 deadlines), memory (100k grants)",
    );
    let json = out.join("push_to_enforced.json");
    run(Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "ward-tests",
            "--test",
            "native",
            "bench::",
        ])
        .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WARD_BENCH_OUT", &json)
        .env("WARD_BENCH_DIR", &out)
        .current_dir(&ws.root))?;
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).context("reading the bench result")?)?;
    let mut md = format!(
        "# ward benchmarks\n\n## Push to enforced\n\n| figure | median | p99 | max | target |\n| --- | --- | --- | --- | --- |\n\
         | push to enforced ({} pushes, native, cgroup connect) | {} µs | {} µs | {} µs | p99 < {} µs |\n",
        report["iterations"],
        report["median_us"],
        report["p99_us"],
        report["max_us"],
        report["target_p99_us"]
    );
    md.push_str(&expiry_and_memory(&out)?);
    md.push_str(&coordinator(ws, &out)?);
    md.push_str(&policy_compile(ws)?);
    md.push_str(&file_open_overhead(ws)?);
    md.push_str(&plot(&out)?);
    fs::write(out.join("report.md"), &md)?;
    report_json(&out)?;
    println!("\n{md}\nwritten to {}", out.join("report.md").display());
    Ok(())
}

/// open+close cost under each condition, in the 6.12 VM under icount.
fn file_open_overhead(ws: &Workspace) -> Result<String> {
    step("file_open overhead: 6.12 VM, one vCPU, -icount shift=0 (time = instructions)");
    let prepared = vm::prepare(ws, "6.12")?;
    let script = format!(
        "{}/ward/tests/kernel --exact bench::file_open_overhead --ignored --nocapture --test-threads=1",
        guest::GUEST_ENV
    );
    let image = guest::pack(ws, &prepared.binaries, &script)?;
    let kernel = prepared.kernels.first().context("no kernel")?;
    let outcome = vm::boot_on(
        ws,
        kernel,
        &image,
        std::time::Duration::from_secs(3600),
        vm::Machine::Icount,
    )?;
    anyhow::ensure!(
        outcome.succeeded(),
        "the benchmark VM failed: {:?}",
        outcome.failure
    );
    let rows: Vec<serde_json::Value> = outcome
        .results
        .lines()
        .filter_map(|l| l.split("BENCH ").nth(1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    fs::write(
        ws.target().join("bench/file_open.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let ns = |cond: &str| {
        rows.iter()
            .find(|r| r["condition"] == cond)
            .and_then(|r| r["ns"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (base, floor) = (ns("baseline"), ns("floor"));
    let floor_cost = floor - base;
    let mut md = format!(
        "\n## open+close overhead (6.12, icount: ns = instructions)\n\n\
         Each figure: median of 3 runs of 20,000 open+close (min–max in the JSON). \
         Baseline, no ward loaded (measured last, when the guest is quiet; first runs after boot: {:.0}): \
         {base:.0} ns/op. Empty LSM program on file_open (the floor): {floor:.0} ns/op, +{:.1}%.\n\n\
         | condition | entries | ns/op | overhead | × floor | target |\n| --- | --- | --- | --- | --- | --- |\n",
        ns("baseline_start"),
        100.0 * floor_cost / base
    );
    for r in rows.iter().filter(|r| r["entries"].is_number()) {
        let v = r["ns"].as_f64().unwrap_or(f64::NAN);
        let cond = r["condition"].as_str().unwrap_or("?");
        let target = match cond {
            "unmanaged" => "≤ 1.2× floor",
            "managed_unprotected" => "≤ 2× floor",
            _ => "≤ 4× floor",
        };
        md.push_str(&format!(
            "| {cond} | {} | {v:.0} | +{:.1}% | {:.2}× | {target} |\n",
            r["entries"],
            100.0 * (v - base) / base,
            (v - base) / floor_cost
        ));
    }
    println!("{md}");
    Ok(md)
}

/// The Cedar compiler: 10,000 users × 1,000 resources × 4 actions, full and
/// after one attribute change.
fn policy_compile(ws: &Workspace) -> Result<String> {
    step("policy compile: 10,000 users x 1,000 resources x 4 actions (5 runs each)");
    let out = Command::new("cargo")
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "ward-policy",
            "--example",
            "compile_bench",
        ])
        .current_dir(&ws.root)
        .output()
        .context("running the compile benchmark")?;
    anyhow::ensure!(
        out.status.success(),
        "compile benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    fs::write(
        ws.target().join("bench/policy_compile.json"),
        serde_json::to_string_pretty(&r)?,
    )?;
    let f = |k: &str, s: &str| r[k][s].as_f64().unwrap_or(f64::NAN);
    Ok(format!(
        "\n## Policy compile ({} users × {} resources × {} actions)\n\n\
         | figure | median | min | max | target |\n| --- | --- | --- | --- | --- |\n\
         | full compile | {:.1} ms | {:.1} ms | {:.1} ms | < 1000 ms |\n\
         | incremental recompile, one attribute changed | {:.2} ms | {:.2} ms | {:.2} ms | < 10 ms |\n\
         | directory diff that finds the change | {:.1} ms | {:.1} ms | {:.1} ms | |\n\n\
         Directory parse (TOML, checked against the schema): {:.0} ms. {} principal classes × {} resource \
         classes; {} Cedar evaluations for the full compile, {} for the last incremental one, which changed {} \
         entries. The table holds {} decisions.\n",
        r["users"],
        r["resources"],
        r["actions"],
        f("full_compile_ms", "median"),
        f("full_compile_ms", "min"),
        f("full_compile_ms", "max"),
        f("incremental_compile_ms", "median"),
        f("incremental_compile_ms", "min"),
        f("incremental_compile_ms", "max"),
        f("directory_diff_ms", "median"),
        f("directory_diff_ms", "min"),
        f("directory_diff_ms", "max"),
        r["directory_parse_ms"].as_f64().unwrap_or(f64::NAN),
        r["principal_classes"],
        r["resource_classes"],
        r["evaluations_full"],
        r["evaluations_incremental"],
        r["entries_changed_incremental"],
        r["decisions"],
    ))
}

/// The coordinator: an auto-approved request until the grantee's connect
/// succeeds, and fan-out to 100 and 1,000 simulated agent streams.
fn coordinator(ws: &Workspace, out: &std::path::Path) -> Result<String> {
    step(
        "coordinator: auto-approved request to enforced (1000), fan-out to 100 and 1,000 agents, approvals/s",
    );
    let pg = crate::postgres::start()?;
    run(Command::new("cargo")
        .env("WARD_TEST_POSTGRES", &pg.url)
        .args([
            "test",
            "--release",
            "-p",
            "ward-tests",
            "--test",
            "native",
            "coordinator::bench",
        ])
        .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WARD_BENCH_DIR", out)
        .current_dir(&ws.root))?;
    let read = |name: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&fs::read_to_string(
            out.join(format!("{name}.json")),
        )?)?)
    };
    let r = read("coordinator_request_to_enforced")?;
    let f = read("coordinator_fan_out")?;
    let ms = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN) / 1000.0;
    let mut md = format!(
        "\n## Coordinator (native, SQLite, one coordinator)\n\n\
         | figure | median | p99 | max | target |\n| --- | --- | --- | --- | --- |\n\
         | auto-approved request to enforced ({} requests, cgroup connect) | {:.2} ms | {:.2} ms | {:.2} ms | p99 < 2 ms (push to enforced) |\n",
        r["n"],
        ms(&r["median_us"]),
        ms(&r["p99_us"]),
        ms(&r["max_us"])
    );
    for n in ["100", "1000"] {
        let a = &f[format!("agents_{n}")];
        md.push_str(&format!(
            "| fan-out: one grant to {n} agent streams (arrival per agent) | {:.1} ms | {:.1} ms | {:.1} ms (all delivered) | |\n",
            ms(&a["median_us"]), ms(&a["p99_us"]), ms(&a["all_delivered_us"])
        ));
    }
    let a = read("coordinator_approvals")?;
    md.push_str(&format!(
        "\nApprovals per second, one reviewer client at a time (each approval one locked transaction): \
         SQLite {:.0}/s; PostgreSQL {:.0}/s (the bench cluster runs with fsync=off).\n",
        a["sqlite"]["approvals_per_second"].as_f64().unwrap_or(f64::NAN),
        a["postgres"]["approvals_per_second"].as_f64().unwrap_or(f64::NAN),
    ));
    drop(pg);
    Ok(md)
}

fn read_json(out: &std::path::Path, name: &str) -> Result<serde_json::Value> {
    let path = out.join(format!("{name}.json"));
    serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

fn expiry_and_memory(out: &std::path::Path) -> Result<String> {
    let e = read_json(out, "expiry_precision")?;
    let m = read_json(out, "memory")?;
    let us = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN) / 1024.0;
    Ok(format!(
        "\n## Expiry precision (native, cgroup connect; {} grants, staggered deadlines)\n\n\
         | figure | median | p99 | max | target |\n| --- | --- | --- | --- | --- |\n\
         | first denied connect after expires_at | {} µs | {} µs | {} µs | < 1000 µs |\n\n\
         Probes run every 50 µs from 2 ms before the deadline, so the figures include up to one probe \
         interval. {} probes still got through after a deadline, at most {} µs after it: the wall-clock \
         deadline is turned into a boot-clock one at push time, which is exact only to tens of µs.\n\
         \n## Memory\n\n| figure | value | target |\n| --- | --- | --- |\n\
         | wardd RSS, idle | {:.1} MiB | < 30 MiB |\n\
         | wardd RSS with {} grants | {:.1} MiB | < 100 MiB |\n\
         | kernel memory per table entry (map memlock delta / entries) | {:.0} bytes | |\n",
        e["n"],
        us(&e["median_us"]),
        us(&e["p99_us"]),
        us(&e["max_us"]),
        e["allowed_after_deadline"],
        e["latest_allowed_after_deadline_us"],
        mib(&m["rss_idle_kib"]),
        m["grants"],
        mib(&m["rss_with_grants_kib"]),
        m["kernel_bytes_per_entry"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Every figure of this run in one JSON document.
fn report_json(out: &std::path::Path) -> Result<()> {
    let mut all = serde_json::Map::new();
    for name in [
        "push_to_enforced",
        "expiry_precision",
        "memory",
        "coordinator_request_to_enforced",
        "coordinator_fan_out",
        "coordinator_approvals",
        "policy_compile",
        "file_open",
    ] {
        if let Ok(v) = read_json(out, name) {
            all.insert(name.into(), v);
        }
    }
    fs::write(out.join("report.json"), serde_json::to_string_pretty(&all)?)?;
    Ok(())
}

/// An SVG of open+close overhead against table size, per condition.
fn plot(out: &std::path::Path) -> Result<String> {
    let rows: Vec<serde_json::Value> = serde_json::from_value(read_json(out, "file_open")?)?;
    let ns = |cond: &str, entries: Option<u64>| {
        rows.iter()
            .find(|r| {
                r["condition"] == cond && (entries.is_none() || r["entries"].as_u64() == entries)
            })
            .and_then(|r| r["ns"].as_f64())
    };
    let base = ns("baseline", None).unwrap_or(f64::NAN);
    let floor = ns("floor", None).map(|f| 100.0 * (f - base) / base);
    let sizes = [0u64, 1_000, 100_000];
    let conds = ["unmanaged", "managed_unprotected", "managed_granted"];
    let colors = ["#1b9e77", "#d95f02", "#7570b3"];
    let points: Vec<Vec<(u64, f64)>> = conds
        .iter()
        .map(|c| {
            sizes
                .iter()
                .filter_map(|s| ns(c, Some(*s)).map(|v| (*s, 100.0 * (v - base) / base)))
                .collect()
        })
        .collect();
    let ymax = points
        .iter()
        .flatten()
        .map(|p| p.1)
        .chain(floor)
        .fold(1.0_f64, f64::max)
        * 1.2;
    let (w, h, left, bottom) = (640.0, 360.0, 60.0, 40.0);
    let x = |i: usize| left + (i as f64 + 0.5) * (w - left - 20.0) / sizes.len() as f64;
    let y = |v: f64| h - bottom - v / ymax * (h - bottom - 20.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"14\">open+close overhead vs table size (6.12, icount; % over no ward)</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - 20.0,
        h - bottom,
        h - bottom
    );
    for (i, s) in sizes.iter().enumerate() {
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{s} entries</text>\n",
            x(i),
            h - bottom + 16.0
        );
    }
    for t in 0..=4 {
        let v = ymax * t as f64 / 4.0;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}%</text>\n",
            left - 6.0,
            y(v) + 4.0
        );
    }
    if let Some(f) = floor {
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\n\
             <text x=\"{1}\" y=\"{2}\" text-anchor=\"end\" fill=\"gray\">floor (empty LSM program) {f:.1}%</text>\n",
            y(f),
            w - 20.0,
            y(f) - 4.0
        );
    }
    for ((c, color), pts) in conds.iter().zip(colors).zip(&points) {
        let path: Vec<String> = pts
            .iter()
            .map(|(s, v)| {
                let i = sizes.iter().position(|z| z == s).unwrap_or(0);
                format!("{:.1},{:.1}", x(i), y(*v))
            })
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        if let Some(last) = path.last() {
            let (lx, ly) = last.split_once(',').unwrap_or(("0", "0"));
            svg += &format!("<text x=\"{lx}\" y=\"{ly}\" dx=\"6\" fill=\"{color}\">{c}</text>\n");
        }
    }
    svg += "</svg>\n";
    fs::write(out.join("overhead.svg"), svg)?;
    Ok("\n![open+close overhead against table size](overhead.svg)\n".into())
}
