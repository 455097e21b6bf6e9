//! Where a ChaCha8 random stream stands, as saved in checkpoints: the word position is a u128,
//! which JSON numbers cannot hold exactly past 2^53, so it is written as decimal text.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A ChaCha8 generator's word position; serialised as a decimal string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamPos(pub u128);

impl StreamPos {
    /// Where `rng` stands now.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        Self(rng.get_word_pos())
    }

    /// Moves `rng` (seeded as the saved one was) to this position.
    pub fn apply(self, rng: &mut ChaCha8Rng) {
        rng.set_word_pos(self.0);
    }
}

impl Serialize for StreamPos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamPos {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "stream position {text:?}: expected a non-negative integer below 2^128 ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn round_trips_as_decimal_text_past_the_exact_range_of_json_numbers() {
        let pos = StreamPos(u128::MAX);
        let json = serde_json::to_string(&pos).unwrap();
        assert_eq!(json, "\"340282366920938463463374607431768211455\"");
        assert_eq!(serde_json::from_str::<StreamPos>(&json).unwrap(), pos);
        for bad in ["\"-1\"", "\"1e3\"", "\"\"", "7"] {
            assert!(serde_json::from_str::<StreamPos>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_restored_stream_goes_on_with_the_same_draws() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let _: [u64; 5] = rng.random();
        let saved = StreamPos::of(&rng);
        let mut restored = ChaCha8Rng::seed_from_u64(9);
        saved.apply(&mut restored);
        assert_eq!(restored.random::<u64>(), rng.random::<u64>());
    }
}
