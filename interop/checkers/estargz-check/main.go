// estargz-check verifies an eStargz layer blob with the reference library,
// github.com/containerd/stargz-snapshotter/estargz (the code the stargz snapshotter runs),
// and cross-checks it against the plain tar+gzip reading every other runtime does.
//
//	estargz-check verify BLOB [--digest sha256:..] [--toc-digest sha256:..]
//	                          [--diff-id sha256:..] [--uncompressed-size N]
//	estargz-check build TAR OUT [--chunk-size N] [--level L]
//
// verify prints one JSON line (the summary) on stdout and exits 0 when every check
// passes; otherwise each problem is a "FAIL: ..." line on stderr and the exit status is 1
// (2 for a malformed command line). build writes the reference library's own eStargz of
// TAR (estargz.Build) to OUT and prints one JSON line about it (bench/estargz.sh compares
// depotai's speed and size with it).
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type summary struct {
	OK               bool   `json:"ok"`
	Digest           string `json:"digest"`
	TOCDigest        string `json:"toc_digest"`
	DiffID           string `json:"diff_id"`
	UncompressedSize int64  `json:"uncompressed_size"`
	Entries          int    `json:"entries"`
	Files            int    `json:"files"`
	Chunks           int    `json:"chunks"`
	BytesVerified    int64  `json:"bytes_verified"`
	Landmark         string `json:"landmark"`
	Failures         int    `json:"failures"`
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
		fmt.Fprintln(os.Stderr, "usage: estargz-check verify BLOB [--digest D] [--toc-digest D] [--diff-id D] [--uncompressed-size N]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	wantDigest := fs.String("digest", "", "the blob's digest (manifest descriptor)")
	wantTOC := fs.String("toc-digest", "", "containerd.io/snapshot/stargz/toc.digest annotation")
	wantDiffID := fs.String("diff-id", "", "the config's rootfs.diff_ids entry")
	wantSize := fs.Int64("uncompressed-size", -1, "io.containers.estargz.uncompressed-size annotation")
	blobPath := os.Args[2]
	if err := fs.Parse(os.Args[3:]); err != nil || fs.NArg() != 0 {
		os.Exit(2)
	}
	s, err := verify(blobPath, *wantDigest, *wantTOC, *wantDiffID, *wantSize)
	if err != nil {
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

func verify(blobPath, wantDigest, wantTOC, wantDiffID string, wantSize int64) (*summary, error) {
	s := &summary{}
	f, err := os.Open(blobPath)
	if err != nil {
		return s, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return s, err
	}

	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return s, err
	}
	s.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if wantDigest != "" && wantDigest != s.Digest {
		fail("blob digest %s, descriptor says %s", s.Digest, wantDigest)
	}

	// 1. The reference reader: footer, TOC, and every chunk against its digest, read the
	// way the snapshotter reads them (one gzip member at the chunk's offset).
	sr := io.NewSectionReader(f, 0, st.Size())
	r, err := estargz.Open(sr)
	if err != nil {
		return s, fmt.Errorf("estargz.Open: %w", err)
	}
	s.TOCDigest = r.TOCDigest().String()
	var ver estargz.TOCEntryVerifier
	if wantTOC != "" {
		d, err := digest.Parse(wantTOC)
		if err != nil {
			return s, fmt.Errorf("--toc-digest: %w", err)
		}
		ver, err = r.VerifyTOC(d)
		if err != nil {
			fail("VerifyTOC: %v", err)
		}
	}
	if ver == nil {
		if ver, err = r.Verifiers(); err != nil {
			return s, fmt.Errorf("TOC chunk digests: %w", err)
		}
	}
	toc := map[string]*estargz.TOCEntry{}
	root, ok := r.Lookup("")
	if !ok {
		return s, fmt.Errorf("TOC has no root directory")
	}
	var walk func(dir string, e *estargz.TOCEntry)
	walk = func(dir string, e *estargz.TOCEntry) {
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			name := path.Join(dir, base)
			toc[name] = c
			if c.Type == "dir" {
				walk(name, c)
			}
			return true
		})
	}
	walk("", root)
	s.Entries = len(toc)
	for _, l := range []string{estargz.PrefetchLandmark, estargz.NoPrefetchLandmark} {
		if _, ok := toc[l]; ok {
			s.Landmark = l
		}
	}
	if s.Landmark == "" {
		fail("neither %s nor %s in the TOC", estargz.PrefetchLandmark, estargz.NoPrefetchLandmark)
	}
	for name, e := range toc {
		if e.Type != "reg" || e.Size == 0 {
			continue
		}
		s.Files++
		file, err := r.OpenFile(name)
		if err != nil {
			fail("OpenFile %q: %v", name, err)
			continue
		}
		for off := int64(0); off < e.Size; {
			ce, ok := r.ChunkEntryForOffset(name, off)
			if !ok {
				fail("%q: no chunk for offset %d", name, off)
				break
			}
			size := ce.ChunkSize
			if size == 0 {
				size = e.Size - ce.ChunkOffset
			}
			v, err := ver.Verifier(ce)
			if err != nil {
				fail("%q chunk at %d: %v", name, ce.ChunkOffset, err)
				break
			}
			if _, err := io.Copy(v, io.NewSectionReader(file, ce.ChunkOffset, size)); err != nil {
				fail("%q chunk at %d: read: %v", name, ce.ChunkOffset, err)
				break
			}
			if !v.Verified() {
				fail("%q chunk at %d (%d bytes): digest mismatch", name, ce.ChunkOffset, size)
			}
			s.Chunks++
			s.BytesVerified += size
			off = ce.ChunkOffset + size
		}
	}

	// 2. The plain reading: one gzip stream (many members) of one tar, whose entries must
	// be the TOC's, with the same contents.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return s, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return s, fmt.Errorf("gzip: %w", err)
	}
	dh := sha256.New()
	counted := &countWriter{}
	tr := tar.NewReader(io.TeeReader(zr, io.MultiWriter(dh, counted)))
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s, fmt.Errorf("tar: %w", err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+hdr.Name), "/"), "/")
		ch := sha256.New()
		if _, err := io.Copy(ch, tr); err != nil {
			return s, fmt.Errorf("tar %q: %w", name, err)
		}
		if name == estargz.TOCTarName || name == "" {
			continue // the TOC itself, and a "./" root entry (which the TOC leaves out)
		}
		seen[name] = true
		e, ok := toc[name]
		if !ok {
			fail("tar entry %q is not in the TOC", name)
			continue
		}
		compareEntry(name, hdr, e, "sha256:"+hex.EncodeToString(ch.Sum(nil)))
	}
	// The rest of the gzip stream must be consumed for the digest (tar stops at its
	// end-of-archive blocks).
	if _, err := io.Copy(io.MultiWriter(dh, counted), zr); err != nil {
		return s, fmt.Errorf("gzip: %w", err)
	}
	for name := range toc {
		if !seen[name] {
			fail("TOC entry %q is not in the tar", name)
		}
	}
	s.DiffID = "sha256:" + hex.EncodeToString(dh.Sum(nil))
	s.UncompressedSize = counted.n
	if wantDiffID != "" && wantDiffID != s.DiffID {
		fail("diff ID %s, config says %s", s.DiffID, wantDiffID)
	}
	if wantSize >= 0 && wantSize != s.UncompressedSize {
		fail("uncompressed size %d, annotation says %d", s.UncompressedSize, wantSize)
	}
	return s, nil
}

var tarTypes = map[byte]string{
	tar.TypeReg: "reg", tar.TypeDir: "dir", tar.TypeSymlink: "symlink", tar.TypeLink: "hardlink",
	tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo",
}

func compareEntry(name string, hdr *tar.Header, e *estargz.TOCEntry, contentDigest string) {
	if t := tarTypes[hdr.Typeflag]; t != e.Type {
		fail("%q: tar type %q, TOC type %q", name, t, e.Type)
		return
	}
	if hdr.Mode&0o7777 != e.Mode&0o7777 {
		fail("%q: tar mode %o, TOC mode %o", name, hdr.Mode&0o7777, e.Mode&0o7777)
	}
	if hdr.Uid != e.UID || hdr.Gid != e.GID {
		fail("%q: tar owner %d:%d, TOC owner %d:%d", name, hdr.Uid, hdr.Gid, e.UID, e.GID)
	}
	switch e.Type {
	case "reg":
		if hdr.Size != e.Size {
			fail("%q: tar size %d, TOC size %d", name, hdr.Size, e.Size)
		}
		if e.Digest != contentDigest {
			fail("%q: contents %s, TOC digest %s", name, contentDigest, e.Digest)
		}
	case "symlink", "hardlink":
		if hdr.Linkname != e.LinkName {
			fail("%q: tar link %q, TOC link %q", name, hdr.Linkname, e.LinkName)
		}
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func build(tarPath, out string, args []string) int {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	chunkSize := fs.Int("chunk-size", 0, "chunk size of large files (0: the library's default, 4 MiB)")
	level := fs.Int("level", gzip.BestCompression, "gzip level")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return 2
	}
	opts := []estargz.Option{estargz.WithCompressionLevel(*level)}
	if *chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(*chunkSize))
	}
	in, err := os.Open(tarPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	start := time.Now()
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build: estargz.Build:", err)
		return 1
	}
	defer blob.Close()
	f, err := os.Create(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), blob)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	secs := time.Since(start).Seconds()
	line, _ := json.Marshal(map[string]any{
		"blob_size":   n,
		"blob_digest": "sha256:" + hex.EncodeToString(h.Sum(nil)),
		"diff_id":     blob.DiffID().String(),
		"toc_digest":  blob.TOCDigest().String(),
		"level":       *level,
		"chunk_size":  *chunkSize,
		"gomaxprocs":  runtime.GOMAXPROCS(0),
		"seconds":     secs,
		"writer":      "github.com/containerd/stargz-snapshotter/estargz Build",
	})
	fmt.Println(string(line))
	return 0
}
