//! Deterministic tar headers, laid out byte for byte as Go's `archive/tar` writes them
//! (USTAR when it can, PAX records when it must), so our tar streams read the same in
//! every tar implementation and compare cleanly with the reference eStargz writer.
//!
//! Only what a data image needs is supported: regular files, directories and symlinks,
//! with mtime 0, uid/gid 0 and no user or group names.

/// Tar block size.
pub const BLOCK: usize = 512;

/// Sizes from 8 GiB (2^33) up do not fit USTAR's 11 octal digits: they get a PAX record.
pub const USTAR_MAX_SIZE: u64 = (1 << 33) - 1;

const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Symlink,
    Directory,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::Symlink => b'2',
            Kind::Directory => b'5',
        }
    }
}

/// One tar header to encode. `name` is the full tar name (directories end with `/`).
#[derive(Clone, Debug)]
pub struct Header<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub link_name: &'a str,
}

/// Appends the header blocks for `h` to `out`: a PAX `x` header and its records when
/// needed, then the main header. Returns the number of bytes appended.
pub fn append_header(out: &mut Vec<u8>, h: &Header<'_>) -> usize {
    let start = out.len();
    let mut records: Vec<(&str, String)> = Vec::new();

    let (name_field, prefix_field) = if h.name.len() <= NAME_LEN && h.name.is_ascii() {
        (h.name.to_string(), String::new())
    } else if let Some((prefix, name)) = split_ustar_path(h.name) {
        (name.to_string(), prefix.to_string())
    } else {
        records.push(("path", h.name.to_string()));
        (ascii_truncated(h.name, NAME_LEN), String::new())
    };
    let link_field = if h.link_name.len() <= NAME_LEN && h.link_name.is_ascii() {
        h.link_name.to_string()
    } else {
        records.push(("linkpath", h.link_name.to_string()));
        ascii_truncated(h.link_name, NAME_LEN)
    };
    let size_field = if h.size > USTAR_MAX_SIZE {
        records.push(("size", h.size.to_string()));
        0
    } else {
        h.size
    };

    if !records.is_empty() {
        records.sort_by(|a, b| a.0.cmp(b.0));
        let mut body = Vec::new();
        for (key, value) in &records {
            body.extend_from_slice(pax_record(key, value).as_bytes());
        }
        let pax_name = ascii_truncated(&pax_header_name(h.name), NAME_LEN);
        let mut block = [0u8; BLOCK];
        fill_block(
            &mut block,
            &pax_name,
            h.mode,
            body.len() as u64,
            b'x',
            "",
            "",
            false,
        );
        out.extend_from_slice(&block);
        out.extend_from_slice(&body);
        pad_to_block(out);
    }

    let mut block = [0u8; BLOCK];
    fill_block(
        &mut block,
        &name_field,
        h.mode,
        size_field,
        h.kind.flag(),
        &link_field,
        &prefix_field,
        true,
    );
    out.extend_from_slice(&block);
    out.len() - start
}

/// Zero bytes that follow a payload of `size` bytes up to the next block boundary.
pub fn padding_len(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

pub fn pad_to_block(out: &mut Vec<u8>) {
    let pad = padding_len(out.len() as u64);
    out.resize(out.len() + pad, 0);
}

#[allow(clippy::too_many_arguments)]
fn fill_block(
    block: &mut [u8; BLOCK],
    name: &str,
    mode: u32,
    size: u64,
    flag: u8,
    link: &str,
    prefix: &str,
    device_fields: bool,
) {
    put_str(&mut block[0..100], name);
    put_octal(&mut block[100..108], mode as u64);
    put_octal(&mut block[108..116], 0); // uid
    put_octal(&mut block[116..124], 0); // gid
    put_octal(&mut block[124..136], size);
    put_octal(&mut block[136..148], 0); // mtime
    block[156] = flag;
    put_str(&mut block[157..257], link);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    // uname and gname stay empty (all NUL).
    if device_fields {
        put_octal(&mut block[329..337], 0);
        put_octal(&mut block[337..345], 0);
    }
    put_str(&mut block[345..500], prefix);
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| b as u32).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn put_str(field: &mut [u8], s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(field.len());
    field[..n].copy_from_slice(&b[..n]);
}

/// Zero-padded octal, NUL-terminated, filling the field (e.g. `0000644\0`).
fn put_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    debug_assert_eq!(
        s.len(),
        digits,
        "value {v} does not fit {digits} octal digits"
    );
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// A PAX record `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// Go's `splitUSTARPath`: a long ASCII name that splits at a `/` into prefix ≤ 155 and
/// name ≤ 100 stays USTAR.
fn split_ustar_path(name: &str) -> Option<(&str, &str)> {
    let b = name.as_bytes();
    if b.len() <= NAME_LEN || !name.is_ascii() {
        return None;
    }
    let mut length = b.len();
    if length > PREFIX_LEN + 1 {
        length = PREFIX_LEN + 1;
    } else if b[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].rfind('/')?;
    let (plen, nlen) = (i, b.len() - i - 1);
    if i == 0 || nlen > NAME_LEN || nlen == 0 || plen > PREFIX_LEN {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// `dir/PaxHeaders.0/base`, as Go names the `x` header.
fn pax_header_name(name: &str) -> String {
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    match trimmed.rfind('/') {
        Some(i) => format!("{}/PaxHeaders.0/{}", &trimmed[..i], &trimmed[i + 1..]),
        None => format!("PaxHeaders.0/{trimmed}"),
    }
}

fn ascii_truncated(s: &str, max: usize) -> String {
    s.chars().filter(|c| c.is_ascii()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(bytes: &[u8]) -> Vec<(String, u64, String, u32, tar::EntryType)> {
        let mut stream = bytes.to_vec();
        stream.extend_from_slice(&[0u8; 1024]);
        let mut ar = tar::Archive::new(&stream[..]);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_size().unwrap(),
                    link,
                    e.header().mode().unwrap(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    fn header(name: &str, kind: Kind, size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        append_header(
            &mut out,
            &Header {
                name,
                kind,
                mode: 0o644,
                size,
                link_name: "",
            },
        );
        out
    }

    #[test]
    fn short_ascii_name_is_a_single_ustar_block_like_go_writes_it() {
        let out = header("a/hello.txt", Kind::Regular, 6);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[0..11], b"a/hello.txt");
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[108..116], b"0000000\0");
        assert_eq!(&out[124..136], b"00000000006\0");
        assert_eq!(&out[136..148], b"00000000000\0");
        assert_eq!(out[156], b'0');
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[329..345], b"0000000\x000000000\0");
        assert_eq!(out[154], 0);
        assert_eq!(out[155], b' ');
        let sum: u32 = out
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        assert_eq!(&out[148..154], format!("{sum:06o}").as_bytes());
    }

    #[test]
    fn long_name_that_splits_at_a_slash_uses_the_ustar_prefix() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let out = header(&name, Kind::Regular, 0);
        assert_eq!(out.len(), BLOCK, "no PAX header expected");
        assert_eq!(&out[345..465], "d".repeat(120).as_bytes());
        assert_eq!(read_back(&out)[0].0, name);
    }

    #[test]
    fn names_over_255_bytes_and_non_ascii_names_get_a_pax_path_record() {
        for name in ["x".repeat(300), "models/日本語/モデル.bin".to_string()] {
            let out = header(&name, Kind::Regular, 3);
            assert_eq!(out[156], b'x', "{name}");
            assert_eq!(out.len(), 3 * BLOCK);
            let back = read_back(&out);
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].0, name);
        }
    }

    #[test]
    fn sizes_of_8_gib_and_more_get_a_pax_size_record() {
        let below = header("w.bin", Kind::Regular, USTAR_MAX_SIZE);
        assert_eq!(below.len(), BLOCK);
        assert_eq!(&below[124..136], b"77777777777\0");

        let at = header("w.bin", Kind::Regular, 1 << 33);
        assert_eq!(at[156], b'x');
        assert_eq!(&at[BLOCK..BLOCK + 19], b"19 size=8589934592\n");
        assert_eq!(&at[2 * BLOCK + 124..2 * BLOCK + 136], b"00000000000\0");
        assert_eq!(&at[0..18], b"PaxHeaders.0/w.bin");
        // The x header has no device numbers, as in Go.
        assert_eq!(&at[329..345], &[0u8; 16]);
        let mut ar = tar::Archive::new(&at[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), 1 << 33);
    }

    #[test]
    fn symlink_and_directory_headers_read_back() {
        let mut out = Vec::new();
        append_header(
            &mut out,
            &Header {
                name: "dir/",
                kind: Kind::Directory,
                mode: 0o755,
                size: 0,
                link_name: "",
            },
        );
        let long_target = "t".repeat(150);
        append_header(
            &mut out,
            &Header {
                name: "dir/link",
                kind: Kind::Symlink,
                mode: 0o777,
                size: 0,
                link_name: &long_target,
            },
        );
        let back = read_back(&out);
        assert_eq!(back[0].0, "dir/");
        assert_eq!(back[0].3, 0o755);
        assert_eq!(back[0].4, tar::EntryType::Directory);
        assert_eq!(back[1].2, long_target);
        assert_eq!(back[1].4, tar::EntryType::Symlink);
    }

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        assert_eq!(pax_record("size", "8589934592"), "19 size=8589934592\n");
        // 9 + 90 + 3 = 102 body bytes crosses into a 3-digit length.
        let r = pax_record("path", &"p".repeat(93));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
        let r = pax_record("path", &"p".repeat(89));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
    }
}
