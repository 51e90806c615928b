//! Helpers shared by the task files: parameter checks, evaluation point lists, and cheap bit draws.

use crate::{EvalPoint, TaskError};
use rand::RngCore;

/// Longest sequence (time steps) a task may build; a typo such as `max_len: 1e9` is then an error
/// instead of an allocation that takes the machine down.
pub const MAX_STEPS: usize = 1 << 20;

/// `value` must lie in `lo..=hi`.
pub(crate) fn in_range(
    task: &'static str,
    field: &'static str,
    value: usize,
    lo: usize,
    hi: usize,
) -> Result<(), TaskError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(TaskError::new(
            task,
            field,
            value,
            format!("expected {lo}..={hi}"),
        ))
    }
}

/// `value` must lie in `lo..=hi` where `lo` is another field (named in the message), as for
/// `max_len >= min_len`.
pub(crate) fn at_least_field(
    task: &'static str,
    field: &'static str,
    value: usize,
    lo_field: &str,
    lo: usize,
    hi: usize,
) -> Result<(), TaskError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(TaskError::new(
            task,
            field,
            value,
            format!("expected {lo_field} ({lo})..={hi}"),
        ))
    }
}

/// Every entry of an `eval_lengths` list must lie in `lo..=hi`.
pub(crate) fn each_in_range(
    task: &'static str,
    field: &'static str,
    values: &[usize],
    lo: usize,
    hi: usize,
) -> Result<(), TaskError> {
    match values.iter().find(|v| !(lo..=hi).contains(*v)) {
        Some(&bad) => Err(TaskError::new(
            task,
            field,
            bad,
            format!("each expected {lo}..={hi}"),
        )),
        None => Ok(()),
    }
}

/// A real parameter in `[lo, hi]` (rejects NaN).
pub(crate) fn real_in_range(
    task: &'static str,
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
) -> Result<(), TaskError> {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(TaskError::new(
            task,
            field,
            value,
            format!("expected {lo}..={hi}"),
        ))
    }
}

/// One evaluation point per listed length, or `[default]` when the list is empty.
pub(crate) fn length_points(eval_lengths: &[usize], default: usize) -> Vec<EvalPoint> {
    if eval_lengths.is_empty() {
        vec![EvalPoint {
            length: default,
            depth: None,
        }]
    } else {
        eval_lengths
            .iter()
            .map(|&length| EvalPoint {
                length,
                depth: None,
            })
            .collect()
    }
}

/// Fair bits drawn 64 at a time from one `u64`, instead of one `u32` per bit.
#[derive(Default)]
pub(crate) struct BitDraws {
    word: u64,
    left: u32,
}

impl BitDraws {
    /// The next fair bit as 0.0 or 1.0.
    #[inline]
    pub(crate) fn next<R: RngCore>(&mut self, rng: &mut R) -> f32 {
        if self.left == 0 {
            self.word = rng.next_u64();
            self.left = 64;
        }
        let bit = (self.word & 1) as f32;
        self.word >>= 1;
        self.left -= 1;
        bit
    }
}
