//! Shared build script of the crates that link LibTorch (architectures, harness).
//!
//! torch-sys reports where it found libtorch as `DEP_TCH_LIBTORCH_LIB` (its `links = "tch"` key),
//! visible to crates that depend on torch-sys directly. We turn that into
//! * an rpath, so binaries, tests and benches run without LD_LIBRARY_PATH;
//! * `--no-as-needed -ltorch`, so libtorch_cuda stays a DT_NEEDED entry on CUDA wheels even though
//!   no symbol of ours references it (tch-rs issues #907 and #980); without it CUDA is "unavailable";
//! * the torch version, read from `torch/version.py` beside the lib dir, for `membench --version`.
use std::path::Path;

fn main() {
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("membench") {
        git_commit();
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=../torch-link.rs");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=MEMBENCH_TORCH_VERSION=unknown");
        return;
    };
    let lib = Path::new(&lib);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for name in ["torch_cuda", "torch_cpu", "torch", "c10"] {
            if lib.join(format!("lib{name}.so")).exists() {
                println!("cargo:rustc-link-arg=-l{name}");
            }
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let version = std::fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(['\'', '"']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MEMBENCH_TORCH_VERSION={version}");
    match std::env::var("CARGO_PKG_NAME").as_deref() {
        // `peak_device_bytes` reads the caching allocator's own counters.
        Ok("membench") => cpp_shim(lib, &["src/cuda_stats.cpp"], "membench_cuda_stats"),
        // CPU kernels with hand-written backward passes (each file's header says why).
        Ok("membench-architectures") => cpp_shim(
            lib,
            &[
                "src/fused_rnn.cpp",
                "src/onednn_linear.cpp",
                "src/dnc_links.cpp",
                "src/batch_shards.cpp",
                "src/selective_scan.cpp",
                "src/gla_scan.cpp",
                "src/ffi_guard.h",
            ],
            "membench_kernels",
        ),
        _ => {}
    }
}

/// Compiles the C++ sources of the crate (`.cpp`; the `.h` files listed are their headers, watched
/// for changes) against the torch headers beside `lib` into one static library. Always optimised
/// (-O3), also in debug builds: the kernels run inside tests that train models.
fn cpp_shim(lib: &Path, files: &[&str], name: &str) {
    let include = lib.join("../include");
    // Every listed file must exist: cargo treats a missing one as changed and would rerun this
    // script, and rebuild the crate, on every build.
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    cc::Build::new()
        .cpp(true)
        .files(files.iter().filter(|f| f.ends_with(".cpp")))
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        // OpenMP as LibTorch uses it: `at::parallel_for` is inline OpenMP, and `#pragma omp simd`
        // gives vectorised reductions in a fixed lane order. Linked as `libgomp.so.1`, the soname
        // libtorch_cpu itself needs, so at run time one OpenMP runtime (the wheel's, found through
        // the rpath) serves both, with one thread pool.
        .flag("-fopenmp")
        .opt_level(3)
        // No -g (cc would take it from the profile): compiling the torch headers' templates with
        // debug info doubles this step, and a kernel error arrives as its C++ message anyway.
        .debug(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile(name);
    println!("cargo:rustc-link-lib=gomp");
}

/// The commit the binary was built from (`+dirty` when the work tree differed), for runs.csv.
fn git_commit() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // Rebuild when HEAD, the branch it points to or the index moves. Asked of git rather than
    // joined to `.git/`, which in a worktree is a file naming the real git directory.
    // (Only files that exist: cargo reruns a build script every time for a missing one.)
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for f in ["HEAD", "index", "packed-refs"]
        .into_iter()
        .chain(branch.as_deref())
    {
        if let Some(path) = git(&["rev-parse", "--git-path", f]).map(|p| root.join(p)) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=MEMBENCH_GIT_COMMIT={commit}{}",
        if dirty { "+dirty" } else { "" }
    );
}
