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
//!     tune: {train.lr: [1e-4, 1e-3, 1e-2]}       # candidates: reports keep the best on valid
//!     tune_seeds: 1                              # optional: choose on the first seed only
//! ```
//! Allowed keys: `defaults` takes `task`, `arch`, `train`, `data_seed`, `device`, `seeds`, `tune`,
//! `tune_seeds`; an
//! experiment takes those plus `name`, `grid`, `zip`. Dotted keys of `grid`/`zip` start with `task.`,
//! `arch.`, `train.` or are `data_seed` or `device`. Runs come out in a fixed order: experiments in
//! file order, then grid combinations (keys sorted, last key fastest) with the tuned keys after the
//! grid's (sorted, last fastest), then zip positions, then seeds.
//!
//! `tune` is a tuning protocol: its keys (`train.` or `arch.` settings) multiply the runs like a
//! grid, but each of its combinations is a *candidate*, and the reports (`report::tune`) keep, per
//! setting and seed, the candidate with the best validation score. An experiment's `tune` keys
//! are merged over the defaults' (the experiment's list of a key wins). A tuned key may not also
//! be swept, and `task.`, `data_seed` and `device` cannot be tuned: a choice among tasks or data
//! made on their own scores would compare different problems.
//!
//! `tune_seeds: K` (1 <= K <= the number of seeds; needs `tune`) makes the choice once per setting,
//! on the experiment's first K seeds (by the mean of their validation scores), and runs only the
//! chosen candidate on the other seeds (`record::choice`): the grid still lists every candidate at
//! every seed, and the sweep skips the followers whose candidate was not chosen. With seeds 3 and
//! two candidates that is 4 runs per setting instead of 6.
//!
//! Every mistake is an error located in the file ([`crate::input::strict`]), and every mistake is
//! reported in one pass: the defaults, each experiment and each of their sections are read on
//! their own, key by key, where they are written; then each run's merged sections are checked
//! for what only the merge shows (a missing section, impossible values, a grid value), pointing
//! at the grid key, experiment key or default that supplied the bad value.

use crate::input::config::{RunConfig, TrainConfig};
use crate::input::strict::{self, BadInput, Issue, Positions};
use membench_architectures::{ArchConfig, ArchError};
use membench_tasks::TaskConfig;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Top-level keys of a resolved run that grid/zip keys may set.
const RUN_KEYS: [&str; 5] = ["task", "arch", "train", "data_seed", "device"];

/// The file's top level. Its parts are read one by one (defaults, each experiment, each section),
/// so that a mistake in one hides none in another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    defaults: Option<Value>,
    experiments: Vec<Value>,
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
    tune: Option<Mapping>,
    tune_seeds: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Experiment {
    /// Read as written (`0123` stays `0123`): see [`Positions::name_text`].
    name: Option<Value>,
    task: Option<Value>,
    arch: Option<Value>,
    train: Option<Value>,
    data_seed: Option<Value>,
    device: Option<Value>,
    seeds: Option<Value>,
    grid: Option<Mapping>,
    zip: Option<Mapping>,
    tune: Option<Mapping>,
    tune_seeds: Option<Value>,
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

/// Where the list of a grid, zip or tune key is written, to locate the mistakes of its values.
struct Origin {
    key: String,
    /// The mapping that holds the list: `experiments.<i>.grid`, `defaults.tune`, ...
    written_at: Vec<String>,
}

/// Builds located issues for one file.
struct Locator<'a> {
    pos: &'a Positions,
}

impl Locator<'_> {
    /// An issue at `path` (or the nearest written prefix of it), keyed by the whole path.
    fn at(&self, path: &[String], message: impl Into<String>) -> Issue {
        let (line, col) = match self.pos.nearest(path) {
            Some((p, _)) => p,
            // Nothing of the path is written: the mistake is the whole file's, at its first node.
            None => self.pos.get(&[]).unwrap_or((1, 1)),
        };
        Issue {
            line,
            col,
            key: strict::display_path(path),
            message: message.into(),
        }
    }

    /// An issue in a resolved run of experiment `ei`, at `run_path` inside the RunConfig: points at
    /// the grid/zip/tune key that set it, else the experiment's own key, else the default, else
    /// the experiment itself.
    fn in_run(&self, ei: usize, swept: &[Origin], run_path: &[String], message: String) -> Issue {
        let exp = segs(&["experiments", &ei.to_string()]);
        for dim in swept {
            let key = &dim.key;
            let kp: Vec<&str> = key.split('.').collect();
            if run_path.len() >= kp.len() && run_path.iter().zip(&kp).all(|(a, b)| a == b) {
                let mut p = dim.written_at.clone();
                p.push(key.clone());
                let mut issue = self.at(&p, message);
                issue.key = format!("{}.{}", issue.key, run_path[kp.len()..].join("."))
                    .trim_end_matches('.')
                    .to_string();
                return issue;
            }
        }
        let mut in_exp = exp.clone();
        in_exp.extend(run_path.iter().cloned());
        let mut in_defaults = segs(&["defaults"]);
        in_defaults.extend(run_path.iter().cloned());
        // The key itself where it is written (the experiment's wins over the default's), else the
        // nearest section that holds it.
        for path in [&in_exp, &in_defaults] {
            if let Some((line, col)) = self.pos.get(path) {
                return Issue {
                    line,
                    col,
                    key: strict::display_path(path),
                    message,
                };
            }
        }
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

/// `tune_seeds: K`: the first K of `seeds`, the seeds the tuning choice is made on.
fn tune_seeds_of(v: &Value, seeds: &[u64], tuned: bool) -> Result<Vec<u64>, String> {
    let n = seeds.len();
    let k = match v.as_u64() {
        Some(k) if (1..=n as u64).contains(&k) => k as usize,
        _ => {
            return Err(format!(
                "{}: expected a count of seeds 1..={n} (the experiment has {n} seeds): the choice \
                 among candidates is made on the first K seeds, and the others run the chosen one",
                serde_yaml::to_string(v).unwrap_or_default().trim()
            ))
        }
    };
    if !tuned {
        return Err(
            "`tune_seeds` without `tune`: there are no candidates to choose among (add a `tune:` \
             list, or remove `tune_seeds`)"
                .into(),
        );
    }
    Ok(seeds[..k].to_vec())
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

/// The checked keys of a grid/zip mapping (dotted keys into a run, each with a non-empty list);
/// a bad key is reported and left out, and the section it was meant to set is tainted.
fn lists(
    m: Option<&Mapping>,
    section: &'static str,
    loc: &Locator,
    exp: &[String],
    issues: &mut Vec<Issue>,
    tainted: &mut Tainted,
) -> Vec<(String, Vec<Value>)> {
    let Some(m) = m else { return vec![] };
    let mut sp = exp.to_vec();
    sp.push(section.into());
    if m.is_empty() {
        issues.push(loc.at(
            &sp,
            format!("an empty {section}; give it keys such as `arch.hidden_size: [64, 128]`, or leave it out"),
        ));
        return vec![];
    }
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            issues.push(loc.at(
                &sp,
                format!(
                    "keys must be dotted key strings such as `arch.hidden_size`, found {}",
                    kind_of(k)
                ),
            ));
            tainted.extend(RUN_KEYS);
            continue;
        };
        let mut p = sp.clone();
        p.push(key.to_string());
        let first = key.split('.').next().unwrap_or("");
        let problem = if !RUN_KEYS.contains(&first)
            || key.split('.').any(str::is_empty)
            || (matches!(first, "data_seed" | "device") && key != first)
        {
            let hint = strict::closest(first, RUN_KEYS)
                .map(|m| format!(" (did you mean `{m}{}`?)", &key[first.len()..]))
                .unwrap_or_default();
            Some(format!("`{key}` does not name a run setting; keys start with one of `task.`, `arch.`, `train.`, or are `data_seed` or `device`{hint}"))
        } else {
            match v {
                Value::Sequence(vals) if vals.is_empty() => {
                    Some("the list is empty, so there are no runs".to_string())
                }
                Value::Sequence(_) => None,
                _ => Some(format!(
                    "expected a list of values to sweep, found {}",
                    kind_of(v)
                )),
            }
        };
        match (problem, v) {
            (None, Value::Sequence(vals)) => {
                out.insert(key.to_string(), vals.clone());
            }
            (problem, _) => {
                issues.push(loc.at(&p, problem.unwrap_or_default()));
                taint(tainted, first);
            }
        }
    }
    out.into_iter().collect()
}

/// The tuned keys of experiment `exp` (at `ep`): the defaults' `tune` with the experiment's merged
/// over it (the experiment's list of a key wins), each with its candidates and where its list is
/// written. A key that cannot be tuned or is also swept (`swept`: the grid and zip keys) is
/// reported and left out.
fn tune_lists(
    exp: &Experiment,
    d: &Defaults,
    swept: &[&str],
    loc: &Locator,
    ep: &[String],
    issues: &mut Vec<Issue>,
    tainted: &mut Tainted,
) -> Vec<(String, Vec<Value>, Vec<String>)> {
    let mut merged: BTreeMap<String, (Vec<Value>, Vec<String>)> = BTreeMap::new();
    for (m, at) in [(&d.tune, segs(&["defaults"])), (&exp.tune, ep.to_vec())] {
        for (k, values) in lists(m.as_ref(), "tune", loc, &at, issues, tainted) {
            merged.insert(k, (values, [at.clone(), segs(&["tune"])].concat()));
        }
    }
    let mut out = vec![];
    for (k, (values, written_at)) in merged {
        let first = k.split('.').next().unwrap_or("");
        let problem = if !matches!(first, "train" | "arch") {
            Some(format!(
                "`{k}` cannot be tuned: a tuning protocol chooses among `train.` and `arch.` settings by their \
                 validation score; choosing the task or its data that way would compare different problems \
                 (sweep it in `grid` instead)"
            ))
        } else if swept.contains(&k.as_str()) {
            Some(format!(
                "`{k}` is both swept and tuned; a key is either a setting of the tables (grid, zip) or a \
                 candidate the reports choose among (tune)"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                issues.push(loc.at(&[written_at, vec![k.clone()]].concat(), message));
                taint(tainted, &k);
            }
            None => out.push((k, values, written_at)),
        }
    }
    out
}

/// Run sections (`task`, `arch`, `train`, `data_seed`, `device`) in which a mistake was already
/// reported where it is written. A run's merged value of such a section goes on without the bad
/// keys, and what it lacks is not reported: that would be the mistake's consequence (a section
/// missing because its key was misspelt, a key missing because its value or grid list was bad).
type Tainted = BTreeSet<&'static str>;

/// Taints the run section that `key` (a section, a dotted key or a misspelling of one) sets.
fn taint(tainted: &mut Tainted, key: &str) {
    let first = key.split('.').next().unwrap_or("");
    if let Some(section) = strict::closest(first, RUN_KEYS) {
        tainted.insert(section);
    }
}

/// Reads one layer (the `defaults`, or an experiment over them) as `T`: its own keys, each
/// mistake reported where it is written; unknown keys taint the section they may have been meant
/// to be. Returns the `T` of the keys that read.
fn read_layer<T: serde::de::DeserializeOwned>(
    value: &Value,
    at: &[String],
    loc: &Locator,
    issues: &mut Vec<Issue>,
    tainted: &mut Tainted,
) -> Option<T> {
    let locate = |p: &[String], m: String| loc.at(&[at, p].concat(), m);
    let read = strict::read_keys::<T>(value, None, false, &locate);
    for i in &read.issues {
        if let Some(name) = strict::unknown_name(&i.message) {
            taint(tainted, name);
        }
    }
    issues.extend(read.issues);
    read.value
}

/// Checks the `task`, `arch` and `train` sections written in one layer on their own, so that
/// every unknown key and wrong type is reported where it is written, once, whatever the other
/// layer and the grid add. A section with a mistake is tainted and goes on without its bad keys
/// (or not at all after an unknown `name`), so that the runs still check the values it has right.
fn check_sections(
    [task, arch, train]: [&mut Option<Value>; 3],
    at: &[String],
    loc: &Locator,
    issues: &mut Vec<Issue>,
    tainted: &mut Tainted,
) {
    fn one<T: serde::de::DeserializeOwned>(
        section: &mut Option<Value>,
        key: &'static str,
        tag: Option<&str>,
        at: &[String],
        loc: &Locator,
        issues: &mut Vec<Issue>,
        tainted: &mut Tainted,
    ) {
        let Some(v) = section else { return };
        let at = [at, &[key.to_string()]].concat();
        let locate = |p: &[String], m: String| loc.at(&[&at[..], p].concat(), m);
        let read = strict::read_keys::<T>(v, tag, true, &locate);
        if !read.issues.is_empty() {
            tainted.insert(key);
            issues.extend(read.issues);
            *section = read.kept;
        }
    }
    one::<TaskConfig>(task, "task", Some("name"), at, loc, issues, tainted);
    one::<ArchConfig>(arch, "arch", Some("name"), at, loc, issues, tainted);
    one::<TrainConfig>(train, "train", None, at, loc, issues, tainted);
}

/// Every run of `text` (the experiments file `file`), resolved and checked, in the documented
/// order; or every mistake found, located in the file: the defaults, every experiment, and each
/// section of each are read on their own, so no mistake hides another.
pub fn expand_file(file: &str, text: &str) -> Result<Vec<RunConfig>, BadInput> {
    // Issues in file order (a stable sort: one place's issues keep the order they were found),
    // each once: a mistake in the defaults shows in the runs of every experiment.
    let bad = |mut issues: Vec<Issue>| {
        issues.sort_by_key(|i| (i.line, i.col));
        let mut seen = std::collections::HashSet::new();
        issues.retain(|i| seen.insert((i.line, i.col, i.key.clone(), i.message.clone())));
        BadInput {
            file: file.to_string(),
            issues,
        }
    };
    let pos = Positions::parse(text).map_err(|i| bad(vec![i]))?;
    let loc = Locator { pos: &pos };
    let value = parse_value(text, &loc).map_err(|i| bad(vec![i]))?;
    let mut issues = vec![];
    let read = strict::read_keys::<FileSchema>(&value, None, false, &|p, m| loc.at(p, m));
    issues.extend(read.issues);
    let Some(schema) = read.value else {
        return Err(bad(issues));
    };
    if schema.experiments.is_empty() {
        issues.push(loc.at(
            &segs(&["experiments"]),
            "the list is empty, so there are no runs",
        ));
        return Err(bad(issues));
    }
    let dp = segs(&["defaults"]);
    let mut defaults_tainted = Tainted::new();
    let mut defaults: Defaults = match &schema.defaults {
        None => Defaults::default(),
        Some(v) => read_layer(v, &dp, &loc, &mut issues, &mut defaults_tainted).unwrap_or_default(),
    };
    let d = &mut defaults;
    check_sections(
        [&mut d.task, &mut d.arch, &mut d.train],
        &dp,
        &loc,
        &mut issues,
        &mut defaults_tainted,
    );
    let mut plans = vec![];
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut total: u64 = 0;
    for (ei, ev) in schema.experiments.iter().enumerate() {
        let ep = segs(&["experiments", &ei.to_string()]);
        let mut tainted = defaults_tainted.clone();
        let Some(mut exp) = read_layer::<Experiment>(ev, &ep, &loc, &mut issues, &mut tainted)
        else {
            continue;
        };
        let e = &mut exp;
        check_sections(
            [&mut e.task, &mut e.arch, &mut e.train],
            &ep,
            &loc,
            &mut issues,
            &mut tainted,
        );
        let Some(p) = plan(ei, &exp, &defaults, &loc, &ep, tainted, &mut issues) else {
            continue;
        };
        if let Some(first) = p
            .name_ok
            .then(|| names.insert(p.name.clone(), ei))
            .flatten()
        {
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
    // Other experiments' mistakes do not stop the runs of the experiments that planned from
    // being checked: every mistake is reported at once.
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
    for p in &plans {
        match p.expand(&loc) {
            Ok(rs) => {
                for r in rs {
                    if let Some(first) = ids.insert(r.run_id(), p.ei) {
                        issues.push(loc.at(
                            &segs(&["experiments", &p.ei.to_string()]),
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

/// The file as one YAML value; what fails here (a number beyond 64 bits, a second document, an
/// alias bomb) cannot be read past, so it is the only issue reported.
fn parse_value(text: &str, loc: &Locator) -> Result<Value, Issue> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path: Vec<String> = strict::path_segments(e.path());
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
        match inner.location() {
            Some(l) => Issue {
                line: l.line(),
                col: l.column(),
                key: strict::display_path(&path),
                message,
            },
            None => loc.at(&path, message),
        }
    })
}

/// `membench validate`: check an experiments file.
#[derive(clap::Args)]
pub struct ValidateArgs {
    pub file: std::path::PathBuf,
}

/// `membench validate`: every mistake of the file with file:line:col (bad input), or its run count.
pub fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    let runs = load(&args.file)?;
    // Followers of a `tune_seeds` choice: of each setting's candidates on a later seed, one runs.
    let mut followers: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.follows_choice()) {
        *followers.entry((r.setting_key(), r.seed)).or_default() += 1;
    }
    let skipped: usize = followers.values().map(|n| n - 1).sum();
    let made = if skipped > 0 {
        format!(
            " ({} made: with tune_seeds, the later seeds run only the chosen candidate)",
            runs.len() - skipped
        )
    } else {
        String::new()
    };
    println!("{}: ok, {} runs{made}", args.file.display(), runs.len());
    Ok(())
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

/// One experiment, checked but not yet expanded.
struct Plan {
    /// Its index in `experiments`.
    ei: usize,
    name: String,
    /// False when `name` stands in for a bad name (which then is not compared for duplicates).
    name_ok: bool,
    base: Value,
    grid: Vec<(String, Vec<Value>)>,
    zip: Vec<(String, Vec<Value>)>,
    zip_len: usize,
    /// The tuned keys: each with its candidate values and where its list is written.
    tune: Vec<(String, Vec<Value>, Vec<String>)>,
    seeds: Vec<u64>,
    /// The seeds the choice among candidates is made on (`tune_seeds`); empty: every seed's own.
    tune_seeds: Vec<u64>,
    count: u64,
    /// Sections whose mistakes were reported where they are written; not checked in the runs.
    tainted: Tainted,
}

/// The experiment's name: as written, or `experiment<index>`.
fn name_of(exp: &Experiment, ei: usize, loc: &Locator, np: &[String]) -> Result<String, Issue> {
    let name = match &exp.name {
        None => format!("experiment{ei}"),
        Some(Value::String(s)) => s.clone(),
        // A plain scalar such as `0123` or `true`: the text as written, as serde reads a string.
        Some(v @ (Value::Number(_) | Value::Bool(_))) => match loc.pos.name_text(np) {
            Some(t) => t.to_string(),
            None => serde_yaml::to_string(v)
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
        Some(v) => {
            return Err(loc.at(
                np,
                format!("expected a name (a string), found {}", kind_of(v)),
            ))
        }
    };
    if name.trim().is_empty()
        || name.len() > 200
        || name.chars().any(|c| c.is_control() || c == ',' || c == '/')
    {
        return Err(loc.at(np, "expected a non-empty name of at most 200 characters without control characters, `,` or `/`"));
    }
    Ok(name)
}

/// Checks experiment `ei` (its name, grid, zip and seeds; its sections were read by
/// [`check_sections`]) and merges it over the defaults; every mistake goes to `issues`. None when
/// its runs cannot be listed (over [`strict::MAX_RUNS`]).
fn plan(
    ei: usize,
    exp: &Experiment,
    d: &Defaults,
    loc: &Locator,
    ep: &[String],
    mut tainted: Tainted,
    issues: &mut Vec<Issue>,
) -> Option<Plan> {
    let mut np = ep.to_vec();
    np.push("name".into());
    // A bad name is reported; the runs are still checked under a stand-in.
    let (name, name_ok) = match name_of(exp, ei, loc, &np) {
        Ok(name) => (name, true),
        Err(i) => {
            issues.push(i);
            (format!("experiment{ei}"), false)
        }
    };
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
    let grid = lists(exp.grid.as_ref(), "grid", loc, ep, issues, &mut tainted);
    let mut zip = lists(exp.zip.as_ref(), "zip", loc, ep, issues, &mut tainted);
    zip.retain(|(k, _)| {
        let in_grid = grid.iter().any(|(g, _)| g == k);
        if in_grid {
            let mut p = ep.to_vec();
            p.extend(["zip".to_string(), k.clone()]);
            issues.push(loc.at(&p, format!("`{k}` is in both grid and zip")));
            taint(&mut tainted, k);
        }
        !in_grid
    });
    let zip_len = zip.first().map_or(1, |(_, v)| v.len());
    if zip.iter().any(|(_, v)| v.len() != zip_len) {
        for (k, v) in zip.iter().filter(|(_, v)| v.len() != zip_len) {
            let mut p = ep.to_vec();
            p.extend(["zip".to_string(), k.clone()]);
            issues.push(loc.at(&p, format!("{} values, but `{}` has {zip_len}; zip lists advance together and must be equally long", v.len(), zip[0].0)));
        }
        // Which list is the wrong one is unknown: none of them is applied.
        for (k, _) in &zip {
            taint(&mut tainted, k);
        }
        zip.clear();
    }
    let zip_len = zip.first().map_or(1, |(_, v)| v.len());
    let swept: Vec<&str> = grid.iter().chain(&zip).map(|(k, _)| k.as_str()).collect();
    let tune = tune_lists(exp, d, &swept, loc, ep, issues, &mut tainted);
    let seeds = match (&exp.seeds, &d.seeds) {
        (Some(s), _) => seeds_of(Some(s), loc, &[ep, &["seeds".to_string()]].concat()),
        (None, Some(s)) => seeds_of(Some(s), loc, &segs(&["defaults", "seeds"])),
        (None, None) => Ok(vec![0]),
    };
    // Bad seeds are reported; the runs are still checked with seed 0.
    let seeds = seeds.unwrap_or_else(|i| {
        issues.push(i);
        vec![0]
    });
    let tune_seeds = match (&exp.tune_seeds, &d.tune_seeds) {
        (Some(k), _) => Some((k, [ep, &["tune_seeds".to_string()]].concat())),
        (None, Some(k)) => Some((k, segs(&["defaults", "tune_seeds"]))),
        (None, None) => None,
    }
    .map_or_else(Vec::new, |(k, at)| {
        tune_seeds_of(k, &seeds, !tune.is_empty()).unwrap_or_else(|m| {
            issues.push(loc.at(&at, m));
            vec![]
        })
    });
    let count = grid
        .iter()
        .map(|(_, v)| v.len() as u64)
        .chain(tune.iter().map(|(_, v, _)| v.len() as u64))
        .chain([zip_len as u64, seeds.len() as u64])
        .try_fold(1u64, |a, b| a.checked_mul(b))
        .unwrap_or(u64::MAX);
    if count > strict::MAX_RUNS {
        issues.push(loc.at(
            ep,
            format!(
                "experiment `{name}` has {count} runs; the limit is {}",
                strict::MAX_RUNS
            ),
        ));
        return None;
    }
    Some(Plan {
        ei,
        name,
        name_ok,
        base,
        grid,
        zip,
        zip_len,
        tune,
        seeds,
        tune_seeds,
        count,
        tainted,
    })
}

impl Plan {
    /// Every run of the experiment, or every distinct mistake found in them (at most
    /// [`MAX_ISSUES_PER_EXPERIMENT`]): each run's task, train and arch sections are all checked.
    /// A mistake found in some of the grid's runs but not all names the first such run.
    fn expand(&self, loc: &Locator) -> Result<Vec<RunConfig>, Vec<Issue>> {
        let ei = self.ei;
        let exp = segs(&["experiments", &ei.to_string()]);
        let origin = |k: &String, section: &str| Origin {
            key: k.clone(),
            written_at: [exp.clone(), segs(&[section])].concat(),
        };
        let swept_keys: Vec<Origin> = self
            .grid
            .iter()
            .map(|(k, _)| origin(k, "grid"))
            .chain(self.zip.iter().map(|(k, _)| origin(k, "zip")))
            .chain(self.tune.iter().map(|(k, _, at)| Origin {
                key: k.clone(),
                written_at: at.clone(),
            }))
            .collect();
        // The grid's keys, then the tuned keys (whose values go to `tune`, not `swept`).
        let dims: Vec<(&String, &Vec<Value>, bool)> = self
            .grid
            .iter()
            .map(|(k, v)| (k, v, false))
            .chain(self.tune.iter().map(|(k, v, _)| (k, v, true)))
            .collect();
        let combos: usize = dims.iter().map(|(_, v, _)| v.len()).product();
        let mut runs = Vec::with_capacity(self.count as usize);
        // Each distinct mistake with the swept values of the runs it was found in.
        let mut issues: Vec<(Issue, Vec<String>)> = vec![];
        let mut combos_checked = 0usize;
        let note = |found: Vec<Issue>, combo: &str, issues: &mut Vec<(Issue, Vec<String>)>| {
            for i in found {
                match issues.iter().position(|(j, _)| *j == i) {
                    Some(k) => {
                        let combos = &mut issues[k].1;
                        // Seeds of one setting share its mistakes: count the setting once.
                        if combos.last().map(String::as_str) != Some(combo) {
                            combos.push(combo.to_string());
                        }
                    }
                    None if issues.len() < MAX_ISSUES_PER_EXPERIMENT => {
                        issues.push((i, vec![combo.to_string()]))
                    }
                    None => {}
                }
            }
        };
        for c in 0..combos {
            // Mixed-radix decode of c, last key fastest.
            let mut rest = c;
            let mut picks = vec![];
            for (k, vals, tuned) in dims.iter().rev() {
                picks.push((*k, &vals[rest % vals.len()], *tuned));
                rest /= vals.len();
            }
            picks.reverse();
            'zip: for z in 0..self.zip_len {
                let mut cfg = self.base.clone();
                let (mut swept, mut tune) = (BTreeMap::new(), BTreeMap::new());
                for (k, v, tuned) in picks
                    .iter()
                    .copied()
                    .chain(self.zip.iter().map(|(k, vals)| (k, &vals[z], false)))
                {
                    if let Err(m) = set_path(&mut cfg, k, v.clone()) {
                        let at = swept_keys.iter().find(|o| &o.key == k).map_or_else(
                            || [exp.clone(), segs(&["grid"])].concat(),
                            |o| o.written_at.clone(),
                        );
                        note(
                            vec![loc.at(&[at, vec![k.clone()]].concat(), m)],
                            "",
                            &mut issues,
                        );
                        continue 'zip;
                    }
                    let into = if tuned { &mut tune } else { &mut swept };
                    into.insert(k.clone(), v.clone());
                }
                let combo = swept
                    .iter()
                    .chain(&tune)
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ");
                combos_checked += 1;
                for &seed in &self.seeds {
                    let at = |path: &[String], message: String| {
                        loc.in_run(ei, &swept_keys, path, message)
                    };
                    match self.resolve_run(&cfg, (&swept, &tune), seed, &at) {
                        Ok(rc) => runs.push(rc),
                        Err(found) => note(found, &combo, &mut issues),
                    }
                }
            }
        }
        if issues.is_empty() {
            return Ok(runs);
        }
        Err(issues
            .into_iter()
            .map(|(mut i, combos)| {
                let (first, n) = (&combos[0], combos.len());
                if !first.is_empty() && n < combos_checked {
                    i.message = match n {
                        1 => format!("{} (in the run with {first})", i.message),
                        n => format!(
                            "{} (in {n} of the {combos_checked} swept settings, first the run with {first})",
                            i.message
                        ),
                    };
                }
                i
            })
            .collect())
    }

    /// One run of the experiment: the config with its swept and tuned values and seed, resolved
    /// and checked, each section on its own (a tainted one not at all: its mistakes are reported
    /// where they are written); `at` locates a mistake from its path in the run.
    fn resolve_run(
        &self,
        cfg: &Value,
        (swept, tune): (&BTreeMap<String, Value>, &BTreeMap<String, Value>),
        seed: u64,
        at: &dyn Fn(&[String], String) -> Issue,
    ) -> Result<RunConfig, Vec<Issue>> {
        let mut issues = vec![];
        let task = self.section::<TaskConfig>(cfg, "task", Some("name"), at, &mut issues);
        let arch = self.section::<ArchConfig>(cfg, "arch", Some("name"), at, &mut issues);
        let train = self.section::<TrainConfig>(cfg, "train", None, at, &mut issues);
        // The defaults of RunConfig's `data_seed` and `device`.
        let data_seed = self
            .section::<u64>(cfg, "data_seed", None, at, &mut issues)
            .or_else(|| cfg.get("data_seed").is_none().then_some(0));
        let device = match cfg.get("device") {
            None => Some("cpu".to_string()),
            Some(_) => self
                .section::<String>(cfg, "device", None, at, &mut issues)
                .and_then(|d| {
                    crate::input::config::canonical(&d)
                        .map_err(|m| issues.push(at(&segs(&["device"]), m)))
                        .ok()
                }),
        };
        if let Some(train) = &train {
            for (key, message) in train.check() {
                issues.push(at(&segs(&["train", key]), message));
            }
        }
        // Every impossible value of the task and of the architecture, each at its key.
        let built = task.as_ref().and_then(|t| {
            let mut found = t.mistakes();
            let built = if found.is_empty() {
                t.build().map_err(|e| found.push(e)).ok()
            } else {
                None
            };
            for e in found {
                issues.push(at(&segs(&["task", e.field]), e.to_string()));
            }
            built
        });
        if let Some(arch) = &arch {
            let field = |e: &ArchError| {
                let ArchError::Invalid { field, .. } = e;
                *field
            };
            let found = arch.mistakes();
            // The length check judges max_len, unless max_len is wrong on its own.
            let length = match &built {
                Some(task) if found.iter().all(|e| field(e) != "max_len") => {
                    arch.check_length(|| task.max_time()).err()
                }
                _ => None,
            };
            for e in found.iter().chain(&length) {
                issues.push(at(&segs(&["arch", field(e)]), e.to_string()));
            }
        }
        match (task, arch, train, data_seed, device) {
            (Some(task), Some(arch), Some(train), Some(data_seed), Some(device))
                if issues.is_empty() && built.is_some() =>
            {
                Ok(RunConfig {
                    experiment: self.name.clone(),
                    task,
                    arch,
                    train,
                    seed,
                    data_seed,
                    device,
                    swept: swept.clone(),
                    tune: tune.clone(),
                    tune_seeds: self.tune_seeds.clone(),
                })
            }
            _ => Err(issues),
        }
    }

    /// The run's `key` section read as a `T`, every mistake in it reported; None when missing or
    /// wrong. In a tainted section (its mistakes reported where written, its bad keys left out)
    /// missing keys are not reported: they may be the bad ones.
    fn section<T: serde::de::DeserializeOwned>(
        &self,
        cfg: &Value,
        key: &'static str,
        tag: Option<&str>,
        at: &dyn Fn(&[String], String) -> Issue,
        issues: &mut Vec<Issue>,
    ) -> Option<T> {
        let tainted = self.tainted.contains(key);
        let Some(v) = cfg.get(key) else {
            if !tainted && matches!(key, "task" | "arch" | "train") {
                issues.push(at(
                    &segs(&[key]),
                    format!("no `{key}` settings (absent or empty): every run needs them, in the experiment or in `defaults`"),
                ));
            }
            return None;
        };
        let locate = |p: &[String], m: String| at(&[&segs(&[key])[..], p].concat(), m);
        let read = strict::read_keys::<T>(v, tag, tainted, &locate);
        let ok = read.issues.is_empty();
        issues.extend(read.issues);
        read.value.filter(|_| ok)
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
    fn tuned_keys_multiply_as_candidates_after_the_grid() {
        let text = format!("{BASE}    grid: {{arch.hidden_size: [8, 16]}}\n    tune: {{train.lr: [0.1, 0.01, 0.001], train.weight_decay: [0, 0.1]}}\n    seeds: 2\n");
        let runs = expand_file("f.yaml", &text).unwrap();
        assert_eq!(runs.len(), 2 * 3 * 2 * 2);
        // Grid outer, then the tuned keys (sorted, last fastest), then seeds.
        let at = |i: usize| {
            let r = &runs[i];
            (
                r.swept["arch.hidden_size"].as_u64().unwrap(),
                r.train.lr,
                r.train.weight_decay,
                r.seed,
            )
        };
        assert_eq!(at(0), (8, 0.1, 0.0, 0));
        assert_eq!(at(1), (8, 0.1, 0.0, 1));
        assert_eq!(at(2), (8, 0.1, 0.1, 0));
        assert_eq!(at(4), (8, 0.01, 0.0, 0));
        assert_eq!(at(12), (16, 0.1, 0.0, 0));
        // Tuned values are the run's candidate, never a swept column.
        assert!(runs.iter().all(|r| r.swept.len() == 1 && r.tune.len() == 2));
        assert_eq!(runs[4].tune["train.lr"], Value::from(0.01));
        let ids: std::collections::HashSet<_> = runs.iter().map(|r| r.run_id()).collect();
        assert_eq!(ids.len(), runs.len());
    }

    #[test]
    fn tune_seeds_marks_the_choosing_seeds_and_leaves_run_ids_as_they_were() {
        let tuned = format!("{BASE}    tune: {{train.lr: [0.1, 0.01]}}\n    seeds: [5, 3, 9]\n");
        let plain = expand_file("f.yaml", &tuned).unwrap();
        let first = expand_file("f.yaml", &format!("{tuned}    tune_seeds: 1\n")).unwrap();
        // Every candidate at every seed is still listed, with the same ids.
        let ids = |runs: &[RunConfig]| runs.iter().map(RunConfig::run_id).collect::<Vec<_>>();
        assert_eq!(ids(&plain), ids(&first));
        assert!(plain
            .iter()
            .all(|r| r.tune_seeds.is_empty() && !r.follows_choice()));
        // The first seed *listed* chooses; the others follow.
        assert!(first.iter().all(|r| r.tune_seeds == [5]));
        let followers: Vec<u64> = first
            .iter()
            .filter(|r| r.follows_choice())
            .map(|r| r.seed)
            .collect();
        assert_eq!(followers, [3, 9, 3, 9]);
        // The protocol is in the saved config (the row and the reports read it), not in the id.
        assert!(serde_yaml::to_string(&first[0])
            .unwrap()
            .contains("tune_seeds"));
        // From the defaults, two seeds.
        let two = format!(
            "defaults:\n  tune_seeds: 2\n  tune: {{train.lr: [0.1, 0.01]}}\n  seeds: 3\n{}",
            &BASE["defaults:\n".len()..]
        );
        let runs = expand_file("f.yaml", &two).unwrap();
        assert!(runs.iter().all(|r| r.tune_seeds == [0, 1]));
        assert_eq!(runs.iter().filter(|r| r.follows_choice()).count(), 2);
    }

    #[test]
    fn tune_seeds_mistakes_are_located() {
        let at = |text: String| {
            let e = err(&text);
            (e.issues[0].line, e.issues[0].key.clone(), e.to_string())
        };
        let tuned = format!("{BASE}    tune: {{train.lr: [0.1, 0.01]}}\n    seeds: 2\n");
        for bad in ["0", "3", "-1", "one", "[0]"] {
            let (line, key, e) = at(format!("{tuned}    tune_seeds: {bad}\n"));
            assert_eq!(
                (line, key.as_str()),
                (9, "experiments[0].tune_seeds"),
                "{e}"
            );
            assert!(e.contains("expected a count of seeds 1..=2"), "{e}");
        }
        let (line, _, e) = at(format!("{BASE}    seeds: 2\n    tune_seeds: 1\n"));
        assert_eq!(line, 8);
        assert!(e.contains("`tune_seeds` without `tune`"), "{e}");
        let (_, _, e) = at(format!("{tuned}    tune_seed: 1\n"));
        assert!(
            e.contains("tune_seeds"),
            "a misspelling suggests the key: {e}"
        );
    }

    #[test]
    fn an_untuned_run_has_no_tune_in_its_canonical_yaml() {
        // Run ids of files written before `tune` existed stay what they were.
        let run = &expand_file("f.yaml", BASE).unwrap()[0];
        let yaml = serde_yaml::to_string(run).unwrap();
        assert!(!yaml.contains("tune"), "{yaml}");
        let tuned = format!("{BASE}    tune: {{train.lr: [0.001]}}\n");
        let run = &expand_file("f.yaml", &tuned).unwrap()[0];
        assert!(serde_yaml::to_string(run).unwrap().contains("tune:"));
    }

    #[test]
    fn a_run_without_train_examples_has_none_in_its_canonical_yaml() {
        // Run ids of files written before finite pools existed stay what they were.
        let run = &expand_file("f.yaml", BASE).unwrap()[0];
        assert!(!serde_yaml::to_string(run)
            .unwrap()
            .contains("train_examples"));
        let pooled = format!("{BASE}    train: {{train_examples: 64}}\n");
        let pooled = &expand_file("f.yaml", &pooled).unwrap()[0];
        assert_eq!(pooled.train.train_examples, Some(64));
        assert!(serde_yaml::to_string(pooled)
            .unwrap()
            .contains("train_examples: 64"));
        assert_ne!(run.run_id(), pooled.run_id());
    }

    #[test]
    fn flush_denormals_is_in_the_canonical_yaml_only_when_set() {
        // Run ids of files written before the key existed stay what they were.
        let run = &expand_file("f.yaml", BASE).unwrap()[0];
        assert!(!run.train.flush_denormals);
        assert!(!serde_yaml::to_string(run)
            .unwrap()
            .contains("flush_denormals"));
        let flushed = format!("{BASE}    train: {{flush_denormals: true}}\n");
        let flushed = &expand_file("f.yaml", &flushed).unwrap()[0];
        assert!(flushed.train.flush_denormals);
        assert!(serde_yaml::to_string(flushed)
            .unwrap()
            .contains("flush_denormals: true"));
        assert_ne!(run.run_id(), flushed.run_id());
        let off = format!("{BASE}    train: {{flush_denormals: false}}\n");
        assert_eq!(
            expand_file("f.yaml", &off).unwrap()[0].run_id(),
            run.run_id()
        );
    }

    /// A pool needs at least one example; one smaller than a batch is allowed (every step is the
    /// whole pool, `run::pool`).
    #[test]
    fn train_examples_out_of_range_is_refused_where_written() {
        let text = format!("{BASE}    train: {{train_examples: 0}}\n    grid: {{train.train_examples: [4, 200000000]}}\n");
        let e = err(&text);
        let at: Vec<(usize, usize, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.col, i.key.as_str()))
            .collect();
        assert_eq!(
            at,
            [(8, 12, "experiments[0].grid.train.train_examples")],
            "{e}"
        );
        assert!(
            e.issues[0]
                .message
                .contains("200000000: expected 1..=100000000"),
            "{e}"
        );
        let e = err(&format!("{BASE}    train: {{train_examples: 0}}\n"));
        let at: Vec<(usize, usize, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.col, i.key.as_str()))
            .collect();
        assert_eq!(at, [(7, 13, "experiments[0].train.train_examples")], "{e}");
        assert!(e.issues[0].message.contains("0: expected 1..="), "{e}");
        let e = err(&format!("{BASE}    train: {{train_examples: -3}}\n"));
        assert_eq!(
            e.issues[0].key, "experiments[0].train.train_examples",
            "{e}"
        );
        // Smaller than the batch (32 by default): allowed.
        let small = format!("{BASE}    train: {{train_examples: 5}}\n");
        assert_eq!(
            expand_file("f.yaml", &small).unwrap()[0]
                .train
                .train_examples,
            Some(5)
        );
    }

    #[test]
    fn an_experiments_tune_list_wins_over_the_defaults_key_by_key() {
        let text = "defaults:\n  train: {steps: 10, eval_interval: 5}\n  tune: {train.lr: [0.1, 0.01], train.weight_decay: [0, 0.1]}\nexperiments:\n  - name: a\n    task: {name: copy, bits: 4, max_len: 5}\n    arch: {name: lstm, hidden_size: 8}\n    tune: {train.lr: [0.003]}\n  - name: b\n    task: {name: copy, bits: 4, max_len: 5}\n    arch: {name: gru, hidden_size: 8}\n";
        let runs = expand_file("f.yaml", text).unwrap();
        let of = |e: &str| runs.iter().filter(|r| r.experiment == e).count();
        assert_eq!((of("a"), of("b")), (2, 4));
        assert!(runs
            .iter()
            .filter(|r| r.experiment == "a")
            .all(|r| r.train.lr == 0.003 && r.tune.len() == 2));
    }

    #[test]
    fn tuning_a_task_or_a_swept_key_is_refused_where_written() {
        let text = format!("{BASE}    grid: {{train.lr: [0.1, 0.01]}}\n    tune: {{task.max_len: [3, 4], train.lr: [0.1], data_seed: [1, 2], arch.hidden_size: [4, -8]}}\n");
        let e = err(&text);
        let at: Vec<(usize, &str)> = e.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            at,
            [
                (8, "experiments[0].tune.task.max_len"),
                (8, "experiments[0].tune.train.lr"),
                (8, "experiments[0].tune.data_seed"),
                (8, "experiments[0].tune.arch.hidden_size"),
            ],
            "{e}"
        );
        assert!(e.issues[0].message.contains("cannot be tuned"), "{e}");
        assert!(e.issues[1].message.contains("both swept and tuned"), "{e}");
        // A bad candidate is located at its tune key and names the run it is in.
        assert!(
            e.issues[3]
                .message
                .contains("`hidden_size` = -8: expected 1..=65536 (in 2 of the 4 swept settings"),
            "{e}"
        );
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

    /// Issue #27: one mistake per section used to hide the next section's, and any experiment's
    /// mistake hid the defaults'.
    #[test]
    fn every_section_and_the_defaults_are_checked_in_one_pass() {
        let text = "defaults:\n  train: {batchsize: 8}\nexperiments:\n  - name: a\n    task: {name: mqar, num_kv_pair: 4}\n    arch: {name: transfomer, d_model: 16}\n    train: {steps: 10, batchsize: 8, lrr: 1}\n";
        let e = err(text);
        let at: Vec<(usize, usize, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.col, i.key.as_str()))
            .collect();
        assert_eq!(
            at,
            [
                (2, 11, "defaults.train.batchsize"),
                (5, 24, "experiments[0].task.num_kv_pair"),
                (6, 12, "experiments[0].arch.name"),
                (7, 24, "experiments[0].train.batchsize"),
                (7, 38, "experiments[0].train.lrr"),
            ],
            "{e}"
        );
        assert!(
            e.issues[2].message.contains("did you mean `transformer`"),
            "{e}"
        );
    }

    /// Issue #27: the task's and the architecture's impossible values are all reported, each at
    /// its key, the architecture's even when the task is wrong; max_len is judged against the
    /// task's longest sequence unless it is wrong on its own, and then reported once.
    #[test]
    fn every_impossible_task_and_arch_value_is_reported() {
        let text = "defaults:\n  train: {steps: 3}\nexperiments:\n  - name: a\n    task: {name: copy, bits: 0, min_len: 5, max_len: 2}\n    arch: {name: ntm, memory_slots: 0, slot_width: -1}\n  - name: b\n    task: {name: copy, max_len: 9}\n    arch: {name: transformer, d_model: 8, layers: 1, heads: 3, pos_encoding: learned, max_len: 4}\n  - name: c\n    task: {name: copy}\n    arch: {name: transformer, d_model: 8, layers: 1, heads: 2, dropout: 1, pos_encoding: learned, max_len: 0}\n";
        let e = err(text);
        let at: Vec<(usize, usize, &str)> = e
            .issues
            .iter()
            .map(|i| (i.line, i.col, i.key.as_str()))
            .collect();
        assert_eq!(
            at,
            [
                (5, 24, "experiments[0].task.bits"),
                (5, 45, "experiments[0].task.max_len"),
                (6, 23, "experiments[0].arch.memory_slots"),
                (6, 40, "experiments[0].arch.slot_width"),
                (9, 54, "experiments[1].arch.heads"),
                (9, 87, "experiments[1].arch.max_len"),
                (12, 64, "experiments[2].arch.dropout"),
                (12, 99, "experiments[2].arch.max_len"),
            ],
            "{e}"
        );
        assert!(
            e.issues[5]
                .message
                .contains("learned positions end at max_len"),
            "{e}"
        );
        assert!(e.issues[7].message.contains("expected 1..=1048576"), "{e}");
    }

    #[test]
    fn a_key_of_a_default_without_a_name_is_reported_in_the_defaults() {
        // defaults.arch names no architecture, so only the merged run can judge its keys; the
        // mistake is still located where it is written, not at the experiment's `arch:`.
        let text = "defaults:\n  train: {steps: 3}\n  arch: {hidden_sise: 8}\nexperiments:\n  - name: a\n    task: {name: copy}\n    arch: {name: lstm, hidden_size: 8}\n  - name: b\n    task: {name: copy}\n    arch: {name: gru, hidden_size: 8}\n";
        let e = err(text);
        assert_eq!(e.issues.len(), 1, "reported once for both experiments: {e}");
        let i = &e.issues[0];
        assert_eq!(
            (i.line, i.col, i.key.as_str()),
            (3, 10, "defaults.arch.hidden_sise"),
            "{e}"
        );
    }

    #[test]
    fn a_mistake_in_some_runs_of_a_grid_names_the_first_one_in_all_none() {
        let text = format!("{BASE}    train: {{momentum: 2}}\n    grid: {{train.lr: [0.1, -1, -2], arch.hidden_size: [8, 16]}}\n");
        let e = err(&text);
        let msgs: Vec<&str> = e.issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "2: expected 0 <= momentum < 1",
                "-1: expected a finite number > 0 (in 2 of the 6 swept settings, first the run with arch.hidden_size=8, train.lr=-1)",
                "-2: expected a finite number > 0 (in 2 of the 6 swept settings, first the run with arch.hidden_size=8, train.lr=-2)",
            ],
            "{e}"
        );
    }

    #[test]
    fn names_are_read_as_written() {
        // serde reads `name: 0123` into a string as `0123`; the name is part of the run id.
        let text = "defaults:\n  train: {steps: 3}\n  task: {name: copy}\n  arch: {name: lstm, hidden_size: 8}\nexperiments:\n  - name: 0123\n  - name: 1.50\n  - name: true\n  - {}\n";
        let names: Vec<String> = expand_file("f.yaml", text)
            .unwrap()
            .into_iter()
            .map(|r| r.experiment)
            .collect();
        assert_eq!(names, ["0123", "1.50", "true", "experiment3"]);
        let e = err("experiments:\n  - name: [a]\n    task: {name: cpy}\n    arch: {name: lstm, hidden_size: 8}\n    train: {steps: 3}\n");
        let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["experiments[0].name", "experiments[0].task.name"],
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

    /// Every committed reference grid holds exactly the runs its experiments file expands to:
    /// none missing (a table would silently lose a family or a seed) and none left over from an
    /// earlier version of the file (a report reads every row of runs.csv). `results/reference/<g>`
    /// belongs to `experiments/<g>.yaml`.
    #[test]
    fn every_reference_grid_holds_exactly_its_runs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut grids = 0;
        for dir in std::fs::read_dir(root.join("results/reference")).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.join("runs.csv").exists() {
                continue;
            }
            // The checked reader: a malformed row or a duplicated run id fails here too.
            let runs = crate::record::RunsCsv::read_only(&dir)
                .unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
            let name = dir.file_name().unwrap().to_str().unwrap().to_string();
            let file = root.join("experiments").join(format!("{name}.yaml"));
            // Every run of the grid but the candidates not chosen on their tuning seeds
            // (`tune_seeds`), which the sweep never makes on the other seeds.
            let grid = load(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
            let roles = crate::sweep::follow::roles(&grid, &runs, &dir);
            let expected: std::collections::BTreeSet<String> = grid
                .iter()
                .zip(&roles)
                .filter(|(_, role)| **role != crate::sweep::follow::Role::NotChosen)
                .map(|(r, _)| r.run_id())
                .collect();
            let held: std::collections::BTreeSet<String> =
                runs.rows().iter().map(|r| r["run_id"].clone()).collect();
            let missing: Vec<_> = expected.difference(&held).collect();
            let extra: Vec<_> = held.difference(&expected).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "results/reference/{name}: {} runs of {} missing {missing:?}, {} not in it {extra:?}",
                missing.len(),
                file.display(),
                extra.len()
            );
            grids += 1;
        }
        assert!(grids >= 10, "only {grids} reference grids found");
    }
}
