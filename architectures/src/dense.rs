//! Dense (fully connected) layers: `x·Wᵀ + b` with the fastest float32 GEMM this CPU can run.
//!
//! The parameters are tch's `nn::Linear` (same names, shapes and initialisation); only the product
//! is routed. Two GEMM paths exist for float32 products on the CPU ([`GemmPath`]), chosen once per
//! process by [`gemm_path`]:
//! - **oneDNN** (`onednn_linear.cpp`, ~2.3× libtorch's MKL path on AVX-512 AMD cores, on par on
//!   Intel), used for products of at least [`ONEDNN_MIN_MACS`] multiply-adds, where oneDNN's
//!   per-call set-up (~10 µs) costs less than it saves. ATen's entry to it refuses float32 on
//!   CPUs without AVX-512 BW/VL/DQ or AVX-NE-CONVERT, so it is only used after a probe product
//!   succeeded in this process.
//! - **libtorch**, the portable path: libtorch's public `linear`/`matmul` (MKL or its own kernels,
//!   dispatched by libtorch on the CPU it finds). Every product goes here when the probe fails or
//!   [`GEMM_ENV`]` = libtorch` forces it; small products, other dtypes and CUDA always do.
//!
//! The two paths group float32 sums differently, so a run records its path (runs.csv `gemm_path`).

use crate::kernels;
use std::sync::OnceLock;
use tch::{nn, Device, Kind, Tensor};

/// Below this many multiply-adds per call, libtorch's own GEMM is used (measured on the bench
/// shapes: oneDNN's set-up is ~10 µs a call, i.e. the time MKL needs for ~0.5 M multiply-adds).
pub const ONEDNN_MIN_MACS: i64 = 1 << 20;

/// The environment variable that chooses the GEMM path: `auto` (the default: oneDNN when its
/// probe succeeds here, else libtorch), `libtorch` (force the portable path, e.g. to run on an
/// AVX-512 machine what a machine without it runs) or `onednn` (require it: an error where the
/// probe fails).
pub const GEMM_ENV: &str = "MEMBENCH_GEMM";

/// Which GEMM a process's float32 CPU products of at least [`ONEDNN_MIN_MACS`] go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    Onednn,
    Libtorch,
}

impl GemmPath {
    /// The name runs.csv, `--version` and [`GEMM_ENV`] use.
    pub fn as_str(self) -> &'static str {
        match self {
            GemmPath::Onednn => "onednn",
            GemmPath::Libtorch => "libtorch",
        }
    }

    pub fn parse(s: &str) -> Option<GemmPath> {
        match s {
            "onednn" => Some(GemmPath::Onednn),
            "libtorch" => Some(GemmPath::Libtorch),
            _ => None,
        }
    }
}

/// How this process chose its GEMM path: the path, and why.
#[derive(Debug, Clone)]
pub struct GemmChoice {
    pub path: GemmPath,
    /// `auto`, `forced` (by [`GEMM_ENV`]).
    pub how: &'static str,
    /// The probe's error where oneDNN was tried and refused.
    pub onednn_error: Option<String>,
}

impl std::fmt::Display for GemmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.path.as_str(), self.how)?;
        if let Some(e) = &self.onednn_error {
            write!(f, "; oneDNN unavailable: {e}")?;
        }
        write!(f, ")")
    }
}

static CHOICE: OnceLock<Result<GemmChoice, String>> = OnceLock::new();

/// One tiny product of each oneDNN kind, checked against libtorch's: Ok when this CPU (and this
/// libtorch) can run the oneDNN path, else the reason.
fn probe_onednn() -> Result<(), String> {
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::arange(12, opts).reshape([3, 4]) / 7.0;
    let w = Tensor::arange(8, opts).reshape([2, 4]) / 5.0 - 0.5;
    let (a, b) = (x.reshape([1, 3, 4]), w.tr().reshape([1, 4, 2]));
    let (xw, ab) = kernels::try_onednn(&x, &w, &a, &b)?;
    let want = x.matmul(&w.tr());
    for (name, got) in [("x·wᵀ", xw), ("a·b", ab.reshape([3, 2]))] {
        let err = (&got - &want).abs().max().double_value(&[]);
        if err.is_nan() || err > 1e-5 {
            return Err(format!("its {name} probe product is off by {err:e}"));
        }
    }
    Ok(())
}

/// Reads [`GEMM_ENV`] and, unless it forces libtorch, probes oneDNN; once per process. An error
/// for a value that is not `auto`, `onednn` or `libtorch`, or for `onednn` where the probe fails.
pub fn gemm_choice() -> Result<&'static GemmChoice, String> {
    CHOICE
        .get_or_init(|| {
            let wanted = std::env::var(GEMM_ENV).unwrap_or_default();
            match wanted.trim() {
                "" | "auto" => Ok(match probe_onednn() {
                    Ok(()) => GemmChoice {
                        path: GemmPath::Onednn,
                        how: "auto",
                        onednn_error: None,
                    },
                    Err(e) => GemmChoice {
                        path: GemmPath::Libtorch,
                        how: "auto",
                        onednn_error: Some(e),
                    },
                }),
                "libtorch" => Ok(GemmChoice {
                    path: GemmPath::Libtorch,
                    how: "forced",
                    onednn_error: None,
                }),
                "onednn" => match probe_onednn() {
                    Ok(()) => Ok(GemmChoice {
                        path: GemmPath::Onednn,
                        how: "forced",
                        onednn_error: None,
                    }),
                    Err(e) => Err(format!(
                        "{GEMM_ENV}=onednn, but this CPU cannot run oneDNN's float32 GEMM: {e}"
                    )),
                },
                other => Err(format!(
                    "{GEMM_ENV}=`{other}`: expected auto, onednn or libtorch"
                )),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// This process's GEMM path ([`gemm_choice`]). Panics on a bad [`GEMM_ENV`]: the membench binary
/// checks it at start-up (exit 2), so only a library user can get here with one.
pub fn gemm_path() -> GemmPath {
    match gemm_choice() {
        Ok(c) => c.path,
        Err(e) => panic!("{e}"),
    }
}

fn on_cpu_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float
}

/// xs [..., K]·wᵀ (w [N, K]) through oneDNN with the leading dimensions folded into rows (oneDNN path only):
/// `finish` gets the fresh [rows, N] product (it may modify it in place), the result is unfolded
/// to [..., N]. None when the product is too small for oneDNN, not float32 on the CPU, or this process's
/// path is libtorch.
fn onednn_folded(xs: &Tensor, w: &Tensor, finish: impl FnOnce(Tensor) -> Tensor) -> Option<Tensor> {
    let (n, k) = (w.size()[0], w.size()[1]);
    let rows = if k == 0 { 0 } else { xs.numel() as i64 / k };
    if !(on_cpu_f32(xs) && on_cpu_f32(w) && rows * n * k >= ONEDNN_MIN_MACS)
        || gemm_path() != GemmPath::Onednn
    {
        return None;
    }
    let mut shape = xs.size();
    *shape.last_mut().expect("an input with a feature dimension") = n;
    Some(finish(kernels::onednn_matmul_t(&xs.reshape([rows, k]), w)).view(shape.as_slice()))
}

/// xs·wᵀ: xs [M, K], w [N, K] → [M, N], routed like [`linear`] (the bench's matmul peak uses it).
pub fn matmul_t(xs: &Tensor, w: &Tensor) -> Tensor {
    onednn_folded(xs, w, |y| y).unwrap_or_else(|| xs.matmul(&w.tr()))
}

/// `a.matmul(b)` for the two shapes the models use, routed like [`linear`] when large enough:
/// a [..., K] times a matrix b [K, N], or batched a [..., M, K] times b [..., K, N] with equal
/// leading dimensions (either operand may be a transposed view). Anything else, and small
/// products, go to libtorch's `matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (sa, sb) = (a.size(), b.size());
    if sb.len() == 2 {
        return onednn_folded(a, &b.tr(), |y| y).unwrap_or_else(|| a.matmul(b));
    }
    if !(on_cpu_f32(a) && on_cpu_f32(b)) || gemm_path() != GemmPath::Onednn {
        return a.matmul(b);
    }
    let (k, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    let batched = sa.len() == sb.len() && sa.len() >= 3 && sa[..sa.len() - 2] == sb[..sb.len() - 2];
    let m = sa[sa.len() - 2];
    // batch·M·K·N multiply-adds
    if batched && a.numel() as i64 * n >= ONEDNN_MIN_MACS {
        let mut shape = sa.clone();
        *shape.last_mut().expect("a is batched") = n;
        kernels::onednn_bmm(&a.reshape([-1, m, k]), &b.reshape([-1, k, n])).view(shape.as_slice())
    } else {
        a.matmul(b)
    }
}

/// `lin(xs)`: xs [..., K] → [..., N].
pub fn linear(lin: &nn::Linear, xs: &Tensor) -> Tensor {
    // The bias in place: the product is not saved for its backward, so autograd allows it, and
    // no second [rows, N] buffer is allocated.
    let add_bias = |mut ys: Tensor| {
        if let Some(b) = &lin.bs {
            let _ = ys.g_add_(b);
        }
        ys
    };
    onednn_folded(xs, &lin.ws, add_bias).unwrap_or_else(|| xs.linear(&lin.ws, lin.bs.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU flags under which ATen's `mkldnn_matmul` accepts float32 (its bf16 device check).
    fn cpu_has_onednn_f32() -> bool {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |f: &str| {
            flags
                .lines()
                .any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == f))
        };
        (has("avx512bw") && has("avx512vl") && has("avx512dq")) || has("avx_ne_convert")
    }

    /// The probe decides as the CPU's flags say, and never panics: oneDNN where the CPU has what
    /// ATen's check asks for (unless forced off), libtorch with the refusal's message elsewhere.
    #[test]
    fn gemm_path_follows_the_cpu() {
        let choice = gemm_choice().expect("a valid MEMBENCH_GEMM");
        let forced = std::env::var(GEMM_ENV).is_ok_and(|v| v == "libtorch");
        match (forced, cpu_has_onednn_f32()) {
            (true, _) => assert_eq!((choice.path, choice.how), (GemmPath::Libtorch, "forced")),
            (false, true) => assert_eq!(choice.path, GemmPath::Onednn, "{choice}"),
            (false, false) => {
                assert_eq!(choice.path, GemmPath::Libtorch);
                let why = choice.onednn_error.as_deref().unwrap_or_default();
                assert!(why.contains("mkldnn_matmul"), "probe error: {why}");
            }
        }
    }

    /// On the libtorch path every product is libtorch's own, bit for bit.
    fn libtorch_path_is_libtorch(x: &Tensor, lin: &nn::Linear) {
        let ours = linear(lin, x);
        assert!(ours.equal(&x.linear(&lin.ws, lin.bs.as_ref())));
        let w = lin.ws.tr();
        assert!(matmul(x, &w).equal(&x.matmul(&w)));
    }

    /// oneDNN's product and its gradients equal libtorch's up to float32 summation order, with
    /// and without bias, for a 3-D input (rows folded) large enough to take the oneDNN path.
    /// On the libtorch path, the products are libtorch's bit for bit.
    #[test]
    fn onednn_linear_matches_libtorch() {
        tch::manual_seed(3);
        for bias in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(
                vs.root(),
                128,
                96,
                nn::LinearConfig {
                    bias,
                    ..Default::default()
                },
            );
            let x =
                Tensor::randn([8, 128, 128], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let w = Tensor::randn([8, 128, 96], (Kind::Float, Device::Cpu));
            const { assert!(8 * 128 * 96 * 128 >= ONEDNN_MIN_MACS) };
            if gemm_path() == GemmPath::Libtorch {
                libtorch_path_is_libtorch(&x, &lin);
                continue;
            }
            let run = |f: &dyn Fn() -> Tensor| {
                for mut p in vs
                    .trainable_variables()
                    .into_iter()
                    .chain([x.shallow_clone()])
                {
                    p.zero_grad();
                }
                let y = f();
                (&y * &w).sum(Kind::Float).backward();
                let mut out = vec![y.detach(), x.grad().copy(), lin.ws.grad().copy()];
                out.extend(lin.bs.as_ref().map(|b| b.grad().copy()));
                out
            };
            let ours = run(&|| linear(&lin, &x));
            let torch = run(&|| x.linear(&lin.ws, lin.bs.as_ref()));
            for (i, (a, b)) in ours.iter().zip(&torch).enumerate() {
                let rel = (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]);
                assert!(
                    rel < 1e-5,
                    "bias {bias}, tensor {i}: relative difference {rel:e}"
                );
            }
        }
    }

    /// `matmul` equals libtorch's for a weight on the right (given transposed, as models pass
    /// `t.tr()`) and for batched operands one of which is a transposed view: values and gradients
    /// of both operands (on the libtorch path: bit for bit).
    #[test]
    fn onednn_matmul_matches_libtorch() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::randn([16, 64, 96], opts).set_requires_grad(true);
        let w = Tensor::randn([80, 96], opts).set_requires_grad(true); // used as wᵀ: [96, 80]
        let c = Tensor::randn([16, 80, 96], opts).set_requires_grad(true); // used as cᵀ: [16, 96, 80]
        const { assert!(16 * 64 * 96 * 80 >= ONEDNN_MIN_MACS) };
        for batched in [false, true] {
            let right = if batched { &c } else { &w };
            let rhs = || if batched { c.transpose(1, 2) } else { w.tr() };
            let g = Tensor::randn([16, 64, 80], opts);
            let run = |m: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
                for mut t in [&a, right].map(|t| t.shallow_clone()) {
                    t.zero_grad();
                }
                let y = m(&a, &rhs());
                (&y * &g).sum(Kind::Float).backward();
                let grads = [&a, right].map(|t| t.grad().copy());
                std::iter::once(y.detach()).chain(grads).collect::<Vec<_>>()
            };
            let ours = run(&|x, y| matmul(x, y));
            let torch = run(&|x, y| x.matmul(y));
            let tol = if gemm_path() == GemmPath::Libtorch {
                0.0
            } else {
                1e-5
            };
            for (i, (p, q)) in ours.iter().zip(&torch).enumerate() {
                let scale = q.abs().max().double_value(&[]).max(1e-30);
                let rel = (p - q).abs().max().double_value(&[]) / scale;
                assert!(
                    rel <= tol,
                    "batched {batched}, tensor {i}: relative difference {rel:e}"
                );
            }
        }
    }
}
