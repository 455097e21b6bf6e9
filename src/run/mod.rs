//! Execution: records, atomic writes, resumable cell execution.

pub mod executor;
pub mod lock;
pub mod records;
pub mod slurm;
