//! Datasets: definitions in TOML, the generic file reader, and loaded splits.

pub mod dataset;
pub mod def;
pub mod read;

pub use dataset::{Dataset, Example, SplitInfo, Target};
pub use def::{DatasetDef, Task};
