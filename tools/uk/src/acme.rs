//! `cargo uk image --acme-domain NAME --acme-directory URL --acme-ca FILE
//! [--acme-email ADDR] [--acme-dns IP]`: an httpd TLS image that gets its own certificate by
//! ACME (RFC 8555, HTTP-01) at boot. The CA file (the roots httpd trusts for
//! the directory's HTTPS) goes into the image at [`CA_PATH`]; the options
//! become httpd's `--acme-*` arguments, checked with httpd's own parser.

use std::path::PathBuf;

use crate::Error;

/// Where the image keeps the directory's CA (httpd does not serve
/// `--acme-state`, `/acme` by default).
pub const CA_PATH: &str = "/acme/ca.pem";

/// The ACME flags of `cargo uk image`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AcmeArgs {
    /// Get (and renew) a certificate for NAME at boot by ACME HTTP-01 (a TLS
    /// image; needs --acme-directory and --acme-ca)
    #[arg(long = "acme-domain", value_name = "NAME")]
    pub domain: Option<String>,
    /// The ACME directory, https://IP[:PORT]/PATH
    #[arg(long = "acme-directory", value_name = "URL")]
    pub directory: Option<String>,
    /// Contact address of the ACME account
    #[arg(long = "acme-email", value_name = "ADDR")]
    pub email: Option<String>,
    /// PEM root certificate(s) httpd trusts for the directory's HTTPS (put
    /// in the image at /acme/ca.pem)
    #[arg(long = "acme-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// DNS server for the directory's host name when DHCP gives none
    #[arg(long = "acme-dns", value_name = "IP")]
    pub dns: Option<std::net::Ipv4Addr>,
}

impl AcmeArgs {
    /// Whether any ACME flag was given.
    pub fn is_set(&self) -> bool {
        *self != AcmeArgs::default()
    }

    /// httpd's arguments, checked; a usage error says what is missing or
    /// wrong.
    pub fn httpd_args(&self) -> Result<Vec<String>, Error> {
        let usage = |m: String| Error::Usage(m);
        let domain = self
            .domain
            .as_deref()
            .ok_or_else(|| usage("the --acme-* options need --acme-domain".into()))?;
        let directory = self
            .directory
            .as_deref()
            .ok_or_else(|| usage("--acme-domain needs --acme-directory URL".into()))?;
        let ca = self.ca.as_deref().ok_or_else(|| {
            usage("--acme-domain needs --acme-ca FILE (the roots trusted for the directory)".into())
        })?;
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| usage(format!("--acme-ca {}: {e}", ca.display())))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(usage(format!(
                "--acme-ca {}: no PEM certificate in the file",
                ca.display()
            )));
        }
        let mut args: Vec<String> = vec![
            "--acme-domain".into(),
            domain.into(),
            "--acme-directory".into(),
            directory.into(),
            "--acme-ca".into(),
            CA_PATH.into(),
        ];
        if let Some(e) = &self.email {
            args.extend(["--acme-email".into(), e.clone()]);
        }
        if let Some(d) = self.dns {
            args.extend(["--acme-dns".into(), d.to_string()]);
        }
        if args.iter().any(|a| a.contains(['"', '\\', '$', ' '])) {
            return Err(usage(
                "--acme-*: '\"', '\\', '$' and spaces cannot be passed on the kernel command line"
                    .into(),
            ));
        }
        uk_http::config::parse_args(&args).map_err(usage)?;
        Ok(args)
    }

    /// The files `cargo uk image` puts on the disk for these options:
    /// the CA file at [`CA_PATH`].
    pub fn disk_files(&self) -> Vec<(PathBuf, String)> {
        self.ca
            .iter()
            .map(|ca| (ca.clone(), CA_PATH.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageFormat, temp_path};

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn args(ca: Option<PathBuf>) -> AcmeArgs {
        AcmeArgs {
            domain: Some("www.example.test".into()),
            directory: Some("https://10.0.0.1:14000/dir".into()),
            email: Some("ops@example.test".into()),
            ca,
            dns: None,
        }
    }

    #[test]
    fn httpd_arguments_are_checked() {
        let ca = temp_path("acme-ca").with_extension("pem");
        // (On a fresh clone the temporary folder does not exist yet.)
        std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
        std::fs::write(&ca, PEM).unwrap();
        let a = args(Some(ca.clone()));
        assert!(a.is_set());
        assert!(!AcmeArgs::default().is_set());
        assert_eq!(
            a.httpd_args().unwrap(),
            [
                "--acme-domain",
                "www.example.test",
                "--acme-directory",
                "https://10.0.0.1:14000/dir",
                "--acme-ca",
                "/acme/ca.pem",
                "--acme-email",
                "ops@example.test"
            ]
        );
        let err = |a: AcmeArgs| match a.httpd_args() {
            Err(Error::Usage(m)) => m,
            r => panic!("{r:?}"),
        };
        assert!(err(args(None)).contains("--acme-ca"));
        assert!(
            err(AcmeArgs {
                domain: None,
                ..args(Some(ca.clone()))
            })
            .contains("--acme-domain")
        );
        assert!(
            err(AcmeArgs {
                directory: None,
                ..args(Some(ca.clone()))
            })
            .contains("--acme-directory")
        );
        assert!(
            err(AcmeArgs {
                domain: Some("bad_name".into()),
                ..args(Some(ca.clone()))
            })
            .contains("domain")
        );
        assert!(
            err(AcmeArgs {
                directory: Some("http://x/".into()),
                ..args(Some(ca.clone()))
            })
            .contains("URL")
        );
        assert!(
            err(AcmeArgs {
                email: Some("a\"b@c".into()),
                ..args(Some(ca.clone()))
            })
            .contains("kernel command line")
        );
        let not_pem = temp_path("acme-ca").with_extension("txt");
        std::fs::write(&not_pem, "hello").unwrap();
        assert!(err(args(Some(not_pem.clone()))).contains("no PEM"));
        let _ = std::fs::remove_file(&ca);
        let _ = std::fs::remove_file(&not_pem);
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: AcmeArgs,
        }
        let t = T::try_parse_from([
            "t",
            "--acme-domain",
            "a.test",
            "--acme-directory=https://1.2.3.4/d",
            "--acme-ca",
            "ca.pem",
            "--acme-email",
            "x@a.test",
            "--acme-dns",
            "10.0.0.53",
        ])
        .unwrap();
        assert_eq!(t.a.domain.as_deref(), Some("a.test"));
        assert_eq!(t.a.directory.as_deref(), Some("https://1.2.3.4/d"));
        assert_eq!(t.a.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(t.a.email.as_deref(), Some("x@a.test"));
        assert_eq!(t.a.dns, Some(std::net::Ipv4Addr::new(10, 0, 0, 53)));
        assert!(!T::try_parse_from(["t"]).unwrap().a.is_set());
    }

    #[test]
    fn the_ca_goes_into_the_image() {
        use std::process::Command;
        let have = |p: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have("mkfs.ext4") || !have("debugfs") {
            eprintln!("skipped: mkfs.ext4 and debugfs (e2fsprogs) are needed");
            return;
        }
        let dir = temp_path("acme-site");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "hi").unwrap();
        let ca = temp_path("acme-ca").with_extension("pem");
        std::fs::write(&ca, PEM.repeat(20)).unwrap();
        let img = temp_path("acme-img").with_extension("img");
        let files = args(Some(ca.clone())).disk_files();
        assert_eq!(files, [(ca.clone(), CA_PATH.to_string())]);
        assert!(args(None).disk_files().is_empty());
        crate::image::build_image_with(&dir, &img, ImageFormat::Ext4, &files).unwrap();
        let out = Command::new("debugfs")
            .args(["-R", "cat acme/ca.pem"])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), PEM.repeat(20));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&ca);
        let _ = std::fs::remove_file(&img);
    }
}
