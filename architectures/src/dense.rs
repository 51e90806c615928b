//! Dense (fully connected) layers: `x·Wᵀ + b` with the fastest float32 GEMM libtorch links.
//!
//! The parameters are tch's `nn::Linear` (same names, shapes and initialisation); only the product
//! is routed. On the CPU, float32 products of at least [`ONEDNN_MIN_MACS`] multiply-adds go
//! through oneDNN (`onednn_linear.cpp`: ~2.3× libtorch's MKL path on AVX-512 AMD cores, on par
//! elsewhere); smaller ones, where oneDNN's per-call set-up (~10 µs) would cost more than it saves,
//! other dtypes and CUDA go through libtorch's `linear` as before.

use crate::kernels;
use tch::{nn, Device, Kind, Tensor};

/// Below this many multiply-adds per call, libtorch's own GEMM is used (measured on the bench
/// shapes: oneDNN's set-up is ~10 µs a call, i.e. the time MKL needs for ~0.5 M multiply-adds).
pub const ONEDNN_MIN_MACS: i64 = 1 << 20;

fn on_cpu_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float
}

/// xs [..., K]·wᵀ (w [N, K]) through oneDNN with the leading dimensions folded into rows:
/// `finish` gets the fresh [rows, N] product (it may modify it in place), the result is unfolded
/// to [..., N]. None when the product is too small for oneDNN or not float32 on the CPU.
fn onednn_folded(xs: &Tensor, w: &Tensor, finish: impl FnOnce(Tensor) -> Tensor) -> Option<Tensor> {
    let (n, k) = (w.size()[0], w.size()[1]);
    let rows = if k == 0 { 0 } else { xs.numel() as i64 / k };
    if !(on_cpu_f32(xs) && on_cpu_f32(w) && rows * n * k >= ONEDNN_MIN_MACS) {
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
    if !(on_cpu_f32(a) && on_cpu_f32(b)) {
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

    /// oneDNN's product and its gradients equal libtorch's up to float32 summation order, with
    /// and without bias, for a 3-D input (rows folded) large enough to take the oneDNN path.
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
            assert!(8 * 128 * 96 * 128 >= ONEDNN_MIN_MACS);
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
    /// of both operands.
    #[test]
    fn onednn_matmul_matches_libtorch() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::randn([16, 64, 96], opts).set_requires_grad(true);
        let w = Tensor::randn([80, 96], opts).set_requires_grad(true); // used as wᵀ: [96, 80]
        let c = Tensor::randn([16, 80, 96], opts).set_requires_grad(true); // used as cᵀ: [16, 96, 80]
        assert!(16 * 64 * 96 * 80 >= ONEDNN_MIN_MACS);
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
            for (i, (p, q)) in ours.iter().zip(&torch).enumerate() {
                let scale = q.abs().max().double_value(&[]).max(1e-30);
                let rel = (p - q).abs().max().double_value(&[]) / scale;
                assert!(
                    rel < 1e-5,
                    "batched {batched}, tensor {i}: relative difference {rel:e}"
                );
            }
        }
    }
}
