//! Where model files come from. Every source yields the same thing: a list of
//! [`crate::layer::Entry`] values and a way to read their contents.

pub mod dir;
pub mod hub;

pub use dir::{DirError, DirSource};
