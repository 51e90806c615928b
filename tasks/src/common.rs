//! Helpers shared by the task files: parameter checks, evaluation point lists, and cheap bit draws.

use crate::{EvalPoint, TaskError};
use rand::RngCore;

/// Longest sequence (time steps) a task may build; a typo such as `max_len: 1e9` is then an error
/// instead of an allocation that takes the machine down.
pub const MAX_STEPS: usize = 1 << 20;

/// Every mistake of one task config, in check order, so that one bad value hides no other.
///
/// Each check records its error, if any, and says whether the value passed. A bound taken from
/// another field is only trusted when that field passed: when it did not, the check falls back to
/// a bound at least as wide as any valid value of that field would give (for `max_len >=
/// min_len` with a bad `min_len`, `min_len`'s own floor), so a mistake is reported once, at its
/// key, and never as a consequence of another.
#[derive(Default)]
pub(crate) struct Mistakes(Vec<TaskError>);

impl Mistakes {
    /// Records `check`'s error; true when it passed.
    pub(crate) fn ok(&mut self, check: Result<(), TaskError>) -> bool {
        match check {
            Ok(()) => true,
            Err(e) => {
                self.0.push(e);
                false
            }
        }
    }

    /// `value` in `lo..=hi` where `lo` is field `lo_field`'s value (see [`at_least_field`]) when
    /// that field passed (`lo_ok`); else in `floor..=hi`, `floor` being the least value
    /// `lo_field` may take.
    pub(crate) fn at_least(
        &mut self,
        task: &'static str,
        field: &'static str,
        value: usize,
        (lo_field, lo, lo_ok): (&str, usize, bool),
        floor: usize,
        hi: usize,
    ) -> bool {
        self.ok(if lo_ok {
            at_least_field(task, field, value, lo_field, lo, hi)
        } else {
            in_range(task, field, value, floor, hi)
        })
    }

    /// A task's lengths, all in `floor..=hi`: `max_len` at least `min_len` (when `min_len` passed
    /// its own check, `min_ok`) and every entry of `eval_lengths`.
    pub(crate) fn lengths(
        &mut self,
        task: &'static str,
        (min_len, min_ok): (usize, bool),
        max_len: usize,
        eval_lengths: &[usize],
        floor: usize,
        hi: usize,
    ) {
        self.at_least(
            task,
            "max_len",
            max_len,
            ("min_len", min_len, min_ok),
            floor,
            hi,
        );
        self.ok(each_in_range(task, "eval_lengths", eval_lengths, floor, hi));
    }

    /// Records a failed check.
    pub(crate) fn push(&mut self, e: TaskError) {
        self.0.push(e);
    }

    pub(crate) fn into_vec(self) -> Vec<TaskError> {
        self.0
    }
}

/// The first of `mistakes` (what a constructor reports), or `Ok` when there are none.
pub(crate) fn first(mistakes: Vec<TaskError>) -> Result<(), TaskError> {
    mistakes.into_iter().next().map_or(Ok(()), Err)
}

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

/// `value` must be even and lie in `lo..=hi` (MAD's recall and memorization sequences are
/// whole key-value pairs).
pub(crate) fn even_in_range(
    task: &'static str,
    field: &'static str,
    value: usize,
    lo: usize,
    hi: usize,
) -> Result<(), TaskError> {
    if value.is_multiple_of(2) && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(TaskError::new(
            task,
            field,
            value,
            format!("expected an even number in {lo}..={hi}"),
        ))
    }
}

/// Every entry of an `eval_lengths` list must be even and lie in `lo..=hi`.
pub(crate) fn each_even_in_range(
    task: &'static str,
    field: &'static str,
    values: &[usize],
    lo: usize,
    hi: usize,
) -> Result<(), TaskError> {
    match values
        .iter()
        .find(|&&v| !v.is_multiple_of(2) || !(lo..=hi).contains(&v))
    {
        Some(&bad) => Err(TaskError::new(
            task,
            field,
            bad,
            format!("each expected an even number in {lo}..={hi}"),
        )),
        None => Ok(()),
    }
}

/// A fraction in `[0, 1)`, as MAD asserts for `frac_noise` (rejects NaN).
pub(crate) fn fraction_below_one(
    task: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), TaskError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(TaskError::new(
            task,
            field,
            value,
            "expected 0 <= value < 1",
        ))
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
