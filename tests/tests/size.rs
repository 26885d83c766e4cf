//! The httpd image stays small: at most 512 KiB stripped (release profile,
//! as `cargo uk build httpd` builds it).

use uk_cli::elf::{HTTPD_MAX_STRIPPED, stripped_size};

#[test]
fn httpd_image_is_at_most_512_kib_stripped() {
    let image = uk_tests::image("httpd");
    let size = stripped_size(&image).expect("measure the image");
    assert!(
        size <= HTTPD_MAX_STRIPPED,
        "httpd is {size} bytes stripped ({:.1} KiB), over the {} KiB limit \
         (`cargo uk build httpd` prints the same figure)",
        size as f64 / 1024.0,
        HTTPD_MAX_STRIPPED / 1024
    );
}
