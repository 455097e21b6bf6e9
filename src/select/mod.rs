//! Selection algorithms shared by methods: the loss mixture that splits clean from noisy labels
//! (k-medoids and acquisition functions join it here).

pub mod gmm;
