//! Execution: records, atomic writes, resumable cell execution.

pub mod executor;
pub mod records;
pub mod slurm;
