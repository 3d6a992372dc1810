// zstdchunked-check verifies a zstd:chunked layer blob. The reference is containers/storage's
// pkg/chunked (go.podman.io/storage, where github.com/containers/storage moved): its
// partial-pull differ reads the layer through ranged reads, exactly as podman does from a
// registry, and materialises the files; those files and the differ's uncompressed digest
// are then compared with the plain reading of the blob (one zstd stream of one tar).
//
//	zstdchunked-check verify BLOB --annotations FILE [--digest sha256:..] [--diff-id sha256:..]
//	                  [--require-tar-split]
//	zstdchunked-check build TAR OUT [--level N]
//
// FILE is a JSON object: the layer's annotations, or a descriptor with an "annotations"
// member. Prints one JSON summary line on stdout; each problem is a "FAIL: ..." line on
// stderr and the exit status is 1 (2 for a malformed command line). build writes
// containers/storage's own zstd:chunked of TAR (chunked.ZstdCompressor) to OUT and prints
// one JSON line with its annotations (bench/zstd-chunked.sh compares depotai with it).
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	storage "go.podman.io/storage"
	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/archive"
	"go.podman.io/storage/pkg/chunked"
)

const (
	prefixCurrent = "io.github.containers.zstd-chunked." // what containers/storage reads today
	prefixLegacy  = "io.containers.zstd-chunked."        // what containers/storage <= 1.43 read (Debian 12's podman)
	footerMagic   = "GNUlInUx"                           // the 64-byte footer's last 8 bytes
)

type readerResult struct {
	OK                 bool   `json:"ok"`
	UncompressedDigest string `json:"uncompressed_digest,omitempty"`
	FilesCompared      int    `json:"files_compared"`
	BytesRequested     uint64 `json:"bytes_requested"`
	Error              string `json:"error,omitempty"`
}

type summary struct {
	OK                 bool         `json:"ok"`
	Digest             string       `json:"digest"`
	DiffID             string       `json:"diff_id"`
	AnnotationKeys     string       `json:"annotation_keys"`
	Footer             string       `json:"footer"`
	TarSplit           bool         `json:"tar_split"`
	Files              int          `json:"files"`
	Chunks             int          `json:"chunks"`
	Frames             int          `json:"frames"`
	FramesWithChecksum int          `json:"frames_with_checksum"`
	Reader             readerResult `json:"containers_storage_reader"`
	Failures           int          `json:"failures"`
}

var failures int

func fail(format string, a ...any) {
	failures++
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", a...)
}

func main() {
	if len(os.Args) >= 4 && os.Args[1] == "build" {
		os.Exit(build(os.Args[2], os.Args[3], os.Args[4:]))
	}
	if len(os.Args) < 3 || os.Args[1] != "verify" {
		fmt.Fprintln(os.Stderr, "usage: zstdchunked-check verify BLOB --annotations FILE [--digest D] [--diff-id D] [--require-tar-split]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	annPath := fs.String("annotations", "", "JSON file with the layer's annotations")
	wantDigest := fs.String("digest", "", "the blob's digest")
	wantDiffID := fs.String("diff-id", "", "the config's rootfs.diff_ids entry")
	requireTarSplit := fs.Bool("require-tar-split", false, "fail when the TOC has no tar-split")
	blobPath := os.Args[2]
	if err := fs.Parse(os.Args[3:]); err != nil || fs.NArg() != 0 || *annPath == "" {
		fmt.Fprintln(os.Stderr, "zstdchunked-check: --annotations is required")
		os.Exit(2)
	}
	s := &summary{}
	if err := verify(s, blobPath, *annPath, *wantDigest, *wantDiffID, *requireTarSplit); err != nil {
		fail("%v", err)
	}
	s.Failures = failures
	s.OK = failures == 0
	line, _ := json.Marshal(s)
	fmt.Println(string(line))
	if !s.OK {
		os.Exit(1)
	}
}

func loadAnnotations(p string) (map[string]string, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if inner, ok := obj["annotations"]; ok {
		raw = inner
	}
	ann := map[string]string{}
	if err := json.Unmarshal(raw, &ann); err != nil {
		return nil, fmt.Errorf("%s: annotations: %w", p, err)
	}
	return ann, nil
}

type tocEntry struct {
	Type        string `json:"type"`
	Name        string `json:"name"`
	LinkName    string `json:"linkName"`
	Mode        int64  `json:"mode"`
	Size        int64  `json:"size"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
	Digest      string `json:"digest"`
	Offset      int64  `json:"offset"`
	EndOffset   int64  `json:"endOffset"`
	ChunkSize   int64  `json:"chunkSize"`
	ChunkOffset int64  `json:"chunkOffset"`
	ChunkDigest string `json:"chunkDigest"`
}

type tocDoc struct {
	Version        int        `json:"version"`
	Entries        []tocEntry `json:"entries"`
	TarSplitDigest string     `json:"tarSplitDigest"`
}

func cleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

func verify(s *summary, blobPath, annPath, wantDigest, wantDiffID string, requireTarSplit bool) error {
	ann, err := loadAnnotations(annPath)
	if err != nil {
		return err
	}
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		return err
	}
	s.Digest = digest.FromBytes(blob).String()
	if wantDigest != "" && wantDigest != s.Digest {
		fail("blob digest %s, descriptor says %s", s.Digest, wantDigest)
	}

	// Annotations: which key sets are there, and does each agree with the blob.
	var sets []string
	for _, p := range []string{prefixCurrent, prefixLegacy} {
		if _, ok := ann[p+"manifest-checksum"]; ok {
			sets = append(sets, p)
		}
	}
	switch len(sets) {
	case 2:
		s.AnnotationKeys = "both"
	case 1:
		s.AnnotationKeys = map[string]string{prefixCurrent: "current", prefixLegacy: "legacy"}[sets[0]]
	default:
		return fmt.Errorf("no %smanifest-checksum annotation (nor the legacy key)", prefixCurrent)
	}
	var manifest []byte
	var manifestOff, manifestLen, manifestULen uint64
	for _, p := range sets {
		var typ uint64
		if _, err := fmt.Sscanf(ann[p+"manifest-position"], "%d:%d:%d:%d", &manifestOff, &manifestLen, &manifestULen, &typ); err != nil {
			fail("%smanifest-position %q: %v", p, ann[p+"manifest-position"], err)
			continue
		}
		if manifestOff+manifestLen > uint64(len(blob)) || manifestLen == 0 {
			fail("%smanifest-position points outside the blob", p)
			continue
		}
		manifest = blob[manifestOff : manifestOff+manifestLen]
		if got := digest.FromBytes(manifest).String(); got != ann[p+"manifest-checksum"] {
			fail("%smanifest-checksum mismatch: the TOC at %d is %s, the annotation says %s", p, manifestOff, got, ann[p+"manifest-checksum"])
		}
	}
	if manifest == nil {
		return fmt.Errorf("no usable manifest-position annotation")
	}

	// The footer: the last skippable frame, 64 bytes, agreeing with the annotations.
	if len(blob) >= 64 && string(blob[len(blob)-8:]) == footerMagic {
		s.Footer = "64-byte " + footerMagic
		f := blob[len(blob)-64:]
		u := func(i int) uint64 { return binary.LittleEndian.Uint64(f[8*i:]) }
		if u(0) != manifestOff || u(1) != manifestLen || u(2) != manifestULen || u(3) != 1 {
			fail("footer's TOC position %d:%d:%d:%d differs from the annotation %d:%d:%d:1", u(0), u(1), u(2), u(3), manifestOff, manifestLen, manifestULen)
		}
		if ts, ok := ann[prefixCurrent+"tarsplit-position"]; ok && fmt.Sprintf("%d:%d:%d", u(4), u(5), u(6)) != ts {
			fail("footer's tar-split position %d:%d:%d differs from the annotation %s", u(4), u(5), u(6), ts)
		}
	} else {
		fail("no 64-byte %s footer at the end of the blob", footerMagic)
	}

	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		return err
	}
	defer dec.Close()
	tocJSON, err := dec.DecodeAll(manifest, nil)
	if err != nil {
		return fmt.Errorf("TOC: zstd: %w", err)
	}
	var toc tocDoc
	if err := json.Unmarshal(tocJSON, &toc); err != nil {
		return fmt.Errorf("TOC: %w", err)
	}
	s.TarSplit = toc.TarSplitDigest != ""
	if requireTarSplit && !s.TarSplit {
		fail("the TOC has no tarSplitDigest (no tar-split)")
	}

	// Every file's payload starts a zstd frame with a content checksum.
	frames := map[int64]bool{}
	byName := map[string]*tocEntry{}
	for i := range toc.Entries {
		e := &toc.Entries[i]
		switch e.Type {
		case "reg", "chunk":
			// A file's first chunk is its "reg" entry (which has no payload when empty).
			s.Chunks++
			if e.Type == "reg" {
				s.Files++
			}
			if e.Size == 0 && e.Type == "reg" {
				break
			}
			// endOffset may be left out on all but a file's last chunk (the reader takes
			// the next chunk's offset).
			if e.Offset <= 0 || e.Offset >= int64(len(blob)) ||
				(e.EndOffset != 0 && (e.EndOffset <= e.Offset || e.EndOffset > int64(len(blob)))) {
				fail("%q: chunk [%d, %d) is not inside the blob", e.Name, e.Offset, e.EndOffset)
				continue
			}
			if !frames[e.Offset] {
				frames[e.Offset] = true
				s.Frames++
				h := blob[e.Offset:]
				if len(h) < 5 || binary.LittleEndian.Uint32(h) != 0xFD2FB528 {
					fail("%q: no zstd frame at offset %d", e.Name, e.Offset)
				} else if h[4]&0x04 != 0 {
					s.FramesWithChecksum++
				}
			}
		}
		if e.Type != "chunk" {
			byName[cleanName(e.Name)] = e
		}
	}

	// The plain reading: the whole blob as one zstd stream of one tar (skippable frames,
	// i.e. TOC, tar-split and footer, are skipped by any zstd decoder).
	if err := dec.Reset(bytes.NewReader(blob)); err != nil {
		return err
	}
	dh := sha256.New()
	tr := tar.NewReader(io.TeeReader(dec, dh))
	contents := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("zstd/tar stream: %w", err)
		}
		name := cleanName(hdr.Name)
		ch := sha256.New()
		if _, err := io.Copy(ch, tr); err != nil {
			return fmt.Errorf("zstd/tar stream at %q: %w", name, err)
		}
		e, ok := byName[name]
		if !ok {
			fail("tar entry %q is not in the TOC", name)
			continue
		}
		if hdr.Typeflag == tar.TypeReg {
			contents[name] = "sha256:" + hex.EncodeToString(ch.Sum(nil))
			if e.Digest != "" && e.Digest != contents[name] {
				fail("%q: contents %s, TOC digest %s", name, contents[name], e.Digest)
			}
			if hdr.Size != e.Size {
				fail("%q: tar size %d, TOC size %d", name, hdr.Size, e.Size)
			}
		}
		if hdr.Mode&0o7777 != e.Mode&0o7777 {
			fail("%q: tar mode %o, TOC mode %o", name, hdr.Mode&0o7777, e.Mode&0o7777)
		}
		if hdr.Linkname != e.LinkName {
			fail("%q: tar link %q, TOC link %q", name, hdr.Linkname, e.LinkName)
		}
	}
	if _, err := io.Copy(dh, dec); err != nil {
		return fmt.Errorf("zstd stream: %w", err)
	}
	s.DiffID = "sha256:" + hex.EncodeToString(dh.Sum(nil))
	if wantDiffID != "" && wantDiffID != s.DiffID {
		fail("diff ID %s, config says %s", s.DiffID, wantDiffID)
	}

	s.Reader = readWithContainersStorage(blob, ann, contents, byName, wantDiffID)
	if !s.Reader.OK {
		fail("containers/storage reader: %s", s.Reader.Error)
	}
	return nil
}

// blobSource answers the differ's ranged reads from the blob, as a registry answers Range
// requests, and counts the bytes asked for.
type blobSource struct {
	blob      []byte
	requested uint64
}

func (b *blobSource) GetBlobAt(chunks []chunked.ImageSourceChunk) (chan io.ReadCloser, chan error, error) {
	for _, c := range chunks {
		if c.Length == 0 || c.Offset+c.Length > uint64(len(b.blob)) {
			return nil, nil, fmt.Errorf("range %d+%d outside the %d-byte blob", c.Offset, c.Length, len(b.blob))
		}
		b.requested += c.Length
	}
	streams, errs := make(chan io.ReadCloser), make(chan error)
	go func() {
		for _, c := range chunks {
			streams <- io.NopCloser(bytes.NewReader(b.blob[c.Offset : c.Offset+c.Length]))
		}
		close(streams)
		close(errs)
	}()
	return streams, errs, nil
}

// scratchStore is the part of a storage.Store the differ consults: partial pulls on, a
// driver that can take a differ, a run root for temporary files, no layers to reuse.
// The differ is then applied by hand into a directory, so no real store (and no
// overlay mount) is needed.
type scratchStore struct {
	storage.Store
	runRoot string
}

func (s *scratchStore) PullOptions() map[string]string {
	return map[string]string{"enable_partial_images": "true"}
}
func (s *scratchStore) GraphDriver() (graphdriver.Driver, error) { return differDriver{}, nil }
func (s *scratchStore) RunRoot() string                          { return s.runRoot }
func (s *scratchStore) Layers() ([]storage.Layer, error)         { return nil, nil }

// differDriver only has to be a graphdriver.DriverWithDiffer for NewDiffer's check; none
// of its methods is called.
type differDriver struct{ graphdriver.DriverWithDiffer }

func (differDriver) String() string { return "depotai-scratch" }

func readWithContainersStorage(blob []byte, ann map[string]string, contents map[string]string, toc map[string]*tocEntry, wantDiffID string) (res readerResult) {
	defer func() {
		if r := recover(); r != nil {
			res.OK, res.Error = false, fmt.Sprintf("panic: %v", r)
		}
	}()
	tmp, err := os.MkdirTemp("", "zstdchunked-check.")
	if err != nil {
		return readerResult{Error: err.Error()}
	}
	defer os.RemoveAll(tmp)
	dest := filepath.Join(tmp, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		return readerResult{Error: err.Error()}
	}
	src := &blobSource{blob: blob}
	store := &scratchStore{runRoot: tmp}
	differ, err := chunked.NewDiffer(context.Background(), store, digest.FromBytes(blob), int64(len(blob)), ann, src)
	if err != nil {
		return readerResult{Error: "NewDiffer: " + err.Error()}
	}
	defer differ.Close()
	out, err := differ.ApplyDiff(dest, &archive.TarOptions{IgnoreChownErrors: os.Geteuid() != 0},
		&graphdriver.DifferOptions{StagingDirectory: tmp})
	res.BytesRequested = src.requested
	if err != nil {
		res.Error = "ApplyDiff: " + err.Error()
		return res
	}
	if out.TarSplit != nil {
		defer out.TarSplit.Close()
	}
	res.UncompressedDigest = out.UncompressedDigest.String()
	if wantDiffID != "" && res.UncompressedDigest != wantDiffID {
		res.Error = fmt.Sprintf("uncompressed digest %s, config says %s", res.UncompressedDigest, wantDiffID)
		return res
	}
	for name, want := range contents {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil {
			res.Error = fmt.Sprintf("%q not materialised: %v", name, err)
			return res
		}
		if d := digest.FromBytes(got).String(); d != want {
			res.Error = fmt.Sprintf("%q materialised as %s, the tar has %s", name, d, want)
			return res
		}
		res.FilesCompared++
	}
	for name, e := range toc {
		if e.Type != "symlink" {
			continue
		}
		if t, err := os.Readlink(filepath.Join(dest, name)); err != nil || t != e.LinkName {
			res.Error = fmt.Sprintf("symlink %q materialised as %q (%v), TOC says %q", name, t, err, e.LinkName)
			return res
		}
	}
	res.OK = true
	return res
}

func build(tarPath, out string, args []string) int {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	level := fs.Int("level", 10, "zstd level (10: ZstdCompressor's default)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return 2
	}
	in, err := os.Open(tarPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	defer in.Close()
	f, err := os.Create(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	start := time.Now()
	h, th := sha256.New(), sha256.New()
	counter := &countWriter{}
	meta := map[string]string{}
	w, err := chunked.ZstdCompressor(io.MultiWriter(f, h, counter), meta, level)
	if err == nil {
		_, err = io.Copy(w, io.TeeReader(in, th))
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build: chunked.ZstdCompressor:", err)
		return 1
	}
	line, _ := json.Marshal(map[string]any{
		"blob_size":   counter.n,
		"blob_digest": "sha256:" + hex.EncodeToString(h.Sum(nil)),
		"diff_id":     "sha256:" + hex.EncodeToString(th.Sum(nil)),
		"media_type":  "application/vnd.oci.image.layer.v1.tar+zstd",
		"annotations": meta,
		"level":       *level,
		"gomaxprocs":  runtime.GOMAXPROCS(0),
		"tz":          time.Now().Format("MST -0700"),
		"seconds":     time.Since(start).Seconds(),
		"writer":      "go.podman.io/storage pkg/chunked ZstdCompressor",
	})
	fmt.Println(string(line))
	return 0
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
