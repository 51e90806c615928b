//! Issue #10: malformed and hostile experiments files. Each file in `tests/hostile/` starts with
//! `# expect-key: K` and `# expect-line: L` (0: line not checked, e.g. for syntax errors whose
//! position is the parser's guess). Each must give exit 2 quickly, with a message that names the
//! file, a `line:col` (the expected line when given) and the key, and leave the results directory
//! byte-for-byte untouched. Generated cases: a 100 MB file, a directory, a missing file.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn header(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {field}: ")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// What one refused case cost: exit code, stderr, wall seconds, CPU seconds, peak RSS (KiB).
struct Cost {
    code: Option<i32>,
    err: String,
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
}

/// Runs `membench sweep FILE --out OUT` and reaps it with wait4 to get its own CPU time and peak
/// memory: on a shared machine wall time mostly measures the neighbours.
fn sweep_bad(file: &Path, out: &Path) -> Cost {
    cost(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also returns its rusage
fn cost(args: &[&str]) -> Cost {
    use std::io::Read;
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let (mut status, mut ru): (i32, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: wait4 on our own child, writing into locals.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(rc, child.id() as i32);
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Cost {
        code,
        err,
        wall: t.elapsed().as_secs_f64(),
        cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss,
    }
}

#[test]
fn hostile_files_are_refused_quickly_with_located_messages() {
    let d = temp_dir("hostile");
    let out = d.join("results");
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::write(out.join("runs.csv"), "run_id,status\nabc,done\n").unwrap();
    let before = dir_digest(&out);

    // Every case pays the start-up of the binary (dynamic loading of libtorch: ~0.4 s of CPU,
    // ~470 MB peak RSS). The bounds: CPU time under start-up + 1 s, peak RSS under start-up +
    // 64 MiB, and a loose wall-clock bound that only catches hangs (neighbours share the cores).
    let good = write(&d.join("good.yaml"), &tiny_yaml("1", ""));
    let base = cost(&["validate", good.to_str().unwrap()]);
    assert_eq!(base.code, Some(0), "{}", base.err);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "corpus has {} files", files.len());
    let big = d.join("huge.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let a_dir = d.join("a_directory.yaml");
    std::fs::create_dir_all(&a_dir).unwrap();
    let generated = [
        (big, "limited to"),
        (a_dir, "is a directory"),
        (d.join("missing.yaml"), "cannot read"),
    ];

    // Cases run 3 at a time: the corpus is ~60 process start-ups.
    let cases: Vec<(PathBuf, String, usize)> = files
        .iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            (
                f.clone(),
                header(&text, "expect-key"),
                header(&text, "expect-line").parse().unwrap_or(0),
            )
        })
        .chain(generated.iter().map(|(p, m)| (p.clone(), m.to_string(), 1)))
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases.chunks(cases.len().div_ceil(3)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                s.spawn(|| {
                    c.iter()
                        .map(|(f, k, l)| (f, k, l, sweep_bad(f, &out)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let (mut max_cpu, mut max_wall, mut max_rss) = (0.0f64, 0.0f64, 0i64);
    for (file, key, line, c) in &results {
        let (code, err) = (c.code, &c.err);
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            code,
            Some(2),
            "{name}: expected exit 2, got {code:?}: {err}"
        );
        assert!(
            err.contains(name),
            "{name}: message does not name the file: {err}"
        );
        let located = format!("{}:{}:", file.display(), line);
        if **line > 0 {
            assert!(
                err.contains(&located),
                "{name}: expected {located} in: {err}"
            );
        } else {
            let after = err.split(name).nth(1).unwrap_or("");
            assert!(
                after.starts_with(':')
                    && after[1..]
                        .split(':')
                        .next()
                        .unwrap()
                        .parse::<usize>()
                        .is_ok(),
                "{name}: no line:col: {err}"
            );
        }
        assert!(
            err.contains(key.as_str()),
            "{name}: message does not name `{key}`: {err}"
        );
        assert!(
            c.cpu < base.cpu + 1.0,
            "{name}: {:.2} s of CPU (start-up {:.2} s)",
            c.cpu,
            base.cpu
        );
        assert!(
            c.max_rss_kib < base.max_rss_kib + 64 * 1024,
            "{name}: peak RSS {} KiB (start-up {} KiB)",
            c.max_rss_kib,
            base.max_rss_kib
        );
        assert!(c.wall < 20.0, "{name}: {:.1} s wall: a hang?", c.wall);
        (max_cpu, max_wall, max_rss) = (
            max_cpu.max(c.cpu),
            max_wall.max(c.wall),
            max_rss.max(c.max_rss_kib),
        );
    }
    eprintln!(
        "hostile: {} cases; max CPU {max_cpu:.2} s (start-up {:.2} s), max wall {max_wall:.2} s, max RSS {} MiB (start-up {} MiB)",
        results.len(),
        base.cpu,
        max_rss / 1024,
        base.max_rss_kib / 1024
    );
    assert_eq!(dir_digest(&out), before, "results directory changed");
}

/// Issue #27: `validate` reports every mistake of a file in one pass, in file order, each at its
/// file:line:col — in the defaults, in every experiment, and several in each section (task, arch,
/// train, the experiment's own keys, its grid), unknown keys, wrong types and impossible values
/// alike — and exits 2. The expected list is each file's `# expect-all: LINE:COL KEY` lines:
/// `every_mistake_at_once` mixes every kind of mistake; `impossible_values_at_once` has several
/// impossible values in each task and arch section, in the defaults, over them and in a grid.
#[test]
fn validate_reports_every_mistake_in_one_pass() {
    for (name, least) in [
        ("every_mistake_at_once.yaml", 20),
        ("impossible_values_at_once.yaml", 14),
    ] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/hostile")
            .join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect-all: "))
            .map(|l| l.trim().to_string())
            .collect();
        assert!(expected.len() >= least, "{name}: {expected:?}");
        let o = membench(&["validate", file.to_str().unwrap()], &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        // Each line is `FILE:LINE:COL: KEY: message` (the first prefixed with `membench: `).
        let prefix = format!("{}:", file.display());
        let found: Vec<String> = err
            .lines()
            .map(|l| {
                let rest = l.split_once(&prefix).map_or("", |(_, r)| r);
                let mut parts = rest.splitn(4, ':');
                let (line, col, key) = (parts.next(), parts.next(), parts.next());
                format!(
                    "{}:{} {}",
                    line.unwrap_or("?"),
                    col.unwrap_or("?"),
                    key.unwrap_or("?").trim()
                )
            })
            .collect();
        assert_eq!(found, expected, "{name}: {err}");
    }
}
