//! File-extension → media type table.

/// Media type used when the extension is unknown or absent.
pub const DEFAULT_MIME: &str = "application/octet-stream";

/// Returns the `Content-Type` value for a file path, chosen by the extension of
/// its last segment (case-insensitive). `text/*` types carry `; charset=utf-8`.
/// Unknown or missing extensions give [`DEFAULT_MIME`].
///
/// For precompressed siblings pass the *original* name (`app.js`, not
/// `app.js.br`); the coding goes into `Content-Encoding` instead.
pub fn mime_for(path: &str) -> &'static str {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let Some(dot) = name.rfind('.') else {
        return DEFAULT_MIME;
    };
    let ext = &name.as_bytes()[dot + 1..];
    let mut buf = [0u8; 12];
    if ext.is_empty() || ext.len() > buf.len() {
        return DEFAULT_MIME;
    }
    for (d, s) in buf.iter_mut().zip(ext) {
        *d = s.to_ascii_lowercase();
    }
    lookup(&buf[..ext.len()])
}

/// Extensions, space-separated, one line per media type of [`TYPES`]. The
/// lookup uses [`TABLE`], made from this at compile time: a sorted table
/// searched by halves is as fast as the `match` it replaced and a fraction
/// of its code.
const EXTS: &[u8] = b"\
html htm shtml\n\
css\n\
js mjs cjs\n\
txt text log conf ini\n\
csv\n\
tsv\n\
md markdown\n\
ics\n\
vtt\n\
xml xsl xsd\n\
json map\n\
jsonld\n\
geojson\n\
webmanifest\n\
xhtml xht\n\
rss\n\
atom\n\
yaml yml\n\
toml\n\
pdf\n\
rtf\n\
epub\n\
doc\n\
docx\n\
xls\n\
xlsx\n\
ppt\n\
pptx\n\
odt\n\
ods\n\
wasm\n\
svg svgz\n\
png\n\
apng\n\
jpg jpeg jpe jfif\n\
gif\n\
webp\n\
avif\n\
jxl\n\
heic\n\
ico cur\n\
bmp\n\
tif tiff\n\
woff\n\
woff2\n\
ttf\n\
otf\n\
eot\n\
mp4 m4v\n\
webm\n\
ogv\n\
mov\n\
avi\n\
mpeg mpg\n\
mkv\n\
ts\n\
m3u8\n\
ogg oga\n\
opus\n\
mp3\n\
wav\n\
flac\n\
m4a\n\
aac\n\
weba\n\
mid midi\n\
gltf\n\
glb\n\
zip\n\
gz tgz\n\
tar\n\
bz2\n\
xz\n\
zst\n\
7z\n\
rar\n\
jar";

/// The media type of each line of [`EXTS`], one a line.
const TYPES: &str = "\
text/html; charset=utf-8\n\
text/css; charset=utf-8\n\
text/javascript; charset=utf-8\n\
text/plain; charset=utf-8\n\
text/csv; charset=utf-8\n\
text/tab-separated-values; charset=utf-8\n\
text/markdown; charset=utf-8\n\
text/calendar; charset=utf-8\n\
text/vtt; charset=utf-8\n\
text/xml; charset=utf-8\n\
application/json\n\
application/ld+json\n\
application/geo+json\n\
application/manifest+json\n\
application/xhtml+xml\n\
application/rss+xml\n\
application/atom+xml\n\
application/yaml\n\
application/toml\n\
application/pdf\n\
application/rtf\n\
application/epub+zip\n\
application/msword\n\
application/vnd.openxmlformats-officedocument.wordprocessingml.document\n\
application/vnd.ms-excel\n\
application/vnd.openxmlformats-officedocument.spreadsheetml.sheet\n\
application/vnd.ms-powerpoint\n\
application/vnd.openxmlformats-officedocument.presentationml.presentation\n\
application/vnd.oasis.opendocument.text\n\
application/vnd.oasis.opendocument.spreadsheet\n\
application/wasm\n\
image/svg+xml\n\
image/png\n\
image/apng\n\
image/jpeg\n\
image/gif\n\
image/webp\n\
image/avif\n\
image/jxl\n\
image/heic\n\
image/x-icon\n\
image/bmp\n\
image/tiff\n\
font/woff\n\
font/woff2\n\
font/ttf\n\
font/otf\n\
application/vnd.ms-fontobject\n\
video/mp4\n\
video/webm\n\
video/ogg\n\
video/quicktime\n\
video/x-msvideo\n\
video/mpeg\n\
video/x-matroska\n\
video/mp2t\n\
application/vnd.apple.mpegurl\n\
audio/ogg\n\
audio/opus\n\
audio/mpeg\n\
audio/wav\n\
audio/flac\n\
audio/mp4\n\
audio/aac\n\
audio/webm\n\
audio/midi\n\
model/gltf+json\n\
model/gltf-binary\n\
application/zip\n\
application/gzip\n\
application/x-tar\n\
application/x-bzip2\n\
application/x-xz\n\
application/zstd\n\
application/x-7z-compressed\n\
application/vnd.rar\n\
application/java-archive";

/// The longest extension in [`EXTS`].
const EXT_MAX: usize = 11;
const N_EXTS: usize = count(EXTS, true);
const N_TYPES: usize = count(TYPES.as_bytes(), false);

/// An extension padded with zeros, and the line of its type in [`TYPES`].
type Entry = ([u8; EXT_MAX], u8);

/// Every extension of [`EXTS`] with its type's line, sorted.
static TABLE: [Entry; N_EXTS] = table();

/// Where each line of [`TYPES`] starts (and one past the end).
static STARTS: [u16; N_TYPES + 1] = starts();

/// Words (separated by spaces and newlines) or, with `words` false, lines.
const fn count(s: &[u8], words: bool) -> usize {
    let (mut n, mut i, mut inside) = (0, 0, false);
    while i < s.len() {
        let gap = s[i] == b'\n' || (words && s[i] == b' ');
        if !gap && !inside {
            n += 1;
        }
        inside = !gap;
        i += 1;
    }
    n
}

const fn table() -> [Entry; N_EXTS] {
    let mut out = [([0u8; EXT_MAX], 0u8); N_EXTS];
    let (mut i, mut n, mut line, mut start) = (0, 0, 0u8, 0);
    while i <= EXTS.len() {
        let b = if i < EXTS.len() { EXTS[i] } else { b'\n' };
        if b == b' ' || b == b'\n' {
            if i > start {
                assert!(i - start <= EXT_MAX, "extension too long");
                let mut k = 0;
                while k < i - start {
                    out[n].0[k] = EXTS[start + k];
                    k += 1;
                }
                out[n].1 = line;
                n += 1;
            }
            start = i + 1;
            if b == b'\n' {
                line += 1;
            }
        }
        i += 1;
    }
    // Insertion sort: about a hundred entries, once, at compile time.
    let mut a = 1;
    while a < N_EXTS {
        let mut b = a;
        while b > 0 && less(&out[b].0, &out[b - 1].0) {
            let t = out[b];
            out[b] = out[b - 1];
            out[b - 1] = t;
            b -= 1;
        }
        a += 1;
    }
    out
}

const fn less(x: &[u8; EXT_MAX], y: &[u8; EXT_MAX]) -> bool {
    let mut i = 0;
    while i < EXT_MAX {
        if x[i] != y[i] {
            return x[i] < y[i];
        }
        i += 1;
    }
    false
}

const fn starts() -> [u16; N_TYPES + 1] {
    let s = TYPES.as_bytes();
    let mut out = [0u16; N_TYPES + 1];
    let (mut i, mut n) = (0, 1);
    while i < s.len() {
        if s[i] == b'\n' {
            out[n] = (i + 1) as u16;
            n += 1;
        }
        i += 1;
    }
    out[N_TYPES] = (s.len() + 1) as u16;
    out
}

fn lookup(ext: &[u8]) -> &'static str {
    let mut key = [0u8; EXT_MAX];
    let Some(k) = key.get_mut(..ext.len()) else {
        return DEFAULT_MIME;
    };
    k.copy_from_slice(ext);
    let Ok(i) = TABLE.binary_search_by(|e| e.0.cmp(&key)) else {
        return DEFAULT_MIME;
    };
    let line = usize::from(TABLE[i].1);
    let (a, b) = (STARTS[line], STARTS[line + 1] - 1);
    TYPES
        .get(usize::from(a)..usize::from(b))
        .unwrap_or(DEFAULT_MIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every extension of the table finds the type on its line, and one
    /// letter more (before or after) finds nothing unless it is listed.
    #[test]
    fn every_listed_extension() {
        let types: alloc::vec::Vec<&str> = TYPES.split('\n').collect();
        assert_eq!(types.len(), N_TYPES);
        let exts = core::str::from_utf8(EXTS).unwrap();
        let listed = |e: &str| exts.split(['\n', ' ']).any(|x| x == e);
        let mut n = 0;
        for (line, names) in exts.split('\n').enumerate() {
            for ext in names.split(' ') {
                assert_eq!(lookup(ext.as_bytes()), types[line], "{ext}");
                for other in [alloc::format!("{ext}q"), alloc::format!("q{ext}")] {
                    if !listed(&other) {
                        assert_eq!(lookup(other.as_bytes()), DEFAULT_MIME, "{other}");
                    }
                }
                n += 1;
            }
        }
        assert_eq!(n, N_EXTS);
        assert!(
            TABLE.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
    }

    #[test]
    fn common_types() {
        let cases = [
            ("/index.html", "text/html; charset=utf-8"),
            ("/a/b.HTM", "text/html; charset=utf-8"),
            ("/s.css", "text/css; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/m.mjs", "text/javascript; charset=utf-8"),
            ("/d.json", "application/json"),
            ("/app.js.map", "application/json"),
            ("/f.xml", "text/xml; charset=utf-8"),
            ("/r.txt", "text/plain; charset=utf-8"),
            ("/r.csv", "text/csv; charset=utf-8"),
            ("/README.md", "text/markdown; charset=utf-8"),
            ("/i.svg", "image/svg+xml"),
            ("/i.png", "image/png"),
            ("/i.JPG", "image/jpeg"),
            ("/i.jpeg", "image/jpeg"),
            ("/i.gif", "image/gif"),
            ("/i.webp", "image/webp"),
            ("/i.avif", "image/avif"),
            ("/favicon.ico", "image/x-icon"),
            ("/i.bmp", "image/bmp"),
            ("/i.tiff", "image/tiff"),
            ("/f.woff", "font/woff"),
            ("/f.woff2", "font/woff2"),
            ("/f.ttf", "font/ttf"),
            ("/f.otf", "font/otf"),
            ("/f.eot", "application/vnd.ms-fontobject"),
            ("/v.mp4", "video/mp4"),
            ("/v.webm", "video/webm"),
            ("/a.ogg", "audio/ogg"),
            ("/a.mp3", "audio/mpeg"),
            ("/a.wav", "audio/wav"),
            ("/a.flac", "audio/flac"),
            ("/a.m4a", "audio/mp4"),
            ("/d.pdf", "application/pdf"),
            ("/d.zip", "application/zip"),
            ("/d.tar.gz", "application/gzip"),
            ("/d.tar", "application/x-tar"),
            ("/m.wasm", "application/wasm"),
            ("/site.webmanifest", "application/manifest+json"),
            ("/c.ics", "text/calendar; charset=utf-8"),
            ("/feed.rss", "application/rss+xml"),
            ("/feed.atom", "application/atom+xml"),
            ("/c.yaml", "application/yaml"),
            ("/c.yml", "application/yaml"),
            ("/Cargo.toml", "application/toml"),
        ];
        for (p, m) in cases {
            assert_eq!(mime_for(p), m, "{p}");
        }
    }

    #[test]
    fn defaults() {
        for p in [
            "/",
            "/Makefile",
            "/a.",
            "/.",
            "/x.unknownext",
            "/dir.d/file",
            "",
            "/a.verylongextension",
            "/a.ht\u{e9}",
        ] {
            assert_eq!(mime_for(p), DEFAULT_MIME, "{p}");
        }
        assert_eq!(mime_for("dir.html/file"), DEFAULT_MIME);
        assert_eq!(mime_for("index.html"), "text/html; charset=utf-8");
    }
}
