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

fn lookup(ext: &[u8]) -> &'static str {
    match ext {
        // Text and documents.
        b"html" | b"htm" | b"shtml" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" | b"cjs" => "text/javascript; charset=utf-8",
        b"txt" | b"text" | b"log" | b"conf" | b"ini" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"tsv" => "text/tab-separated-values; charset=utf-8",
        b"md" | b"markdown" => "text/markdown; charset=utf-8",
        b"ics" => "text/calendar; charset=utf-8",
        b"vtt" => "text/vtt; charset=utf-8",
        b"xml" | b"xsl" | b"xsd" => "text/xml; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"jsonld" => "application/ld+json",
        b"geojson" => "application/geo+json",
        b"webmanifest" => "application/manifest+json",
        b"xhtml" | b"xht" => "application/xhtml+xml",
        b"rss" => "application/rss+xml",
        b"atom" => "application/atom+xml",
        b"yaml" | b"yml" => "application/yaml",
        b"toml" => "application/toml",
        b"pdf" => "application/pdf",
        b"rtf" => "application/rtf",
        b"epub" => "application/epub+zip",
        b"doc" => "application/msword",
        b"docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        b"xls" => "application/vnd.ms-excel",
        b"xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        b"ppt" => "application/vnd.ms-powerpoint",
        b"pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        b"odt" => "application/vnd.oasis.opendocument.text",
        b"ods" => "application/vnd.oasis.opendocument.spreadsheet",
        b"wasm" => "application/wasm",
        // Images.
        b"svg" | b"svgz" => "image/svg+xml",
        b"png" => "image/png",
        b"apng" => "image/apng",
        b"jpg" | b"jpeg" | b"jpe" | b"jfif" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"jxl" => "image/jxl",
        b"heic" => "image/heic",
        b"ico" | b"cur" => "image/x-icon",
        b"bmp" => "image/bmp",
        b"tif" | b"tiff" => "image/tiff",
        // Fonts.
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"eot" => "application/vnd.ms-fontobject",
        // Audio and video.
        b"mp4" | b"m4v" => "video/mp4",
        b"webm" => "video/webm",
        b"ogv" => "video/ogg",
        b"mov" => "video/quicktime",
        b"avi" => "video/x-msvideo",
        b"mpeg" | b"mpg" => "video/mpeg",
        b"mkv" => "video/x-matroska",
        b"ts" => "video/mp2t",
        b"m3u8" => "application/vnd.apple.mpegurl",
        b"ogg" | b"oga" => "audio/ogg",
        b"opus" => "audio/opus",
        b"mp3" => "audio/mpeg",
        b"wav" => "audio/wav",
        b"flac" => "audio/flac",
        b"m4a" => "audio/mp4",
        b"aac" => "audio/aac",
        b"weba" => "audio/webm",
        b"mid" | b"midi" => "audio/midi",
        // 3D models.
        b"gltf" => "model/gltf+json",
        b"glb" => "model/gltf-binary",
        // Archives.
        b"zip" => "application/zip",
        b"gz" | b"tgz" => "application/gzip",
        b"tar" => "application/x-tar",
        b"bz2" => "application/x-bzip2",
        b"xz" => "application/x-xz",
        b"zst" => "application/zstd",
        b"7z" => "application/x-7z-compressed",
        b"rar" => "application/vnd.rar",
        b"jar" => "application/java-archive",
        _ => DEFAULT_MIME,
    }
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
