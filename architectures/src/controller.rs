//! The controller network of the NTM and the DNC: LSTM layers (PyTorch's `nn.LSTM` weights and
//! gate order i, f, g, o; libtorch's `lstm_cell` per step) or tanh layers h = tanh(W[x, r] + b).
//! Its first layer reads [x_t, r_{t−1}]; the x part of that layer's input weights is kept apart, so
//! that it is applied to every step at once before the time loop.
//!
//! **Initialisation**: PyTorch's `nn.LSTM` (U(±1/√controller_size) for every weight and bias), or
//! for tanh layers `nn.Linear`'s U(±1/√fan_in).

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Controller network of the NTM and DNC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControllerKind {
    /// LSTM layers (libtorch `lstm_cell` per step).
    Lstm,
    /// tanh layers: h = tanh(W [x, r] + b); no state of its own.
    Feedforward,
}

pub(crate) fn default_controller() -> ControllerKind {
    ControllerKind::Lstm
}
pub(crate) fn default_controller_size() -> i64 {
    100
}

/// One controller layer's weights, PyTorch layout (LSTM gate order i, f, g, o).
struct Layer {
    w_ih: Tensor,
    w_hh: Option<Tensor>,
    b_ih: Tensor,
    b_hh: Option<Tensor>,
}

/// The controller shared by NTM and DNC. Its first layer reads [x_t, r_{t−1}]; the x part is
/// projected for all steps at once by [`Controller::project_inputs`], so a step only multiplies the
/// read vectors and the recurrent state.
pub(crate) struct Controller {
    kind: ControllerKind,
    size: i64,
    /// Input weights of layer 0 split by source: x part [G, d_x] and read part [G, d_r].
    w_x: Tensor,
    layers: Vec<Layer>,
}

/// Per-layer recurrent state: (h, c) for an LSTM, nothing for feedforward.
pub(crate) type ControllerState = Vec<(Tensor, Tensor)>;

impl Controller {
    pub(crate) fn new(
        vs: &nn::Path,
        kind: ControllerKind,
        size: i64,
        layers: i64,
        d_x: i64,
        d_r: i64,
    ) -> Self {
        let gates = match kind {
            ControllerKind::Lstm => 4 * size,
            ControllerKind::Feedforward => size,
        };
        let mut out = Vec::with_capacity(layers as usize);
        let mut w_x = None;
        for l in 0..layers {
            let inp = if l == 0 { d_x + d_r } else { size };
            // PyTorch's LSTM init U(±1/√size); for tanh layers nn.Linear's U(±1/√fan_in).
            let bound = match kind {
                ControllerKind::Lstm => 1.0 / (size as f64).sqrt(),
                ControllerKind::Feedforward => 1.0 / (inp as f64).sqrt(),
            };
            let init = nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let (w_ih, recurrent) = if l == 0 {
                w_x = Some(vs.var("weight_ix_l0", &[gates, d_x], init));
                (
                    vs.var("weight_ir_l0", &[gates, d_r], init),
                    kind == ControllerKind::Lstm,
                )
            } else {
                (
                    vs.var(&format!("weight_ih_l{l}"), &[gates, inp], init),
                    kind == ControllerKind::Lstm,
                )
            };
            let w_hh = recurrent.then(|| vs.var(&format!("weight_hh_l{l}"), &[gates, size], init));
            let b_ih = vs.var(&format!("bias_ih_l{l}"), &[gates], init);
            let b_hh = recurrent.then(|| vs.var(&format!("bias_hh_l{l}"), &[gates], init));
            out.push(Layer {
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            });
        }
        Controller {
            kind,
            size,
            w_x: w_x.expect("at least one layer"),
            layers: out,
        }
    }

    /// xs: [B, T, d_x] → [B, T, G], the first layer's input term W_x x_t + b for every step.
    pub(crate) fn project_inputs(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.w_x, Some(&self.layers[0].b_ih))
    }

    pub(crate) fn initial_state(
        &self,
        batch: i64,
        options: (Kind, tch::Device),
    ) -> ControllerState {
        match self.kind {
            ControllerKind::Lstm => {
                let z = Tensor::zeros([batch, self.size], options);
                (0..self.layers.len())
                    .map(|_| (z.shallow_clone(), z.shallow_clone()))
                    .collect()
            }
            ControllerKind::Feedforward => vec![],
        }
    }

    /// x_proj: [B, G] (this step's row of `project_inputs`), reads: [B, d_r] → h: [B, size]
    pub(crate) fn step(
        &self,
        x_proj: &Tensor,
        reads: &Tensor,
        state: &mut ControllerState,
    ) -> Tensor {
        let mut h = Tensor::new();
        for (l, layer) in self.layers.iter().enumerate() {
            // Layer 0 gets x's share of the pre-activation as a per-example [B, G] bias, which
            // libtorch's addmm broadcasts; upper layers use their own bias.
            let (input, bias) = if l == 0 {
                (reads, x_proj)
            } else {
                (&h, &layer.b_ih)
            };
            h = match self.kind {
                ControllerKind::Lstm => {
                    let (hx, cx) = &state[l];
                    let w_hh = layer.w_hh.as_ref().expect("lstm weights");
                    let (h_new, c_new) = input.lstm_cell(
                        &[hx, cx],
                        &layer.w_ih,
                        w_hh,
                        Some(bias),
                        layer.b_hh.as_ref(),
                    );
                    state[l] = (h_new.shallow_clone(), c_new);
                    h_new
                }
                ControllerKind::Feedforward => input.linear(&layer.w_ih, Some(bias)).tanh(),
            };
        }
        h
    }

    pub(crate) fn state_size(&self) -> i64 {
        match self.kind {
            ControllerKind::Lstm => 2 * self.size * self.layers.len() as i64,
            ControllerKind::Feedforward => 0,
        }
    }

    /// Forward FLOPs of one step with first-layer input width `d_in`.
    pub(crate) fn flops(&self, d_in: i64) -> f64 {
        let s = self.size as f64;
        (0..self.layers.len())
            .map(|l| {
                let inp = if l == 0 { d_in as f64 } else { s };
                match self.kind {
                    ControllerKind::Lstm => 2.0 * 4.0 * s * (inp + s) + 10.0 * s,
                    ControllerKind::Feedforward => 2.0 * s * inp + s,
                }
            })
            .sum()
    }
}
