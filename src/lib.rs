//! depotai: reproducible, lazily pullable OCI images of machine-learning models.
//!
//! The crate mirrors the pipeline:
//! [`source`] (where files come from) → [`plan`] (which file goes in which layer) →
//! [`layer`] (deterministic tar + eStargz or zstd:chunked) → [`image`] (OCI documents,
//! the layout) → a destination ([`pipeline`]: a layout, a registry upload, or only
//! digests). The format modules (`plan`, `layer`, `image`) know nothing of Hugging Face
//! or the command line; the CLI lives in the binary. [`job`] is the one Hub build job
//! (streamed into a layout, a registry or both), [`provenance`] the in-toto statement
//! each image carries, [`modelpack`] its CNCF ModelPack twin (`--modelpack`), [`verify`]
//! the rebuild that checks one. [`catalogue`] is the list of models `build --all` builds,
//! and `catalogue::run` builds them. [`report`] is what every `--json` prints (one
//! serialisable type, with a JSON Schema). [`serve`] serves built images over the OCI
//! Distribution API (the registry server); [`remote`] is the client side of that
//! protocol (push, upload, lazy `ls` / `get`),
//! named as go-containerregistry names its client. [`limits`] bounds what untrusted
//! parties may make us allocate. [`http`] is what the Hub and registry clients share:
//! redirects followed by hand, credentials only for their own origin; [`redact`] keeps
//! userinfo and tokens out of every message; [`cancel`] is the stop flag a signal sets.

pub mod cancel;
pub mod catalogue;
pub mod digest;
pub mod http;
pub mod image;
pub mod job;
pub mod layer;
pub mod limits;
pub mod modelpack;
pub mod names;
pub mod pipeline;
pub mod plan;
pub mod provenance;
pub mod redact;
pub mod remote;
pub mod report;
pub mod serve;
pub mod source;
pub mod units;
pub mod verify;
