//! Selection algorithms shared by methods: the loss mixture that splits clean from noisy labels,
//! k-medoids, FreeAL's demonstration pool, active learning's acquisition functions and LLMaAA's
//! example reweighting.

pub mod acquisition;
pub mod demo_pool;
pub mod gmm;
pub mod kmedoids;
pub mod reweight;
