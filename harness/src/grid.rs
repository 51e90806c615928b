//! Expansion of an experiments file into resolved runs.
//!
//! ```yaml
//! defaults:                # merged under every experiment (experiment keys win)
//!   train: {steps: 1000}
//!   seeds: 3               # optional; an experiment's own `seeds` wins
//! experiments:
//!   - name: copy           # the `experiment` column; unique; default `experiment<index>`
//!     task: {name: copy, max_len: 20}
//!     arch: {name: lstm, hidden_size: 128}
//!     train: {lr: 1e-3}
//!     data_seed: 0                               # seed of the valid/test data (default 0)
//!     grid: {arch.hidden_size: [64, 128]}        # cartesian product over dotted keys
//!     zip: {task.max_len: [10, 20], train.steps: [500, 1000]}   # advanced together
//!     seeds: 3                                   # or a list: [0, 7, 42]; model seeds
//! ```
//! Allowed keys: `defaults` takes `task`, `arch`, `train`, `data_seed`, `device`, `seeds`; an experiment
//! takes those plus `name`, `grid`, `zip`. Dotted keys of `grid`/`zip` start with `task.`, `arch.`,
//! `train.` or are `data_seed` or `device`. Runs come out in a fixed order: experiments in file order, then
//! grid combinations (keys sorted, last key fastest), then zip positions, then seeds.
//!
//! Every mistake is an error located in the file ([`crate::strict`]); errors found in a resolved
//! run point at the grid key, experiment key or default that supplied the bad value.

use crate::config::RunConfig;
use crate::strict::{self, BadInput, Issue, Positions};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Top-level keys of a resolved run that grid/zip keys may set.
const RUN_KEYS: [&str; 5] = ["task", "arch", "train", "data_seed", "device"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    defaults: Option<Defaults>,
    experiments: Vec<Experiment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    task: Option<Value>,
    arch: Option<Value>,
    train: Option<Value>,
    data_seed: Option<Value>,
    device: Option<Value>,
    seeds: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Experiment {
    name: Option<String>,
    task: Option<Value>,
    arch: Option<Value>,
    train: Option<Value>,
    data_seed: Option<Value>,
    device: Option<Value>,
    seeds: Option<Value>,
    grid: Option<Mapping>,
    zip: Option<Mapping>,
}

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

/// Sets `a.b.c` in a mapping tree, creating intermediate mappings; Err names the non-mapping prefix.
fn set_path(root: &mut Value, dotted: &str, value: Value) -> Result<(), String> {
    let mut node = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Mapping(m) = node else {
            return Err(format!(
                "`{}` is not a mapping, so `{dotted}` cannot be set",
                parts[..i].join(".")
            ));
        };
        let key = Value::String(part.to_string());
        if i + 1 == parts.len() {
            // Replace, don't merge: a swept mapping (e.g. a whole `arch:`) stands on its own.
            m.insert(key, value);
            return Ok(());
        }
        node = m
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Ok(())
}

fn segs(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Builds located issues for one file.
struct Locator<'a> {
    pos: &'a Positions,
}

impl Locator<'_> {
    /// An issue at `path` (or the nearest written prefix of it), keyed by the whole path.
    fn at(&self, path: &[String], message: impl Into<String>) -> Issue {
        let (line, col) = self.pos.nearest(path).map_or((1, 1), |(p, _)| p);
        Issue {
            line,
            col,
            key: strict::display_path(path),
            message: message.into(),
        }
    }

    /// An issue in a resolved run of experiment `ei`, at `run_path` inside the RunConfig: points at
    /// the grid/zip key that set it, else the experiment's own key, else the default, else the
    /// experiment itself.
    fn in_run(
        &self,
        ei: usize,
        swept: &[(String, &'static str)],
        run_path: &[String],
        message: String,
        combo: &str,
    ) -> Issue {
        let exp = segs(&["experiments", &ei.to_string()]);
        let message = if combo.is_empty() {
            message
        } else {
            format!("{message} (in the run with {combo})")
        };
        for (key, section) in swept {
            let kp: Vec<&str> = key.split('.').collect();
            if run_path.len() >= kp.len() && run_path.iter().zip(&kp).all(|(a, b)| a == b) {
                let mut p = exp.clone();
                p.extend([section.to_string(), key.clone()]);
                let mut issue = self.at(&p, message);
                issue.key = format!("{}.{}", issue.key, run_path[kp.len()..].join("."))
                    .trim_end_matches('.')
                    .to_string();
                return issue;
            }
        }
        let mut in_exp = exp.clone();
        in_exp.extend(run_path.iter().cloned());
        if let Some((p, n)) = self.pos.nearest(&in_exp) {
            if n > exp.len() {
                return Issue {
                    line: p.0,
                    col: p.1,
                    key: strict::display_path(&in_exp),
                    message,
                };
            }
        }
        let mut in_defaults = segs(&["defaults"]);
        in_defaults.extend(run_path.iter().cloned());
        if let Some((p, n)) = self.pos.nearest(&in_defaults) {
            if n > 1 {
                return Issue {
                    line: p.0,
                    col: p.1,
                    key: strict::display_path(&in_defaults),
                    message,
                };
            }
        }
        let mut issue = self.at(&exp, message);
        issue.key = strict::display_path(&in_exp);
        issue
    }
}

/// The model seeds of `v` (a count or a list), or an issue.
fn seeds_of(v: Option<&Value>, loc: &Locator, path: &[String]) -> Result<Vec<u64>, Issue> {
    const MAX_SEEDS: u64 = 10_000;
    match v {
        None => Ok(vec![0]),
        Some(Value::Number(n)) => match n.as_u64().filter(|&n| (1..=MAX_SEEDS).contains(&n)) {
            Some(n) => Ok((0..n).collect()),
            None => Err(loc.at(
                path,
                format!(
                    "{n}: expected a count 1..={MAX_SEEDS} or a list of distinct integers >= 0"
                ),
            )),
        },
        Some(v @ Value::Sequence(items)) => {
            let seeds: Vec<u64> = serde_yaml::from_value(v.clone())
                .map_err(|e| loc.at(path, format!("expected a list of integers >= 0: {e}")))?;
            if seeds.is_empty() {
                return Err(loc.at(path, "the list is empty, so there are no runs"));
            }
            if seeds.len() as u64 > MAX_SEEDS {
                return Err(loc.at(path, format!("{} seeds; at most {MAX_SEEDS}", items.len())));
            }
            let mut seen = HashMap::new();
            for (i, s) in seeds.iter().enumerate() {
                if let Some(first) = seen.insert(*s, i) {
                    let mut p = path.to_vec();
                    p.push(i.to_string());
                    return Err(loc.at(&p, format!("seed {s} is listed twice (also item {first}); duplicate seeds would repeat a run")));
                }
            }
            Ok(seeds)
        }
        Some(other) => Err(loc.at(
            path,
            format!(
                "expected a count or a list of integers, found {}",
                kind_of(other)
            ),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Checks a grid/zip mapping: dotted keys into a run, each with a non-empty list.
fn lists(
    m: Option<&Mapping>,
    section: &'static str,
    loc: &Locator,
    exp: &[String],
) -> Result<Vec<(String, Vec<Value>)>, Issue> {
    let Some(m) = m else { return Ok(vec![]) };
    if m.is_empty() {
        let mut p = exp.to_vec();
        p.push(section.into());
        return Err(loc.at(
            &p,
            format!("an empty {section}; give it keys such as `arch.hidden_size: [64, 128]`, or leave it out"),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            let mut p = exp.to_vec();
            p.push(section.into());
            return Err(loc.at(
                &p,
                format!(
                    "keys must be dotted key strings such as `arch.hidden_size`, found {}",
                    kind_of(k)
                ),
            ));
        };
        let mut p = exp.to_vec();
        p.extend([section.to_string(), key.to_string()]);
        let first = key.split('.').next().unwrap_or("");
        if !RUN_KEYS.contains(&first)
            || key.split('.').any(str::is_empty)
            || (matches!(first, "data_seed" | "device") && key != first)
        {
            let hint = strict::closest(first, RUN_KEYS)
                .map(|m| format!(" (did you mean `{m}{}`?)", &key[first.len()..]))
                .unwrap_or_default();
            return Err(loc.at(&p, format!("`{key}` does not name a run setting; keys start with one of `task.`, `arch.`, `train.`, or are `data_seed` or `device`{hint}")));
        }
        let Value::Sequence(vals) = v else {
            return Err(loc.at(
                &p,
                format!("expected a list of values to sweep, found {}", kind_of(v)),
            ));
        };
        if vals.is_empty() {
            return Err(loc.at(&p, "the list is empty, so there are no runs"));
        }
        out.insert(key.to_string(), vals.clone());
    }
    Ok(out.into_iter().collect())
}

/// Every run of `text` (the experiments file `file`), resolved and checked, in the documented
/// order; or every mistake found, located in the file.
pub fn expand_file(file: &str, text: &str) -> Result<Vec<RunConfig>, BadInput> {
    // Issues in file order (a stable sort: one place's issues keep the order they were found).
    let bad = |mut issues: Vec<Issue>| {
        issues.sort_by_key(|i| (i.line, i.col));
        BadInput {
            file: file.to_string(),
            issues,
        }
    };
    let pos = Positions::parse(text).map_err(|i| bad(vec![i]))?;
    let loc = Locator { pos: &pos };
    let de = serde_yaml::Deserializer::from_str(text);
    let schema: FileSchema = match serde_path_to_error::deserialize(de) {
        Ok(s) => s,
        Err(e) => {
            let path: Vec<String> = path_segments(e.path());
            let inner = e.into_inner();
            let mut message = inner.to_string();
            // serde_yaml appends " at line L column C" and prefixes "path: "; we print both up front.
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            if let Some((head, rest)) = message.split_once(": ") {
                if !head.is_empty() && !head.contains(' ') {
                    message = rest.to_string();
                }
            }
            let message = strict::with_hint(&message);
            let issue = match (inner.location(), unknown_key_path(&path, &message)) {
                (_, Some(p)) if pos.get(&p).is_some() => loc.at(&p, message),
                (Some(l), _) => Issue {
                    line: l.line(),
                    col: l.column(),
                    key: strict::display_path(&path),
                    message,
                },
                (None, _) => loc.at(&path, message),
            };
            return Err(bad(vec![issue]));
        }
    };
    if schema.experiments.is_empty() {
        return Err(bad(vec![loc.at(
            &segs(&["experiments"]),
            "the list is empty, so there are no runs",
        )]));
    }
    let defaults = schema.defaults.unwrap_or_default();
    let mut issues = vec![];
    let mut plans = vec![];
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut total: u64 = 0;
    for (ei, exp) in schema.experiments.iter().enumerate() {
        let ep = segs(&["experiments", &ei.to_string()]);
        match plan(ei, exp, &defaults, &loc, &ep) {
            Ok(p) => {
                if let Some(first) = names.insert(p.name.clone(), ei) {
                    let mut np = ep.clone();
                    np.push("name".into());
                    issues.push(loc.at(
                        &np,
                        format!(
                            "`{}` is also the name of experiments[{first}]; names must be unique",
                            p.name
                        ),
                    ));
                }
                total = total.saturating_add(p.count);
                plans.push(p);
            }
            Err(i) => issues.push(i),
        }
    }
    // Duplicate names and other experiments' mistakes do not stop the runs of the experiments
    // that planned from being checked: every mistake is reported at once.
    if total > strict::MAX_RUNS {
        let counts: Vec<String> = plans
            .iter()
            .map(|p| format!("{}: {}", p.name, p.count))
            .collect();
        issues.push(loc.at(
            &segs(&["experiments"]),
            format!(
                "the grid has {total} runs ({}); the limit is {}",
                counts.join(", "),
                strict::MAX_RUNS
            ),
        ));
        return Err(bad(issues));
    }
    let mut runs = vec![];
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (ei, p) in plans.iter().enumerate() {
        match p.expand(ei, &loc) {
            Ok(rs) => {
                for r in rs {
                    if let Some(first) = ids.insert(r.run_id(), ei) {
                        issues.push(loc.at(
                            &segs(&["experiments", &ei.to_string()]),
                            format!(
                                "run {} (seed {}) is identical to a run of experiments[{first}]",
                                r.run_id(),
                                r.seed
                            ),
                        ));
                        break;
                    }
                    runs.push(r);
                }
            }
            Err(found) => issues.extend(found),
        }
    }
    if issues.is_empty() {
        Ok(runs)
    } else {
        Err(bad(issues))
    }
}

/// Reads and expands an experiments file (see [`strict::read_source`] for what is refused).
pub fn load(path: &Path) -> Result<Vec<RunConfig>, BadInput> {
    let text = strict::read_source(path)?;
    expand_file(&path.display().to_string(), &text)
}

/// Every run of `text`, for callers that hold the text only.
#[allow(dead_code)] // the API other commands (reproduce) call with text in hand
pub fn expand(text: &str) -> anyhow::Result<Vec<RunConfig>> {
    Ok(expand_file("<experiments>", text)?)
}

fn path_segments(p: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// For "unknown field `x`" errors: the path of `x` itself, so the position is the typo's.
fn unknown_key_path(path: &[String], message: &str) -> Option<Vec<String>> {
    let name = strict::unknown_name(message)?;
    if message.contains("unknown variant") {
        return None;
    }
    let mut p = path.to_vec();
    if p.last().map(String::as_str) != Some(name) {
        p.push(name.to_string());
    }
    Some(p)
}

/// One experiment, checked but not yet expanded.
struct Plan {
    name: String,
    base: Value,
    grid: Vec<(String, Vec<Value>)>,
    zip: Vec<(String, Vec<Value>)>,
    zip_len: usize,
    seeds: Vec<u64>,
    count: u64,
}

fn plan(
    ei: usize,
    exp: &Experiment,
    d: &Defaults,
    loc: &Locator,
    ep: &[String],
) -> Result<Plan, Issue> {
    let name = exp
        .name
        .clone()
        .unwrap_or_else(|| format!("experiment{ei}"));
    let mut np = ep.to_vec();
    np.push("name".into());
    if name.trim().is_empty()
        || name.len() > 200
        || name.chars().any(|c| c.is_control() || c == ',' || c == '/')
    {
        return Err(loc.at(&np, "expected a non-empty name of at most 200 characters without control characters, `,` or `/`"));
    }
    let mut base = Value::Mapping(Mapping::new());
    for (key, dv, ev) in [
        ("task", &d.task, &exp.task),
        ("arch", &d.arch, &exp.arch),
        ("train", &d.train, &exp.train),
        ("data_seed", &d.data_seed, &exp.data_seed),
        ("device", &d.device, &exp.device),
    ] {
        for v in [dv, ev].into_iter().flatten() {
            let mut over = Mapping::new();
            over.insert(Value::String(key.into()), v.clone());
            deep_merge(&mut base, &Value::Mapping(over));
        }
    }
    let grid = lists(exp.grid.as_ref(), "grid", loc, ep)?;
    let zip = lists(exp.zip.as_ref(), "zip", loc, ep)?;
    for (k, _) in &zip {
        if grid.iter().any(|(g, _)| g == k) {
            let mut p = ep.to_vec();
            p.extend(["zip".to_string(), k.clone()]);
            return Err(loc.at(&p, format!("`{k}` is in both grid and zip")));
        }
    }
    let zip_len = zip.first().map_or(1, |(_, v)| v.len());
    if let Some((k, v)) = zip.iter().find(|(_, v)| v.len() != zip_len) {
        let mut p = ep.to_vec();
        p.extend(["zip".to_string(), k.clone()]);
        return Err(loc.at(&p, format!("{} values, but `{}` has {zip_len}; zip lists advance together and must be equally long", v.len(), zip[0].0)));
    }
    let seeds = match (&exp.seeds, &d.seeds) {
        (Some(s), _) => seeds_of(Some(s), loc, &[ep, &["seeds".to_string()]].concat())?,
        (None, Some(s)) => seeds_of(Some(s), loc, &segs(&["defaults", "seeds"]))?,
        (None, None) => vec![0],
    };
    let count = grid
        .iter()
        .map(|(_, v)| v.len() as u64)
        .chain([zip_len as u64, seeds.len() as u64])
        .try_fold(1u64, |a, b| a.checked_mul(b))
        .unwrap_or(u64::MAX);
    if count > strict::MAX_RUNS {
        return Err(loc.at(
            ep,
            format!(
                "experiment `{name}` has {count} runs; the limit is {}",
                strict::MAX_RUNS
            ),
        ));
    }
    Ok(Plan {
        name,
        base,
        grid,
        zip,
        zip_len,
        seeds,
        count,
    })
}

impl Plan {
    /// Every run of the experiment, or every distinct mistake found in them (at most
    /// [`MAX_ISSUES_PER_EXPERIMENT`]): each run's task, train and arch sections are all checked.
    fn expand(&self, ei: usize, loc: &Locator) -> Result<Vec<RunConfig>, Vec<Issue>> {
        let swept_keys: Vec<(String, &'static str)> = self
            .grid
            .iter()
            .map(|(k, _)| (k.clone(), "grid"))
            .chain(self.zip.iter().map(|(k, _)| (k.clone(), "zip")))
            .collect();
        let combos: usize = self.grid.iter().map(|(_, v)| v.len()).product();
        let mut runs = Vec::with_capacity(self.count as usize);
        let mut issues: Vec<Issue> = vec![];
        let note = |found: Vec<Issue>, issues: &mut Vec<Issue>| {
            for i in found {
                if !issues.contains(&i) && issues.len() < MAX_ISSUES_PER_EXPERIMENT {
                    issues.push(i);
                }
            }
        };
        let mut checked_archs = std::collections::HashSet::new();
        for c in 0..combos {
            // Mixed-radix decode of c, last key fastest.
            let mut rest = c;
            let mut picks = vec![];
            for (k, vals) in self.grid.iter().rev() {
                picks.push((k, &vals[rest % vals.len()]));
                rest /= vals.len();
            }
            picks.reverse();
            'zip: for z in 0..self.zip_len {
                let mut cfg = self.base.clone();
                let mut swept = BTreeMap::new();
                for (k, v) in picks
                    .iter()
                    .copied()
                    .chain(self.zip.iter().map(|(k, vals)| (k, &vals[z])))
                {
                    let section = swept_keys
                        .iter()
                        .find(|(s, _)| s == k)
                        .map_or("grid", |(_, s)| s);
                    if let Err(m) = set_path(&mut cfg, k, v.clone()) {
                        let path = [
                            segs(&["experiments", &ei.to_string(), section]),
                            vec![k.clone()],
                        ]
                        .concat();
                        note(vec![loc.at(&path, m)], &mut issues);
                        continue 'zip;
                    }
                    swept.insert(k.clone(), v.clone());
                }
                let combo = swept
                    .iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ");
                for &seed in &self.seeds {
                    let at = |path: &[String], message: String| {
                        loc.in_run(ei, &swept_keys, path, message, &combo)
                    };
                    match self.resolve_run(&cfg, &swept, seed, &mut checked_archs, &at) {
                        Ok(rc) => runs.push(rc),
                        Err(found) => note(found, &mut issues),
                    }
                }
            }
        }
        if issues.is_empty() {
            Ok(runs)
        } else {
            Err(issues)
        }
    }

    /// One run of the experiment: the config with its swept values and seed, resolved and
    /// checked; `at` locates a mistake from its path in the run.
    fn resolve_run(
        &self,
        cfg: &Value,
        swept: &BTreeMap<String, Value>,
        seed: u64,
        checked_archs: &mut std::collections::HashSet<String>,
        at: &dyn Fn(&[String], String) -> Issue,
    ) -> Result<RunConfig, Vec<Issue>> {
        let mut run = cfg.clone();
        set_path(&mut run, "experiment", Value::String(self.name.clone()))
            .expect("root is a mapping");
        set_path(&mut run, "seed", Value::Number(seed.into())).expect("root is a mapping");
        let mut rc: RunConfig = match serde_path_to_error::deserialize(run) {
            Ok(rc) => rc,
            Err(e) => {
                let mut path = path_segments(e.path());
                let message = strict::with_hint(&e.into_inner().to_string());
                if let Some(p) = unknown_key_path(&path, &message) {
                    path = p;
                }
                return Err(vec![at(&path, message)]);
            }
        };
        rc.swept = swept.clone();
        let mut issues = vec![];
        match crate::device::canonical(&rc.device) {
            Ok(d) => rc.device = d,
            Err(m) => issues.push(at(&segs(&["device"]), m)),
        }
        if let Err((key, message)) = rc.train.check() {
            issues.push(at(&segs(&["train", key]), message));
        }
        // The task's io is needed to check the architecture: a task that does not build stops here.
        let task = match rc.task.build() {
            Ok(task) => task,
            Err(e) => {
                issues.push(at(&segs(&["task", e.field]), e.to_string()));
                return Err(issues);
            }
        };
        let io = task.io();
        // Seeds share the architecture: check each distinct (arch, io) once; the length check
        // costs nothing unless the model has a maximum length.
        let fresh = checked_archs.insert(format!("{:?}{io:?}", rc.arch));
        let checked = if fresh { rc.arch.check(io) } else { Ok(()) };
        if let Err(e) = checked.and_then(|()| rc.arch.check_length(|| task.max_time())) {
            let membench_architectures::ArchError::Invalid { field, .. } = &e;
            issues.push(at(&segs(&["arch", field]), e.to_string()));
        }
        if issues.is_empty() {
            Ok(rc)
        } else {
            Err(issues)
        }
    }
}

/// Distinct mistakes reported per experiment: a wrong value swept over a long grid would
/// otherwise repeat once per run.
const MAX_ISSUES_PER_EXPERIMENT: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "defaults:\n  train: {steps: 10, eval_interval: 5}\nexperiments:\n  - name: a\n    task: {name: copy, bits: 4, max_len: 5}\n    arch: {name: lstm, hidden_size: 8}\n";

    fn err(text: &str) -> BadInput {
        expand_file("f.yaml", text).expect_err("should be refused")
    }

    #[test]
    fn grid_zip_and_seeds_multiply() {
        let text = format!("{BASE}    grid: {{arch.hidden_size: [8, 16, 32], train.lr: [0.1, 0.01]}}\n    zip: {{task.max_len: [3, 4], train.steps: [5, 6]}}\n    seeds: [1, 5, 9]\n");
        let runs = expand_file("f.yaml", &text).unwrap();
        assert_eq!(runs.len(), 3 * 2 * 2 * 3);
        // Keys sorted, last key fastest: arch.hidden_size outer, train.lr inner.
        assert_eq!(runs[0].swept["train.lr"], Value::from(0.1));
        assert_eq!(runs[3 * 2].swept["train.lr"], Value::from(0.01));
        assert_eq!(runs[3].train.steps, 6);
        let ids: std::collections::HashSet<_> = runs.iter().map(|r| r.run_id()).collect();
        assert_eq!(ids.len(), runs.len());
    }

    #[test]
    fn every_mistake_is_reported_in_file_order() {
        let text = "experiments:\n  - name: a\n    task: {name: copy, bits: 4, max_len: 3}\n    arch: {name: lstm, hidden_size: 0}\n    train: {steps: 5, lr: -1}\n  - name: a\n    task: {name: copy, bits: 4}\n    arch: {name: lstm, hidden_size: 8}\n    train: {steps: 5}\n    grid: {train.lr: [0.1, -0.5, -0.7]}\n";
        let e = expand_file("f.yaml", text).unwrap_err();
        let at: Vec<(usize, &str)> = e.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            at,
            [
                (4, "experiments[0].arch.hidden_size"),
                (5, "experiments[0].train.lr"),
                (6, "experiments[1].name"),
                (10, "experiments[1].grid.train.lr"),
                (10, "experiments[1].grid.train.lr"),
            ],
            "{e}"
        );
    }

    #[test]
    fn typo_in_train_points_at_its_line_with_a_hint() {
        let e = err(&format!("{BASE}    train: {{lrr: 0.1}}\n"));
        let s = e.to_string();
        assert_eq!((e.issues[0].line, e.issues[0].col), (7, 13), "{s}");
        assert!(
            s.contains("experiments[0].train.lrr") && s.contains("did you mean `lr`"),
            "{s}"
        );
    }

    #[test]
    fn bad_value_in_grid_points_at_the_grid_key() {
        let e = err(&format!("{BASE}    grid:\n      train.lr: [0.1, -1.0]\n"));
        assert_eq!(e.issues[0].line, 8, "{e}");
        assert!(e.to_string().contains("train.lr"), "{e}");
    }

    #[test]
    fn unknown_task_field_inside_tagged_enum_is_located() {
        let e = err("experiments:\n  - name: a\n    task: {name: copy, bitz: 4}\n    arch: {name: lstm, hidden_size: 8}\n    train: {steps: 3}\n");
        assert_eq!(e.issues[0].line, 3, "{e}");
        assert!(e.to_string().contains("did you mean `bits`"), "{e}");
    }

    #[test]
    fn huge_grid_is_counted_not_expanded() {
        let vals = (0..1000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let e = err(&format!(
            "{BASE}    grid: {{arch.hidden_size: [{vals}], train.steps: [{vals}]}}\n"
        ));
        assert!(e.to_string().contains("1000000 runs"), "{e}");
    }
}
