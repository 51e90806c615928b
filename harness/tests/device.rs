//! Device selection end to end: `device: auto` resolves on the sweeping machine and lands in the
//! row; a named CUDA device on a machine without one fails that run with the reason, not the sweep.

use std::process::Command;

fn sweep(dir: &std::path::Path, device: &str) -> Vec<std::collections::HashMap<String, String>> {
    let yaml = dir.join(format!("{}.yaml", device.replace(':', "_")));
    std::fs::write(
        &yaml,
        format!(
            "defaults:\n  device: {device}\nexperiments:\n  - name: d\n    task: {{name: copy, bits: 4, max_len: 3}}\n    arch: {{name: lstm, hidden_size: 8}}\n    train: {{steps: 5, eval_interval: 5, test_batches: 1, valid_batches: 1}}\n"
        ),
    )
    .unwrap();
    let out = dir.join(format!("out-{}", device.replace(':', "_")));
    let status = Command::new(env!("CARGO_BIN_EXE_membench"))
        .args([
            "sweep",
            yaml.to_str().unwrap(),
            "--jobs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "a failed run must not fail the sweep");
    csv::Reader::from_path(out.join("runs.csv"))
        .unwrap()
        .deserialize()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn auto_resolves_here_and_a_missing_gpu_fails_only_the_run() {
    let dir = std::env::temp_dir().join(format!("membench-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cuda = Command::new(env!("CARGO_BIN_EXE_membench"))
        .arg("--version")
        .output()
        .unwrap();
    let cuda_here = String::from_utf8_lossy(&cuda.stdout).contains("cuda yes");

    let auto = sweep(&dir, "auto");
    assert_eq!(auto[0]["status"], "done");
    assert_eq!(auto[0]["device"], if cuda_here { "cuda:0" } else { "cpu" });

    let gpu = sweep(&dir, "cuda:0");
    if cuda_here {
        assert_eq!(gpu[0]["status"], "done");
        assert!(gpu[0]["peak_device_bytes"].parse::<u64>().unwrap() > 0);
    } else {
        assert_eq!(gpu[0]["status"], "failed");
        assert!(
            gpu[0]["reason"].contains("CUDA is not usable"),
            "{}",
            gpu[0]["reason"]
        );
        // A CUDA run is a different run from the CPU one.
        assert_ne!(gpu[0]["run_id"], auto[0]["run_id"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
