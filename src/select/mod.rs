//! Selection algorithms shared by methods: the loss mixture that splits clean from noisy labels,
//! k-medoids, and FreeAL's demonstration pool (acquisition functions join them here).

pub mod demo_pool;
pub mod gmm;
pub mod kmedoids;
