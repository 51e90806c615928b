//! The results as the reports read them: `<results>/runs.csv` read strictly (`Runs`, `read_runs`),
//! each row completed from its run's resolved config (`resolve`), the `--where` filters, the rows
//! of a run's eval.csv and curve.csv, and the helpers that read one cell (`lookup`, `num`, `mode`,
//! `pretty`). The files' layout is in record/mod.rs.

use crate::record;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub(super) type Row = BTreeMap<String, String>;
pub(super) use crate::record::{num, read_csv_rows};

/// runs.csv as the tables read it: header and rows, in file order.
pub(super) struct Runs {
    pub(super) header: Vec<String>,
    pub(super) rows: Vec<Row>,
}

/// Reads `<results>/runs.csv` through the sweep's own reader, without writing: a torn last line
/// (a crash mid-append) is ignored, any other malformed row (or a metric cell that is not a
/// number) is an error naming its line, and a missing file is an error (a table of nothing would
/// hide a wrong path).
pub(super) fn read_runs(results: &Path) -> Result<Runs> {
    let path = results.join("runs.csv");
    if !path.is_file() {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{}: no runs.csv here (expected the --out directory of a membench sweep)",
            path.display()
        )));
    }
    let csv = record::RunsCsv::read_only(results)?;
    csv.check_numbers()?;
    let (header, rows) = csv.into_parts();
    Ok(Runs { header, rows })
}

impl Runs {
    /// Swept keys: the columns between `arch` and `seed` (record/mod.rs puts them there; a whole
    /// swept section is named `<section>_config`).
    pub(super) fn swept_keys(&self) -> Vec<String> {
        let pos = |c: &str| self.header.iter().position(|h| h == c);
        match (pos("arch"), pos("seed")) {
            (Some(a), Some(s)) if a < s => self.header[a + 1..s]
                .iter()
                .filter(|h| *h != crate::record::TUNE_SEEDS)
                .cloned()
                .collect(),
            _ => vec![],
        }
    }
    /// The rows of one task, in file order.
    pub(super) fn of_task(&self, task: &str) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.get("task").map(String::as_str) == Some(task))
            .collect()
    }
    pub(super) fn tasks(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|r| r.get("task").cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// Row key of a run's resolved config value `key` (`task.num_kv_pairs` → `cfg:task.num_kv_pairs`).
pub(super) fn cfg_key(key: &str) -> String {
    format!("cfg:{key}")
}

/// A config value as a table cell: numbers and strings as written, lists and maps as JSON.
fn cell(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Null => None,
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        other => serde_json::to_string(other).ok(),
    }
}

/// Adds to every row the settings of its resolved config (`runs/<id>/config.yaml`): each scalar of
/// the task, arch and train sections as `cfg:<section>.<key>`, and fills the row's swept-key cells
/// that are empty because its experiment set the value directly instead of sweeping it (a width
/// sweep at 8 pairs then shows `task.num_kv_pairs = 8`, not a blank). Runs without a config file
/// (failed before writing one) keep their cells as they are.
pub(super) fn resolve(runs: &mut Runs, results: &Path) {
    let swept = runs.swept_keys();
    for row in &mut runs.rows {
        let Some(id) = row.get("run_id") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(record::run_dir(results, id).join("config.yaml"))
        else {
            continue;
        };
        let Ok(cfg) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        for section in ["task", "arch", "train"] {
            let Some(map) = cfg.get(section).and_then(|m| m.as_mapping()) else {
                continue;
            };
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), cell(v)) {
                    row.insert(cfg_key(&format!("{section}.{k}")), v);
                }
            }
        }
        for k in &swept {
            if row.get(k).is_none_or(|v| v.is_empty()) {
                if let Some(v) = row.get(&cfg_key(k)).cloned() {
                    row.insert(k.clone(), v);
                }
            }
        }
    }
}

/// The value of `key` in a row: its runs.csv column, else its resolved config value.
pub(super) fn lookup<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get(key)
        .filter(|v| !v.is_empty())
        .or_else(|| row.get(&cfg_key(key)))
        .map(String::as_str)
}

/// Equal as numbers when both parse (`0.003` = `3e-3`), else as text.
fn same_value(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Keeps the rows that satisfy every `--where KEY=VALUE`; a key no row has is an error.
pub(super) fn apply_filters(runs: &mut Runs, filters: &[(String, String)]) -> Result<()> {
    for (k, v) in filters {
        if !runs.rows.iter().any(|r| lookup(r, k).is_some()) {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "--where {k}={v}: no run has `{k}` (runs.csv columns or resolved config keys such as task.num_kv_pairs)"
            )));
        }
        runs.rows
            .retain(|r| lookup(r, k).is_some_and(|x| same_value(x, v)));
    }
    Ok(())
}

/// Parses `KEY=VALUE` for `--where`.
pub(super) fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "expected KEY=VALUE (e.g. task.num_kv_pairs=8), got `{s}`"
        )),
    }
}

/// `{"name":"lstm","hidden_size":32}` (a swept mapping) → `lstm(hidden_size=32)`; other cells as is.
pub(super) fn pretty(cell: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(cell) {
        Ok(serde_json::Value::Object(m)) => {
            let name = m.get("name").and_then(|v| v.as_str()).map(String::from);
            let rest: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            match name {
                Some(n) if rest.is_empty() => n,
                Some(n) => format!("{n}({})", rest.join(", ")),
                None => rest.join(", "),
            }
        }
        _ => cell.to_string(),
    }
}

/// Most common value of a column among rows (ties: smallest).
pub(super) fn mode<'a>(rows: impl Iterator<Item = &'a Row>, col: &str) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        if let Some(v) = r.get(col).filter(|v| !v.is_empty()) {
            *counts.entry(v.clone()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(k, _)| k)
}

pub(super) fn read_eval(results: &Path, run: &Row) -> Result<Vec<Row>> {
    let id = run.get("run_id").context("row without run_id")?;
    read_csv_rows(&record::run_dir(results, id).join("eval.csv"))
}

/// MQAR-like results with config files: the `pairs` experiment sweeps task.num_kv_pairs at
/// d_model 64 (set directly, so its arch.d_model cell is empty); the `width` experiment sweeps
/// arch.d_model at 8 pairs (set directly, so its task.num_kv_pairs cell is empty). A fixture of
/// the report modules' unit tests.
#[cfg(test)]
pub(super) fn mqar_like(dir: &Path) -> Runs {
    let mut csv = "run_id,experiment,task,arch,task.num_kv_pairs,arch.d_model,seed,status,param_count,state_size,best_token_acc,membench_version,torch_version\n".to_string();
    for (id, exp, pairs_cell, d_cell, pairs, d, state, acc) in [
        ("a0", "pairs", "2", "", 2, 64, 100, 0.9),
        ("a1", "pairs", "2", "", 2, 64, 100, 0.8),
        ("b0", "pairs", "8", "", 8, 64, 100, 0.2),
        ("b1", "pairs", "8", "", 8, 64, 100, 0.3),
        ("c0", "width", "", "128", 8, 128, 400, 0.5),
        ("c1", "width", "", "128", 8, 128, 400, 0.6),
    ] {
        let seed = &id[1..];
        csv += &format!("{id},{exp},mqar,transformer,{pairs_cell},{d_cell},{seed},done,1000,{state},{acc},0.4.0,2.11.0\n");
        let run = record::run_dir(dir, id);
        std::fs::create_dir_all(&run).unwrap();
        let cfg = format!("task:\n  name: mqar\n  num_kv_pairs: {pairs}\narch:\n  name: transformer\n  d_model: {d}\ntrain:\n  steps: 100\nseed: {seed}\n");
        std::fs::write(run.join("config.yaml"), cfg).unwrap();
    }
    std::fs::write(dir.join("runs.csv"), csv).unwrap();
    let mut runs = read_runs(dir).unwrap();
    resolve(&mut runs, dir);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::groups::groups;
    use crate::test_support::fresh_dir;

    #[test]
    fn runs_csv_is_read_strictly_except_for_a_torn_tail() {
        let dir = fresh_dir("compare-read-runs");
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_runs(&dir).err().expect("no runs.csv").to_string();
        assert!(err.contains("no runs.csv here"), "{err}");
        let head =
            "run_id,experiment,task,arch,seed,status,final_loss,membench_version,torch_version\n";
        let a = "a,x,copy,lstm,1,done,0.5,0.4.0,2.11.0\n";
        std::fs::write(dir.join("runs.csv"), format!("{head}{a}b,x,copy,lstm,2,do")).unwrap();
        let runs = read_runs(&dir).unwrap();
        assert_eq!(runs.rows.len(), 1, "the torn tail is ignored");
        assert_eq!(runs.header.len(), 9);
        // A short row in the middle is damage, not a crash mid-append: say where, drop nothing silently.
        std::fs::write(dir.join("runs.csv"), format!("{head}a,x\n{a}")).unwrap();
        let err = format!("{:#}", read_runs(&dir).err().expect("short row"));
        assert!(err.contains("runs.csv:2: 2 fields, expected 9"), "{err}");
        // A metric that is not a number would drop the run from the statistics: refused.
        let bad = a.replace("0.5", "0,5").replacen("0,5", "\"0,5\"", 1);
        std::fs::write(dir.join("runs.csv"), format!("{head}{bad}")).unwrap();
        let err = read_runs(&dir).err().expect("bad metric");
        assert!(err
            .downcast_ref::<crate::input::strict::BadInput>()
            .is_some());
        assert!(
            format!("{err:#}").contains("runs.csv:2: final_loss `0,5`: expected a number"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pretty_flattens_swept_mappings() {
        assert_eq!(
            pretty(r#"{"name":"lstm","hidden_size":32}"#),
            "lstm(hidden_size=32)"
        );
        assert_eq!(pretty("gru"), "gru");
        assert_eq!(pretty("64"), "64");
    }

    #[test]
    fn swept_keys_sit_between_arch_and_seed() {
        let header: Vec<String> = [
            "run_id",
            "experiment",
            "task",
            "arch",
            "arch.hidden_size",
            "train.lr",
            "seed",
            "status",
        ]
        .map(String::from)
        .to_vec();
        let runs = Runs {
            header,
            rows: vec![],
        };
        assert_eq!(
            runs.swept_keys(),
            vec!["arch.hidden_size".to_string(), "train.lr".to_string()]
        );
    }

    #[test]
    fn settings_an_experiment_set_directly_are_read_from_the_resolved_config() {
        let dir = fresh_dir("compare-resolve");
        let runs = mqar_like(&dir);
        let row = |id: &str| runs.rows.iter().find(|r| r["run_id"] == id).unwrap();
        assert_eq!(row("c0")["task.num_kv_pairs"], "8");
        assert_eq!(row("a0")["arch.d_model"], "64");
        assert_eq!(row("a0")["task.num_kv_pairs"], "2", "swept cells are kept");
        // Three configurations, one experiment each: no experiment column is needed to tell them apart.
        let g = groups(&runs, "mqar", "arch").unwrap();
        assert_eq!(g.len(), 3);
        assert!(
            g.iter()
                .all(|g| g.key.iter().all(|(k, _)| k != "experiment")),
            "{:?}",
            g[0].key
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn where_filters_on_resolved_values_and_rejects_unknown_keys() {
        let dir = fresh_dir("compare-where");
        let mut runs = mqar_like(&dir);
        apply_filters(&mut runs, &[("task.num_kv_pairs".into(), "8.0".into())]).unwrap();
        let ids: Vec<&str> = runs.rows.iter().map(|r| r["run_id"].as_str()).collect();
        assert_eq!(ids, ["b0", "b1", "c0", "c1"]);
        let e = apply_filters(&mut runs, &[("task.num_pairs".into(), "8".into())]).unwrap_err();
        assert!(
            format!("{e:#}").contains("no run has `task.num_pairs`"),
            "{e:#}"
        );
        assert!(
            parse_filter("task.num_kv_pairs").is_err()
                && parse_filter("a=1").unwrap() == ("a".into(), "1".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
