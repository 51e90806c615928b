//! Expansion of an experiments file into resolved runs.
//!
//! ```yaml
//! defaults:                # merged under every experiment (experiment keys win)
//!   train: {steps: 1000}
//! experiments:
//!   - name: copy
//!     task: {name: copy, max_len: 20}
//!     arch: {name: lstm, hidden_size: 128}
//!     train: {lr: 1e-3}
//!     grid: {arch.hidden_size: [64, 128]}        # cartesian product over dotted keys
//!     zip: {task.max_len: [10, 20], train.steps: [500, 1000]}   # advanced together
//!     seeds: 3                                   # or a list: [0, 7, 42]
//! ```
//! Runs come out in a fixed order: experiments in file order, then grid combinations (last key
//! fastest, keys sorted), then zip positions, then seeds.

use crate::config::RunConfig;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Option<Mapping>,
    experiments: Vec<Mapping>,
}

/// Keys of an experiment that drive expansion rather than configure the run.
const CONTROL_KEYS: [&str; 4] = ["grid", "zip", "seeds", "name"];

/// Recursively merges `over` onto `base`: mappings merge key by key, anything else replaces.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Sets `a.b.c` in a mapping tree, creating intermediate mappings.
fn set_path(root: &mut Value, dotted: &str, value: Value) -> Result<()> {
    let mut node = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Mapping(m) = node else { bail!("`{}` is not a mapping", parts[..i].join(".")) };
        let key = Value::String(part.to_string());
        if i + 1 == parts.len() {
            // Replace, don't merge: a swept mapping (e.g. a whole `arch:`) stands on its own.
            m.insert(key, value);
            return Ok(());
        }
        node = m.entry(key).or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Ok(())
}

fn seeds_of(v: Option<&Value>) -> Result<Vec<u64>> {
    match v {
        None => Ok(vec![0]),
        Some(Value::Number(n)) => {
            let n = n.as_u64().filter(|&n| (1..=10_000).contains(&n)).context("seeds: expected a count 1..=10000 or a list")?;
            Ok((0..n).collect())
        }
        Some(v @ Value::Sequence(_)) => {
            let seeds: Vec<u64> = serde_yaml::from_value(v.clone()).context("seeds: expected a list of integers >= 0")?;
            if seeds.is_empty() {
                bail!("seeds: the list is empty");
            }
            Ok(seeds)
        }
        Some(_) => bail!("seeds: expected a count or a list of integers"),
    }
}

fn lists(v: Option<&Value>, what: &str) -> Result<Vec<(String, Vec<Value>)>> {
    let Some(v) = v else { return Ok(vec![]) };
    let m: BTreeMap<String, Vec<Value>> = serde_yaml::from_value(v.clone()).with_context(|| format!("{what}: expected a mapping from dotted keys to lists"))?;
    for (k, vals) in &m {
        if vals.is_empty() {
            bail!("{what}.{k}: the list is empty, so the grid has no runs");
        }
    }
    Ok(m.into_iter().collect())
}

/// Every run of `text` (an experiments file), resolved and checked, in the documented order.
pub fn expand(text: &str) -> Result<Vec<RunConfig>> {
    let file: File = serde_yaml::from_str(text)?;
    let mut runs = vec![];
    for (ei, exp) in file.experiments.iter().enumerate() {
        let name = match exp.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => format!("experiment{ei}"),
        };
        let mut base = Value::Mapping(file.defaults.clone().unwrap_or_default());
        let mut body = exp.clone();
        for k in CONTROL_KEYS {
            body.remove(k);
        }
        deep_merge(&mut base, &Value::Mapping(body));
        let grid = lists(exp.get("grid"), "grid")?;
        let zip = lists(exp.get("zip"), "zip")?;
        let zip_len = zip.first().map_or(1, |(_, v)| v.len());
        if let Some((k, v)) = zip.iter().find(|(_, v)| v.len() != zip_len) {
            bail!("zip.{k}: {} values, but the other zip lists have {zip_len}", v.len());
        }
        let seeds = seeds_of(exp.get("seeds"))?;
        let combos: usize = grid.iter().map(|(_, v)| v.len()).product();
        for c in 0..combos {
            // Mixed-radix decode of c, last key fastest.
            let mut rest = c;
            let mut picks = vec![];
            for (k, vals) in grid.iter().rev() {
                picks.push((k, &vals[rest % vals.len()]));
                rest /= vals.len();
            }
            picks.reverse();
            for z in 0..zip_len {
                let mut cfg = base.clone();
                let mut swept = BTreeMap::new();
                for (k, v) in picks.iter().copied().chain(zip.iter().map(|(k, vals)| (k, &vals[z]))) {
                    set_path(&mut cfg, k, v.clone())?;
                    swept.insert(k.clone(), v.clone());
                }
                for &seed in &seeds {
                    let mut run = cfg.clone();
                    set_path(&mut run, "experiment", Value::String(name.clone()))?;
                    set_path(&mut run, "seed", Value::Number(seed.into()))?;
                    let mut rc: RunConfig = serde_yaml::from_value(run).with_context(|| format!("experiment `{name}`"))?;
                    rc.swept = swept.clone();
                    rc.train.check().map_err(anyhow::Error::msg).with_context(|| format!("experiment `{name}`"))?;
                    rc.task.build().with_context(|| format!("experiment `{name}`"))?;
                    runs.push(rc);
                }
            }
        }
    }
    Ok(runs)
}
