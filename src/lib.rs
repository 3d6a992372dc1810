//! depotai: reproducible, lazily pullable OCI images of machine-learning models.
//!
//! The crate mirrors the pipeline:
//! [`source`] (where files come from) → [`layer`] (deterministic tar + eStargz or
//! zstd:chunked) →
//! [`image`] (OCI image layout). The format modules (`layer`, `image`) know nothing of
//! Hugging Face or the command line; the CLI lives in the binary.

pub mod digest;
pub mod image;
pub mod layer;
pub mod names;
pub mod pipeline;
pub mod source;
