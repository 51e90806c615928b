//! Issue #10: malformed and hostile experiments files. Each file in `tests/hostile/` starts with
//! `# expect-key: K` and `# expect-line: L` (0: line not checked, e.g. for syntax errors whose
//! position is the parser's guess). Each must give exit 2 quickly, with a message that names the
//! file, a `line:col` (the expected line when given) and the key, and leave the results directory
//! byte-for-byte untouched. Generated cases: a 100 MB file, a directory, a missing file.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn header(text: &str, field: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix(&format!("# {field}: "))).unwrap_or("").trim().to_string()
}

/// Runs `membench sweep FILE --out OUT` and returns (exit code, stderr, seconds).
fn sweep_bad(file: &Path, out: &Path) -> (Option<i32>, String, f64) {
    let t = Instant::now();
    let o = membench(&["sweep", file.to_str().unwrap(), "--out", out.to_str().unwrap()], &[]);
    (o.status.code(), stderr(&o), t.elapsed().as_secs_f64())
}

#[test]
fn hostile_files_are_refused_quickly_with_located_messages() {
    let d = temp_dir("hostile");
    let out = d.join("results");
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::write(out.join("runs.csv"), "run_id,status\nabc,done\n").unwrap();
    let before = dir_digest(&out);

    // Start-up of the binary (dynamic loading of libtorch) is paid by every case; on this shared
    // 2-core machine it alone can take 1-2 s, so the bound is "start-up + 1 s", start-up measured
    // as the slowest of three valid validations.
    let good = write(&d.join("good.yaml"), &tiny_yaml("1", ""));
    let startup = (0..3)
        .map(|_| {
            let t = Instant::now();
            assert!(membench(&["validate", good.to_str().unwrap()], &[]).status.success());
            t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 40, "corpus has {} files", files.len());
    let big = d.join("huge.yaml");
    std::fs::File::create(&big).unwrap().set_len(100 << 20).unwrap();
    let a_dir = d.join("a_directory.yaml");
    std::fs::create_dir_all(&a_dir).unwrap();
    let generated = [(big, "limited to"), (a_dir, "is a directory"), (d.join("missing.yaml"), "cannot read")];

    // Cases run 2 at a time: the corpus is ~60 process start-ups.
    let cases: Vec<(PathBuf, String, usize)> = files
        .iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            (f.clone(), header(&text, "expect-key"), header(&text, "expect-line").parse().unwrap_or(0))
        })
        .chain(generated.iter().map(|(p, m)| (p.clone(), m.to_string(), 1)))
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases.chunks(cases.len().div_ceil(2)).collect();
        let handles: Vec<_> = chunks.into_iter().map(|c| s.spawn(|| c.iter().map(|(f, k, l)| (f, k, l, sweep_bad(f, &out))).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut slowest = 0.0f64;
    for (file, key, line, (code, err, secs)) in &results {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(*code, Some(2), "{name}: expected exit 2, got {code:?}: {err}");
        assert!(err.contains(name), "{name}: message does not name the file: {err}");
        let located = format!("{}:{}:", file.display(), line);
        if **line > 0 {
            assert!(err.contains(&located), "{name}: expected {located} in: {err}");
        } else {
            let after = err.split(name).nth(1).unwrap_or("");
            assert!(after.starts_with(':') && after[1..].split(':').next().unwrap().parse::<usize>().is_ok(), "{name}: no line:col: {err}");
        }
        assert!(err.contains(key.as_str()), "{name}: message does not name `{key}`: {err}");
        slowest = slowest.max(*secs);
        // +1 s of work, +1 s for the contention of running two cases at once on 2 cores.
        assert!(*secs < startup + 1.0 + 1.0, "{name}: took {secs:.2} s (start-up {startup:.2} s)");
    }
    eprintln!("hostile: {} cases, slowest {slowest:.2} s, start-up {startup:.2} s", results.len());
    assert_eq!(dir_digest(&out), before, "results directory changed");
}
