//! The media types and annotation keys of the OCI documents depotai writes and reads,
//! defined once. A layer's own media type and annotations belong to its format, beside
//! its writer (`layer::estargz::{MEDIA_TYPE, TOC_DIGEST_ANNOTATION}`,
//! `layer::zstd_chunked::{MEDIA_TYPE, ...}`).

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `{}`: the config of an OCI 1.1 artifact manifest.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker's manifest list and manifest, read (as registries and skopeo may hand them
/// out) but never written.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The provenance referrer's `artifactType` and the statement blob's media type.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The config of depotai's provenance referrer: a small document naming the subject it
/// describes. Not the OCI 1.1 empty config `{}`: that blob would be the same for every
/// image, so runs pushing different models at once (CI shards) race to upload it.
pub const DEPOTAI_PROVENANCE_CONFIG: &str = "application/vnd.depotai.provenance.config.v1+json";

/// The manifest media types a reader asks a registry for, in order of preference.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// The tag of an image in a layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The index annotation that records the build settings (a digest of them).
pub const ANNOTATION_SETTINGS: &str = "io.depotai.settings";
/// The annotation in-toto tooling reads to know a layer's predicate.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// An `Accept` header value for `types`.
pub fn accept(types: &[&str]) -> String {
    types.join(", ")
}

/// An image index (OCI) or manifest list (Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Any manifest document: an image manifest or an index, OCI or Docker.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST || is_index(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    #[test]
    fn the_oci_media_types_are_the_ones_oci_spec_writes() {
        assert_eq!(MediaType::ImageIndex.to_string(), OCI_INDEX);
        assert_eq!(MediaType::ImageManifest.to_string(), OCI_MANIFEST);
        assert_eq!(MediaType::ImageConfig.to_string(), OCI_CONFIG);
        assert_eq!(MediaType::EmptyJSON.to_string(), OCI_EMPTY);
    }

    #[test]
    fn an_index_is_a_manifest_and_a_layer_is_neither() {
        for t in MANIFEST_TYPES {
            assert!(is_manifest(t), "{t}");
        }
        assert!(is_index(DOCKER_MANIFEST_LIST) && !is_index(OCI_MANIFEST));
        let layer = crate::layer::estargz::MEDIA_TYPE;
        assert!(!is_manifest(layer) && !is_index(layer));
        assert_eq!(
            accept(&[OCI_INDEX, OCI_MANIFEST]),
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
        );
    }
}
