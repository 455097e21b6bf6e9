//! freeal-bench: reproduce and extend FreeAL and LLMaAA (LLM-driven data annotation).
//!
//! Data flows one way: spec ([`config`]) -> [`plan`] (cells) -> [`methods`] -> records
//! ([`run`]) -> tables ([`report`]).

pub mod config;
pub mod data;
pub mod error;
pub mod fetch;
pub mod fuzzing;
pub mod llm;
pub mod methods;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod select;
pub mod slm;
pub mod stream_pos;

pub use error::{Error, Result};
