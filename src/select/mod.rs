//! Selection algorithms shared by methods: the loss mixture that splits clean from noisy labels,
//! k-medoids, FreeAL's demonstration pool, and active learning's acquisition functions.

pub mod acquisition;
pub mod demo_pool;
pub mod gmm;
pub mod kmedoids;
