//! Experiment specs: typed structs, layering with figment, validation and sweep expansion.

pub mod load;
pub mod locate;
pub mod spec;
pub mod sweep;
pub mod validate;

pub use load::{Layered, layer};
pub use spec::*;
