//! `depotai serve`: a read-only OCI Distribution registry over the image layouts that
//! `build` wrote under a directory (`ROOT/<org>/<model>`, `ROOT/<model>`), so docker,
//! buildah, skopeo, podman and lazy-pulling snapshotters can pull from it directly.
//!
//! - [`store`]: finding images and blobs under the root without ever leaving it, and
//!   which digests each name may serve.
//! - [`range`]: `Range` parsing and `multipart/byteranges` layout.
//! - [`server`]: the HTTP server (hyper on tokio): routes, headers, errors, shutdown.
//! - `conn`: what a connection may cost (idle timeout, the connection cap).
//! - `body`: streaming blobs from disk piece by piece; [`data`]: what the pages show of
//!   an image (cached by the store per version of the image); [`pages`]: the web pages
//!   (a searchable model list at `/`, a page per model) and their JSON twins.

mod body;
mod conn;
pub mod data;
pub mod pages;
pub mod range;
pub mod server;
pub mod store;

pub use server::{ServeError, ServeOptions, Server};

/// `Cache-Control` of what is addressed by digest: it never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub use store::{Store, StoreError};
