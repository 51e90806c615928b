use crate::Split;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream of one example: independent of batch size, thread and machine.
pub fn example_rng(seed: u64, split: Split, index: u64, example: usize) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"membench-example-v1");
    h.update(&seed.to_le_bytes());
    h.update(&[split as u8]);
    h.update(&index.to_le_bytes());
    h.update(&(example as u64).to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}
