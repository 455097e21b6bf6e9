//! The small language model: BERT-family encoder on burn, tokenizer, weights, training.

pub mod allocator;
pub mod classifier;
pub mod clipping;
pub mod device;
pub mod encoder;
pub mod fused;
pub mod losses;
pub mod model;
pub mod snapshot;
pub mod tagging;
pub mod tokenize;
pub mod weights;

pub use model::{FitReport, Slm, Step, Trainer};
