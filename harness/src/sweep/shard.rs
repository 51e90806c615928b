//! Sharding a sweep over machines: `--shard I/N` keeps the runs whose id, read as a 48-bit
//! hexadecimal number, is `I` modulo `N` (I is 0-based, 0 <= I < N). For an experiment with
//! `tune_seeds` the hash is its setting's (`follow::shard_key`), so a setting stays whole.
//!
//! Hashing the run id (rather than taking every N-th run in grid order) keeps a run on the same
//! shard when experiments are added to or removed from the file, so shard directories stay
//! resumable; the shards partition the grid exactly (every run in one shard), and their union is
//! rebuilt with `membench merge`.
//!
//! Under a SLURM job array, with no `--shard`: I = SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN
//! (MIN defaults to 0) and N = SLURM_ARRAY_TASK_COUNT, so `sbatch --array=0-9` (or `1-10`) gives
//! ten shards with no flags. An explicit `--shard` always wins.

use crate::input::strict::BadInput;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s}: expected I/N, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s}: I must be an integer"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s}: N must be an integer"))?;
        if count == 0 || index >= count {
            return Err(format!("--shard {s}: expected 0 <= I < N (I is 0-based)"));
        }
        Ok(Shard { index, count })
    }

    /// `--shard` if given, else the SLURM array variables, else None (the whole grid).
    pub fn resolve(flag: Option<&str>) -> Result<Option<Shard>, BadInput> {
        let bad = |m: String| BadInput::one("--shard", 1, 1, "", m);
        if let Some(f) = flag {
            return Shard::parse(f).map(Some).map_err(bad);
        }
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT")) {
            (Some(id), Some(count)) => {
                let min = var("SLURM_ARRAY_TASK_MIN").unwrap_or_else(|| "0".into());
                let num = |v: &str, name: &str| {
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("{name}={v} is not an integer")))
                };
                let (id, min, count) = (
                    num(&id, "SLURM_ARRAY_TASK_ID")?,
                    num(&min, "SLURM_ARRAY_TASK_MIN")?,
                    num(&count, "SLURM_ARRAY_TASK_COUNT")?,
                );
                let index = id.checked_sub(min).ok_or_else(|| {
                    bad(format!(
                        "SLURM_ARRAY_TASK_ID {id} < SLURM_ARRAY_TASK_MIN {min}"
                    ))
                })?;
                Shard::parse(&format!("{index}/{count}"))
                    .map(Some)
                    .map_err(bad)
            }
            _ => Ok(None),
        }
    }

    pub fn contains(&self, run_id: &str) -> bool {
        let h = u64::from_str_radix(run_id.get(..12).unwrap_or(run_id), 16).unwrap_or_else(|_| {
            u64::from_le_bytes(
                blake3::hash(run_id.as_bytes()).as_bytes()[..8]
                    .try_into()
                    .expect("8 bytes"),
            )
        });
        h % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_ids() {
        let ids: Vec<String> = (0..200)
            .map(|i: u32| blake3::hash(&i.to_le_bytes()).to_hex()[..12].to_string())
            .collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for id in &ids {
            assert_eq!(shards.iter().filter(|s| s.contains(id)).count(), 1);
        }
        assert!(shards
            .iter()
            .all(|s| ids.iter().filter(|id| s.contains(id)).count() > 40));
        assert!(
            Shard::parse("3/3").is_err()
                && Shard::parse("0/0").is_err()
                && Shard::parse("x").is_err()
        );
    }
}
