//! Gated recurrent networks: LSTM (Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014).
//!
//! LSTM: c_t = f⊙c_{t-1} + i⊙g, h_t = o⊙tanh(c_t); GRU: h_t = (1−z)⊙n + z⊙h_{t−1}.
//! The LSTM runs whole sequences through libtorch's `lstm` (oneDNN's fused RNN on the CPU, cuDNN on
//! CUDA). The CPU GRU has no such kernel in libtorch (its `gru` is ~8 autograd ops per step, ~15
//! more backward), so on the CPU each GRU layer is one input projection over all steps
//! (x·W_ihᵀ + b_ih, a normal autograd op) and one fused recurrence with a hand-written backward pass
//! (`fused_rnn.cpp`: one GEMM and one loop per step each way, the recurrent weight gradient as one
//! GEMM over all steps): a training step in ~0.7× the time of libtorch's `gru`. Weights use
//! PyTorch's layout and gate order (i, f, g, o for the LSTM; r, z, n for the GRU), so a PyTorch
//! `nn.LSTM` / `nn.GRU` with the same shapes computes the same function (the fused GRU is tested
//! against libtorch's to 1e-10 in float64, outputs and every gradient).
//!
//! **Initialisation**: PyTorch's `nn.LSTM` / `nn.GRU`, U(±1/√hidden_size) for every weight and
//! bias; with `forget_bias` (LSTM), the forget-gate slice of b_ih is then set to that value
//! (Jozefowicz et al. 2015), b_hh's stays as drawn.

use crate::{first, kernels, ArchError, Core, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnnConfig {
    /// Units per layer.
    pub hidden_size: i64,
    /// Stacked layers.
    #[serde(default = "one")]
    pub layers: i64,
    /// Dropout between layers (training only); PyTorch applies it to all but the last layer.
    #[serde(default)]
    pub dropout: f64,
    /// LSTM only: initial bias of the forget gate (Jozefowicz et al. 2015 recommend 1.0), so the
    /// cell keeps its memory at the start of training. Must be 0 for a GRU.
    #[serde(default)]
    pub forget_bias: f64,
}

fn one() -> i64 {
    1
}

impl RnnConfig {
    /// Checks every field for `cell` without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self, cell: Cell) -> Result<(), ArchError> {
        first(self.mistakes(cell))
    }

    /// Every impossible value for `cell`, in check order; empty when the config is valid.
    pub fn mistakes(&self, cell: Cell) -> Vec<ArchError> {
        let mut m = Mistakes::new(cell.name());
        m.range("hidden_size", self.hidden_size, 1, 65_536);
        m.range("layers", self.layers, 1, 64);
        if !(0.0..1.0).contains(&self.dropout) {
            m.bad("dropout", self.dropout, "expected 0 <= dropout < 1");
        }
        if !self.forget_bias.is_finite() || (cell == Cell::Gru && self.forget_bias != 0.0) {
            m.bad(
                "forget_bias",
                self.forget_bias,
                "expected a finite number, and 0 for a GRU",
            );
        }
        m.into_vec()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> i64 {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

pub struct Rnn {
    cell: Cell,
    weights: Vec<Tensor>,
    cfg: RnnConfig,
    d_in: i64,
}

impl Rnn {
    pub fn new(vs: &nn::Path, cfg: &RnnConfig, cell: Cell, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate(cell)?;
        let h = cfg.hidden_size;
        let gate_dim = cell.gates() * h;
        // PyTorch's nn.LSTM/nn.GRU initialisation: U(−1/√h, 1/√h) for every weight and bias.
        let bound = 1.0 / (h as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let mut weights = Vec::with_capacity(4 * cfg.layers as usize);
        for layer in 0..cfg.layers {
            let inp = if layer == 0 { d_in } else { h };
            weights.push(vs.var(&format!("weight_ih_l{layer}"), &[gate_dim, inp], init));
            weights.push(vs.var(&format!("weight_hh_l{layer}"), &[gate_dim, h], init));
            let b_ih = vs.var(&format!("bias_ih_l{layer}"), &[gate_dim], init);
            if cell == Cell::Lstm && cfg.forget_bias != 0.0 {
                tch::no_grad(|| {
                    let _ = b_ih.narrow(0, h, h).fill_(cfg.forget_bias);
                });
            }
            weights.push(b_ih);
            weights.push(vs.var(&format!("bias_hh_l{layer}"), &[gate_dim], init));
        }
        Ok(Rnn {
            cell,
            weights,
            cfg: cfg.clone(),
            d_in,
        })
    }
}

impl Rnn {
    /// The fused CPU GRU: layer by layer, input projection then recurrence; dropout between
    /// layers as libtorch applies it (all but the last layer, training only).
    fn forward_fused_gru(&self, xs: &Tensor, train: bool) -> Tensor {
        let h0 = Tensor::zeros(
            [xs.size()[0], self.cfg.hidden_size],
            (xs.kind(), xs.device()),
        );
        let mut x = xs.shallow_clone();
        for (layer, w) in self.weights.chunks(4).enumerate() {
            let gi = x.linear(&w[0], Some(&w[2]));
            x = kernels::gru(&gi, &h0, &w[1], &w[3]);
            if train && self.cfg.dropout > 0.0 && (layer as i64) + 1 < self.cfg.layers {
                x = x.dropout(self.cfg.dropout, true);
            }
        }
        x
    }

    /// libtorch's whole-sequence kernels (oneDNN for the CPU LSTM, cuDNN on CUDA).
    fn forward_aten(&self, xs: &Tensor, train: bool) -> Tensor {
        let (b, h, layers) = (xs.size()[0], self.cfg.hidden_size, self.cfg.layers);
        let h0 = Tensor::zeros([layers, b, h], (xs.kind(), xs.device()));
        let w: Vec<&Tensor> = self.weights.iter().collect();
        let dropout = if train { self.cfg.dropout } else { 0.0 };
        // [B, T, d_in] → [B, T, h], batch_first.
        match self.cell {
            Cell::Lstm => {
                xs.lstm(&[&h0, &h0], &w, true, layers, dropout, train, false, true)
                    .0
            }
            Cell::Gru => xs.gru(&h0, &w, true, layers, dropout, train, false, true).0,
        }
    }
}

impl Core for Rnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if self.cell == Cell::Gru
            && xs.device() == Device::Cpu
            && matches!(xs.kind(), Kind::Float | Kind::Double)
        {
            self.forward_fused_gru(xs, train)
        } else {
            self.forward_aten(xs, train)
        }
    }

    fn out_width(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// Not with dropout between layers in training (random draws).
    fn shardable(&self, train: bool) -> bool {
        !(train && self.cfg.dropout > 0.0 && self.cfg.layers > 1)
    }

    /// LSTM carries h and c per layer; GRU carries h.
    fn state_size(&self, _seq_len: i64) -> i64 {
        let per_layer = match self.cell {
            Cell::Lstm => 2,
            Cell::Gru => 1,
        };
        per_layer * self.cfg.hidden_size * self.cfg.layers
    }

    /// Per layer: gates·h·(inp + h) multiply-adds, plus the elementwise gate arithmetic (~10·h).
    fn flops_per_token(&self, _seq_len: i64) -> f64 {
        let (h, g) = (self.cfg.hidden_size as f64, self.cell.gates() as f64);
        (0..self.cfg.layers)
            .map(|layer| {
                let inp = if layer == 0 { self.d_in as f64 } else { h };
                2.0 * g * h * (inp + h) + 10.0 * h
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn cfg(layers: i64, forget_bias: f64) -> RnnConfig {
        RnnConfig {
            hidden_size: 16,
            layers,
            dropout: 0.0,
            forget_bias,
        }
    }

    #[test]
    fn shapes_state_and_forget_bias() {
        for cell in [Cell::Lstm, Cell::Gru] {
            for layers in [1, 2] {
                let vs = nn::VarStore::new(Device::Cpu);
                let rnn = Rnn::new(
                    &vs.root(),
                    &cfg(layers, if cell == Cell::Lstm { 1.0 } else { 0.0 }),
                    cell,
                    5,
                )
                .unwrap();
                let ys = rnn.forward_t(&Tensor::randn([3, 7, 5], (Kind::Float, Device::Cpu)), true);
                assert_eq!(ys.size(), [3, 7, 16]);
                let per_layer = if cell == Cell::Lstm { 2 } else { 1 };
                assert_eq!(rnn.state_size(100), per_layer * 16 * layers);
            }
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = Rnn::new(&vs.root(), &cfg(1, 1.0), Cell::Lstm, 5).unwrap();
        // PyTorch gate order i, f, g, o: the second quarter of b_ih is the forget gate.
        let b = vs.root().get("bias_ih_l0").unwrap();
        assert_eq!(
            Vec::<f32>::try_from(b.narrow(0, 16, 16)).unwrap(),
            vec![1.0; 16]
        );
        assert!(Vec::<f32>::try_from(b.narrow(0, 0, 16))
            .unwrap()
            .iter()
            .all(|v| v.abs() <= 0.25));
    }

    #[test]
    fn every_parameter_gets_a_finite_nonzero_gradient() {
        for cell in [Cell::Lstm, Cell::Gru] {
            let vs = nn::VarStore::new(Device::Cpu);
            let rnn = Rnn::new(&vs.root(), &cfg(2, 0.0), cell, 5).unwrap();
            let ys = rnn.forward_t(&Tensor::randn([3, 7, 5], (Kind::Float, Device::Cpu)), true);
            ys.square().sum(Kind::Float).backward();
            for (name, p) in vs.variables() {
                let g = p.grad();
                assert!(
                    g.isfinite().all().int64_value(&[]) == 1,
                    "{cell:?} {name}: non-finite gradient"
                );
                assert!(
                    g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{cell:?} {name}: zero gradient"
                );
            }
        }
    }

    /// The fused CPU GRU computes libtorch's function: in float64, outputs and the gradient of
    /// every weight and of the input agree with `aten::gru` to 1e-10, for one and two layers, over
    /// 30 steps (long enough for errors in the carried gradient to compound).
    #[test]
    fn fused_gru_matches_libtorch() {
        let opts = (Kind::Double, Device::Cpu);
        for layers in [1, 2] {
            tch::manual_seed(7);
            let mut vs = nn::VarStore::new(Device::Cpu);
            let rnn = Rnn::new(&vs.root(), &cfg(layers, 0.0), Cell::Gru, 5).unwrap();
            vs.double();
            let xs = Tensor::randn([3, 30, 5], opts).set_requires_grad(true);
            // A loss that weighs every output differently, so each position's gradient is tested.
            let weights = Tensor::randn([3, 30, 16], opts);
            let grads = |fused: bool| {
                for p in vs
                    .trainable_variables()
                    .iter_mut()
                    .chain([&mut xs.shallow_clone()])
                {
                    p.zero_grad();
                }
                let ys = if fused {
                    rnn.forward_fused_gru(&xs, true)
                } else {
                    rnn.forward_aten(&xs, true)
                };
                (&ys * &weights).sum(Kind::Double).backward();
                let mut all = vec![
                    ("output".to_string(), ys.detach()),
                    ("input".to_string(), xs.grad().copy()),
                ];
                let mut params: Vec<_> = vs
                    .variables()
                    .into_iter()
                    .map(|(name, p)| (name, p.grad().copy()))
                    .collect();
                params.sort_by(|a, b| a.0.cmp(&b.0));
                all.extend(params);
                all
            };
            let (aten, fused) = (grads(false), grads(true));
            for ((name, a), (_, f)) in aten.iter().zip(&fused) {
                let diff = (a - f).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-10,
                    "layers {layers} {name}: max |aten − fused| = {diff:e}"
                );
                assert!(
                    a.abs().max().double_value(&[]) > 1e-3,
                    "{name}: nothing compared"
                );
            }
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = |c: RnnConfig, cell| Rnn::new(&vs.root(), &c, cell, 5).err().unwrap().to_string();
        assert!(err(
            RnnConfig {
                hidden_size: 0,
                ..cfg(1, 0.0)
            },
            Cell::Lstm
        )
        .contains("`hidden_size` = 0"));
        assert!(err(cfg(0, 0.0), Cell::Gru).contains("`layers` = 0"));
        assert!(err(
            RnnConfig {
                dropout: 1.0,
                ..cfg(1, 0.0)
            },
            Cell::Lstm
        )
        .contains("`dropout`"));
        assert!(err(cfg(1, 1.0), Cell::Gru).contains("`forget_bias`"));
    }
}
