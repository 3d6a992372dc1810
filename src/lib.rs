//! depotai: reproducible, lazily pullable OCI images of machine-learning models.
//!
//! The crate mirrors the pipeline:
//! [`source`] (where files come from) → [`layer`] (deterministic tar + eStargz or
//! zstd:chunked) →
//! [`image`] (OCI image layout). The format modules (`layer`, `image`) know nothing of
//! Hugging Face or the command line; the CLI lives in the binary. [`catalogue`] is the
//! list of models `build --all` builds: validated with line numbers, split into shards,
//! and compared with the build record kept beside each image.
//! [`distribution`] serves built images over the OCI Distribution API.

pub mod catalogue;
pub mod digest;
pub mod distribution;
pub mod image;
pub mod layer;
pub mod names;
pub mod pipeline;
pub mod registry;
pub mod source;
pub mod units;
