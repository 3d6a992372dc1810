//! depotai: reproducible, lazily pullable OCI images of machine-learning models.
//!
//! The crate mirrors the pipeline:
//! [`source`] (where files come from) → [`layer`] (deterministic tar + eStargz or
//! zstd:chunked) →
//! [`image`] (OCI image layout). The format modules (`layer`, `image`) know nothing of
//! Hugging Face or the command line; the CLI lives in the binary. [`catalogue`] is the
//! list of models `build --all` builds: validated with line numbers, split into shards,
//! and compared with the build record kept beside each image.
//! [`serve`] serves built images over the OCI Distribution API (the registry server);
//! [`remote`] is the client side of that protocol (push, lazy `ls` / `get`), named as
//! go-containerregistry names its client.

pub mod catalogue;
pub mod digest;
pub mod image;
pub mod job;
pub mod layer;
pub mod limits;
pub mod names;
pub mod pipeline;
pub mod plan;
pub mod provenance;
pub mod remote;
pub mod serve;
pub mod source;
pub mod units;
pub mod verify;
