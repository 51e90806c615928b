//! PyTorch's default initialisations, which tch's are not.
//!
//! tch's `nn::linear` draws its weight from Kaiming-uniform with the ReLU gain, U(±√(6/fan_in));
//! PyTorch's `nn.Linear` (`reset_parameters`: kaiming_uniform with a = √5) draws U(±1/√fan_in), a
//! √6× smaller scale. Biases agree (U(±1/√fan_in) in both). Every family builds its linear layers
//! here unless its paper or reference code says otherwise, which its module doc then states.
//! Embeddings (`nn::embedding`: N(0, 1)), LayerNorm (weight 1, bias 0) and `nn.Conv1d`
//! (U(±1/√fan_in), see `residual::ShortConv`) already agree with PyTorch.

use tch::nn;

/// U(−bound, bound).
pub fn uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// PyTorch's `nn.Linear(d_in, d_out)`: weight [d_out, d_in] and bias [d_out] ~ U(±1/√d_in).
pub fn linear<'a>(vs: impl std::borrow::Borrow<nn::Path<'a>>, d_in: i64, d_out: i64) -> nn::Linear {
    nn::linear(vs, d_in, d_out, config(d_in, true))
}

/// PyTorch's `nn.Linear(d_in, d_out, bias=False)`: weight ~ U(±1/√d_in).
pub fn linear_no_bias<'a>(
    vs: impl std::borrow::Borrow<nn::Path<'a>>,
    d_in: i64,
    d_out: i64,
) -> nn::Linear {
    nn::linear(vs, d_in, d_out, config(d_in, false))
}

fn config(d_in: i64, bias: bool) -> nn::LinearConfig {
    let bound = 1.0 / (d_in as f64).sqrt();
    nn::LinearConfig {
        ws_init: uniform(bound),
        bs_init: Some(uniform(bound)),
        bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The bounds and standard deviation of U(±1/√fan_in) (std = bound/√3), not tch's √6× wider
    /// default; a test that fails if `nn::LinearConfig::default()` sneaks back in.
    #[test]
    fn linear_matches_pytorch_default() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let (d_in, d_out) = (256, 512);
        let l = linear(vs.root() / "l", d_in, d_out);
        let bound = 1.0 / (d_in as f64).sqrt();
        for t in [&l.ws, l.bs.as_ref().unwrap()] {
            let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
            assert!(
                lo >= -bound && hi <= bound && hi > 0.99 * bound,
                "{lo} {hi} vs ±{bound}"
            );
        }
        let std = l.ws.std(true).double_value(&[]);
        assert!(
            (std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.01,
            "std {std}"
        );
        let no_bias = linear_no_bias(vs.root() / "n", d_in, d_out);
        assert!(no_bias.bs.is_none());
        assert_eq!(no_bias.ws.kind(), Kind::Float);
    }
}
