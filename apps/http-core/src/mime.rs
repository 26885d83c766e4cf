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

/// Extensions (space-separated) `=` media type, one pair a line, the most
/// common first: one string, scanned, is a fraction of the code a `match`
/// on the extension compiles to.
const TYPES: &str = "\
html htm shtml=text/html; charset=utf-8\n\
css=text/css; charset=utf-8\n\
js mjs cjs=text/javascript; charset=utf-8\n\
txt text log conf ini=text/plain; charset=utf-8\n\
csv=text/csv; charset=utf-8\n\
tsv=text/tab-separated-values; charset=utf-8\n\
md markdown=text/markdown; charset=utf-8\n\
ics=text/calendar; charset=utf-8\n\
vtt=text/vtt; charset=utf-8\n\
xml xsl xsd=text/xml; charset=utf-8\n\
json map=application/json\n\
jsonld=application/ld+json\n\
geojson=application/geo+json\n\
webmanifest=application/manifest+json\n\
xhtml xht=application/xhtml+xml\n\
rss=application/rss+xml\n\
atom=application/atom+xml\n\
yaml yml=application/yaml\n\
toml=application/toml\n\
pdf=application/pdf\n\
rtf=application/rtf\n\
epub=application/epub+zip\n\
doc=application/msword\n\
docx=application/vnd.openxmlformats-officedocument.wordprocessingml.document\n\
xls=application/vnd.ms-excel\n\
xlsx=application/vnd.openxmlformats-officedocument.spreadsheetml.sheet\n\
ppt=application/vnd.ms-powerpoint\n\
pptx=application/vnd.openxmlformats-officedocument.presentationml.presentation\n\
odt=application/vnd.oasis.opendocument.text\n\
ods=application/vnd.oasis.opendocument.spreadsheet\n\
wasm=application/wasm\n\
svg svgz=image/svg+xml\n\
png=image/png\n\
apng=image/apng\n\
jpg jpeg jpe jfif=image/jpeg\n\
gif=image/gif\n\
webp=image/webp\n\
avif=image/avif\n\
jxl=image/jxl\n\
heic=image/heic\n\
ico cur=image/x-icon\n\
bmp=image/bmp\n\
tif tiff=image/tiff\n\
woff=font/woff\n\
woff2=font/woff2\n\
ttf=font/ttf\n\
otf=font/otf\n\
eot=application/vnd.ms-fontobject\n\
mp4 m4v=video/mp4\n\
webm=video/webm\n\
ogv=video/ogg\n\
mov=video/quicktime\n\
avi=video/x-msvideo\n\
mpeg mpg=video/mpeg\n\
mkv=video/x-matroska\n\
ts=video/mp2t\n\
m3u8=application/vnd.apple.mpegurl\n\
ogg oga=audio/ogg\n\
opus=audio/opus\n\
mp3=audio/mpeg\n\
wav=audio/wav\n\
flac=audio/flac\n\
m4a=audio/mp4\n\
aac=audio/aac\n\
weba=audio/webm\n\
mid midi=audio/midi\n\
gltf=model/gltf+json\n\
glb=model/gltf-binary\n\
zip=application/zip\n\
gz tgz=application/gzip\n\
tar=application/x-tar\n\
bz2=application/x-bzip2\n\
xz=application/x-xz\n\
zst=application/zstd\n\
7z=application/x-7z-compressed\n\
rar=application/vnd.rar\n\
jar=application/java-archive";

fn lookup(ext: &[u8]) -> &'static str {
    for line in TYPES.split('\n') {
        if let Some((exts, ty)) = line.split_once('=')
            && exts.split(' ').any(|e| e.as_bytes() == ext)
        {
            return ty;
        }
    }
    DEFAULT_MIME
}

#[cfg(test)]
mod tests {
    use super::*;

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
