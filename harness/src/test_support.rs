//! Helpers shared by the unit tests of this crate (the integration tests have `tests/common`).

use std::path::PathBuf;

/// An empty scratch directory for one unit test: `<tmp>/membench-unit-<name>-<pid>`, removed
/// first if a crashed earlier run left it behind. The test removes it when done.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("membench-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
