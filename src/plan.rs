//! The layer plan: which file goes into which layer. A pure function of the file list
//! and a few settings, so it can be tested exhaustively and checked against a
//! registry's limits before a single byte is downloaded or compressed.
//!
//! By default ([`LayerMode::PerFile`]) every file of at least
//! [`PlanOptions::own_layer_above`] bytes gets a layer of its own, holding just that file
//! and its parent directories; everything else (small files, symlinks, empty
//! directories) shares one layer. A large file's layer therefore depends only on its
//! path, its content and the byte-relevant settings: the same weights at another commit,
//! or in another model, give the same layer digest, so a registry already has it and a
//! client has already pulled it.
//!
//! **Order.** Large-file layers come first, in path order, and the shared small-files
//! layer comes last. Small files (README, configs) are what changes between revisions;
//! lower layers keep their chain IDs (the key containerd and BuildKit use for unpacked
//! snapshots) only while every layer below them is unchanged, so the layer that changes
//! most sits on top.
//!
//! **Cap.** overlayfs stops near 128 lower layers and rootless BuildKit near 70, so an
//! image has at most [`PlanOptions::max_layers`] layers. When there are more large files
//! than slots, each large file goes into group `sha256(path) mod slots`: a file's group
//! depends only on its path, so changing, adding or removing one file changes one group
//! layer and leaves the others as they were. Groups are ordered by group number.

use crate::digest::Digest;
use crate::layer::{self, Entry, EntryKind, LayerError, LayerInfo};
use crate::units::human_bytes;
use std::fmt;
use std::str::FromStr;

/// The default size from which a file gets its own layer.
pub const DEFAULT_OWN_LAYER_ABOVE: u64 = 64 << 20;
/// The default cap on the number of layers (below rootless BuildKit's ~70).
pub const DEFAULT_MAX_LAYERS: usize = 64;

/// How files are split into layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerMode {
    /// One layer per large file, plus one for everything else.
    #[default]
    PerFile,
    /// Everything in one layer.
    Single,
}

impl LayerMode {
    pub fn name(self) -> &'static str {
        match self {
            LayerMode::PerFile => "per-file",
            LayerMode::Single => "single",
        }
    }
}

impl fmt::Display for LayerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LayerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<LayerMode, String> {
        match s {
            "per-file" => Ok(LayerMode::PerFile),
            "single" => Ok(LayerMode::Single),
            _ => Err(format!("unknown layer mode {s:?} (use per-file or single)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    pub mode: LayerMode,
    /// Files of at least this many bytes get a layer of their own (per-file mode).
    pub own_layer_above: u64,
    /// At most this many layers (per-file mode); at least 2.
    pub max_layers: usize,
    /// Refuse a plan with a layer larger than this (a registry's limit). Not
    /// byte-relevant: it only decides whether the build may go ahead.
    pub max_layer_size: Option<u64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            mode: LayerMode::PerFile,
            own_layer_above: DEFAULT_OWN_LAYER_ABOVE,
            max_layers: DEFAULT_MAX_LAYERS,
            max_layer_size: None,
        }
    }
}

/// What a planned layer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerRole {
    /// The whole image (`--layers single`).
    All,
    /// One large file (its path).
    OwnFile(String),
    /// Large files grouped by path hash because there were more than the cap allows.
    Group(u32),
    /// Every file below the threshold, symlinks and empty directories.
    SmallFiles,
}

impl fmt::Display for LayerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerRole::All => f.write_str("all files"),
            LayerRole::OwnFile(p) => write!(f, "{p}"),
            LayerRole::Group(g) => write!(f, "large-file group {g}"),
            LayerRole::SmallFiles => f.write_str("small files"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLayer {
    pub role: LayerRole,
    /// The layer's entries (parents are added by the layer writer).
    pub entries: Vec<Entry>,
    /// `--prefetch` paths that fall in this layer.
    pub prefetch: Vec<String>,
}

impl PlannedLayer {
    /// Bytes of file content in the layer.
    pub fn content_bytes(&self) -> u64 {
        layer::content_size(&self.entries)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    pub layers: Vec<PlannedLayer>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("--max-layers must be at least 2, got {0}")]
    MaxLayers(usize),
    #[error("{path} is {} ({size} bytes), larger than the registry's layer limit of {} ({limit} bytes): this file cannot be published to that registry as a layer", human_bytes(*size), human_bytes(*limit))]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("the {role} layer would hold {} ({size} bytes), more than the layer limit of {} ({limit} bytes); {hint}", human_bytes(*size), human_bytes(*limit))]
    LayerTooLarge {
        role: String,
        size: u64,
        limit: u64,
        hint: &'static str,
    },
}

/// True if `path` is `prefix` or lies below it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

/// Splits `entries` into layers. `prefetch` are the `--prefetch` paths, `landmarks`
/// whether the format has prefetch landmarks (eStargz) and `prefix` the `--prefix` the
/// layers put the files under; the whole set is validated once here, as the image will
/// name it (unsafe paths, duplicates, a file that is also a directory, reserved names,
/// prefetch paths that do not exist), since no single layer sees all of it. The plan
/// itself is of the model's paths: the prefix changes no layer's files.
pub fn plan(
    entries: Vec<Entry>,
    prefetch: &[String],
    landmarks: bool,
    prefix: &str,
    opts: &PlanOptions,
) -> Result<LayerPlan, PlanError> {
    layer::check_entries(&entries, prefetch, landmarks, prefix)?;
    let prefetch: Vec<String> = prefetch
        .iter()
        .map(|p| p.trim_start_matches("./").trim_matches('/').to_string())
        .collect();
    let mut plan = match opts.mode {
        LayerMode::Single => LayerPlan {
            layers: vec![PlannedLayer {
                role: LayerRole::All,
                entries,
                prefetch: Vec::new(),
            }],
        },
        LayerMode::PerFile => per_file(entries, opts)?,
    };
    for l in &mut plan.layers {
        // A prefetch path applies to the layers holding it or something below it (a
        // directory may span layers); the layer writer orders them as before.
        l.prefetch = prefetch
            .iter()
            .filter(|p| l.entries.iter().any(|e| under(&e.path, p)))
            .cloned()
            .collect();
    }
    check_limit(&plan, opts)?;
    Ok(plan)
}

fn per_file(entries: Vec<Entry>, opts: &PlanOptions) -> Result<LayerPlan, PlanError> {
    if opts.max_layers < 2 {
        return Err(PlanError::MaxLayers(opts.max_layers));
    }
    let (mut large, small): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(
        |e| matches!(e.kind, EntryKind::File { size, .. } if size >= opts.own_layer_above),
    );
    large.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut layers = Vec::new();
    let slots = opts.max_layers - usize::from(!small.is_empty());
    if large.len() <= slots {
        for e in large {
            layers.push(PlannedLayer {
                role: LayerRole::OwnFile(e.path.clone()),
                entries: vec![e],
                prefetch: Vec::new(),
            });
        }
    } else {
        let mut groups: Vec<Vec<Entry>> = vec![Vec::new(); slots];
        for e in large {
            groups[group_of(&e.path, slots)].push(e);
        }
        for (g, entries) in groups.into_iter().enumerate() {
            if !entries.is_empty() {
                layers.push(PlannedLayer {
                    role: LayerRole::Group(g as u32),
                    entries,
                    prefetch: Vec::new(),
                });
            }
        }
    }
    if !small.is_empty() {
        layers.push(PlannedLayer {
            role: LayerRole::SmallFiles,
            entries: small,
            prefetch: Vec::new(),
        });
    }
    Ok(LayerPlan { layers })
}

/// The group of a large file when they must share layers: the first 8 bytes of the
/// sha256 of its path, modulo the number of groups. Depends on nothing else.
pub fn group_of(path: &str, groups: usize) -> usize {
    let d = Digest::of(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.bytes()[..8]);
    (u64::from_be_bytes(first) % groups as u64) as usize
}

/// Refuses, before anything is downloaded, a layer whose file content alone exceeds
/// `--max-layer-size`. Weights compress by a few percent at most, so the content is
/// the honest estimate; the built blob is checked again once its size is known.
fn check_limit(plan: &LayerPlan, opts: &PlanOptions) -> Result<(), PlanError> {
    let Some(limit) = opts.max_layer_size else {
        return Ok(());
    };
    for l in &plan.layers {
        for e in &l.entries {
            if let EntryKind::File { size, .. } = e.kind {
                if size > limit {
                    return Err(PlanError::FileTooLarge {
                        path: e.path.clone(),
                        size,
                        limit,
                    });
                }
            }
        }
        let size = l.content_bytes();
        if size > limit {
            let hint = match (&l.role, opts.mode) {
                (_, LayerMode::Single) => "use --layers per-file",
                (LayerRole::Group(_), _) => "raise --max-layers so fewer large files share a layer",
                _ => "lower --own-layer-above so more files get a layer of their own",
            };
            return Err(PlanError::LayerTooLarge {
                role: l.role.to_string(),
                size,
                limit,
                hint,
            });
        }
    }
    Ok(())
}

/// One layer of a built image: what it holds and what it is.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub role: LayerRole,
    pub info: LayerInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, size: u64) -> Entry {
        Entry {
            path: p.into(),
            kind: EntryKind::File {
                size,
                executable: false,
            },
        }
    }

    const M: u64 = 1 << 20;

    fn roles(p: &LayerPlan) -> Vec<String> {
        p.layers.iter().map(|l| l.role.to_string()).collect()
    }

    #[test]
    fn large_files_get_own_layers_in_path_order_and_small_files_share_the_last() {
        let p = plan(
            vec![
                file("z.safetensors", 100 * M),
                file("README.md", 10),
                file("a/b.bin", 64 * M),
                file("config.json", 5),
                file("almost.bin", 64 * M - 1),
            ],
            &[],
            true,
            "",
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(roles(&p), ["a/b.bin", "z.safetensors", "small files"]);
        let small: Vec<&str> = p.layers[2]
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(small, ["README.md", "config.json", "almost.bin"]);
    }

    #[test]
    fn a_large_files_layer_does_not_depend_on_the_other_files() {
        let opts = PlanOptions::default();
        let a = plan(
            vec![file("w.bin", 70 * M), file("README.md", 1)],
            &[],
            true,
            "",
            &opts,
        )
        .unwrap();
        let b = plan(
            vec![
                file("w.bin", 70 * M),
                file("README.md", 2),
                file("x.bin", 99 * M),
            ],
            &[],
            true,
            "",
            &opts,
        )
        .unwrap();
        assert_eq!(a.layers[0], b.layers[0]);
    }

    #[test]
    fn single_mode_keeps_one_layer() {
        let p = plan(
            vec![file("w.bin", 70 * M), file("README.md", 1)],
            &[],
            true,
            "",
            &PlanOptions {
                mode: LayerMode::Single,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert_eq!(roles(&p), ["all files"]);
        assert_eq!(p.layers[0].entries.len(), 2);
    }

    #[test]
    fn only_large_files_means_no_small_files_layer() {
        let p = plan(
            vec![file("a.bin", 70 * M), file("b.bin", 70 * M)],
            &[],
            true,
            "",
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(roles(&p), ["a.bin", "b.bin"]);
    }

    #[test]
    fn more_large_files_than_the_cap_are_grouped_by_path_hash() {
        let opts = PlanOptions {
            max_layers: 5,
            ..PlanOptions::default()
        };
        let files: Vec<Entry> = (0..20)
            .map(|i| file(&format!("shard-{i:02}.bin"), 70 * M))
            .chain([file("config.json", 1)])
            .collect();
        let p = plan(files.clone(), &[], true, "", &opts).unwrap();
        assert!(p.layers.len() <= 5, "{}", p.layers.len());
        assert_eq!(p.layers.last().unwrap().role, LayerRole::SmallFiles);
        let grouped: usize = p.layers.iter().map(|l| l.entries.len()).sum();
        assert_eq!(grouped, 21);
        for l in &p.layers[..p.layers.len() - 1] {
            let LayerRole::Group(g) = l.role else {
                panic!("{:?}", l.role)
            };
            for e in &l.entries {
                assert_eq!(group_of(&e.path, 4), g as usize);
            }
        }
        // Changing one file's size (its content) moves nothing: every other group
        // keeps exactly its entries.
        let mut changed = files.clone();
        changed[7] = file("shard-07.bin", 71 * M);
        let q = plan(changed, &[], true, "", &opts).unwrap();
        let differing = p
            .layers
            .iter()
            .zip(&q.layers)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
        // Adding a file changes only its own group.
        let mut added = files;
        added.push(file("shard-99.bin", 70 * M));
        let r = plan(added, &[], true, "", &opts).unwrap();
        let same = p.layers.iter().filter(|l| r.layers.contains(l)).count();
        assert!(same >= p.layers.len() - 2, "{same}");
    }

    #[test]
    fn files_past_the_registry_limit_are_refused_naming_file_size_and_limit() {
        let opts = PlanOptions {
            max_layer_size: Some(10_000_000_000),
            ..PlanOptions::default()
        };
        let e = plan(
            vec![file("model-00001.safetensors", 12 << 30)],
            &[],
            true,
            "",
            &opts,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("model-00001.safetensors is 12.0 GiB (12884901888 bytes)"),
            "{e}"
        );
        assert!(e.contains("limit of 9.3 GiB (10000000000 bytes)"), "{e}");
        assert!(e.contains("cannot be published"), "{e}");

        let small: Vec<Entry> = (0..3).map(|i| file(&format!("f{i}"), 60 * M)).collect();
        let e = plan(
            small,
            &[],
            true,
            "",
            &PlanOptions {
                max_layer_size: Some(100 * M),
                ..PlanOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the small files layer would hold 180.0 MiB"),
            "{e}"
        );
        assert!(e.contains("--own-layer-above"), "{e}");
    }

    #[test]
    fn prefetch_paths_go_to_the_layers_that_hold_them() {
        let p = plan(
            vec![
                file("unet/w.bin", 70 * M),
                file("unet/config.json", 1),
                file("text/w.bin", 70 * M),
                file("README.md", 1),
            ],
            &["unet".into(), "./README.md".into()],
            true,
            "",
            &PlanOptions::default(),
        )
        .unwrap();
        let pf: Vec<(String, Vec<String>)> = p
            .layers
            .iter()
            .map(|l| (l.role.to_string(), l.prefetch.clone()))
            .collect();
        assert_eq!(
            pf,
            [
                ("text/w.bin".to_string(), vec![]),
                ("unet/w.bin".to_string(), vec!["unet".to_string()]),
                (
                    "small files".to_string(),
                    vec!["unet".to_string(), "README.md".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn conflicts_across_layers_are_caught_before_splitting() {
        // "a" is a large file and "a/b" a small one: no single layer sees both.
        let e = plan(
            vec![file("a", 70 * M), file("a/b", 1)],
            &[],
            true,
            "",
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, PlanError::Layer(LayerError::NotADirectory { .. })),
            "{e}"
        );
        assert!(matches!(
            plan(
                vec![file("x", 1)],
                &[],
                true,
                "",
                &PlanOptions {
                    max_layers: 1,
                    ..Default::default()
                }
            ),
            Err(PlanError::MaxLayers(1))
        ));
    }
}
