#![allow(clippy::unwrap_used)]

use super::*;

/// Writes a self-signed certificate and its key for `localhost`; their paths.
fn write_pair(dir: &Path, name: &str) -> TlsFiles {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, certified.cert.pem()).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    files
}

fn error_of(files: &TlsFiles) -> String {
    format!("{:#}", ServerTls::load(files.clone()).unwrap_err())
}

#[test]
fn a_valid_pair_loads_and_is_described_by_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), "a");
    let (config, about) = server_config(&files).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let fingerprint = about
        .strip_prefix("certificate SHA-256 ")
        .and_then(|rest| rest.strip_suffix(", 1 in chain"))
        .unwrap();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    assert!(
        fingerprint
            .split(':')
            .all(|pair| pair.len() == 2 && pair.chars().all(|c| c.is_ascii_hexdigit())),
        "{fingerprint}"
    );
}

#[test]
fn an_unreadable_or_empty_file_is_named_with_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_pair(dir.path(), "a");
    let missing = TlsFiles {
        cert: dir.path().join("missing.crt"),
        ..good.clone()
    };
    let e = error_of(&missing);
    assert!(
        e.contains("missing.crt") && e.contains("RMM_TLS_CERT"),
        "{e}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let e = error_of(&TlsFiles {
        cert: garbage.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("garbage.pem") && e.contains("RMM_TLS_CERT"),
        "{e}"
    );
    let e = error_of(&TlsFiles {
        key: garbage,
        ..good.clone()
    });
    assert!(
        e.contains("garbage.pem") && e.contains("RMM_TLS_KEY"),
        "{e}"
    );
    // A certificate where the key should be: no private key in it.
    let e = error_of(&TlsFiles {
        key: good.cert.clone(),
        ..good
    });
    assert!(e.contains("a.crt") && e.contains("RMM_TLS_KEY"), "{e}");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), "a");
    let b = write_pair(dir.path(), "b");
    let e = error_of(&TlsFiles {
        cert: a.cert,
        key: b.key,
    });
    assert!(
        e.contains("cannot use the TLS certificate") && e.contains("b.key"),
        "{e}"
    );
}

#[test]
fn a_reload_takes_a_good_new_pair_and_keeps_the_old_one_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), "live");
    let tls = ServerTls::load(files.clone()).unwrap();
    let first = Arc::clone(&tls.current.borrow());

    std::fs::write(&files.cert, "broken\n").unwrap();
    assert!(tls.reload().is_err());
    assert!(Arc::ptr_eq(&first, &tls.current.borrow()));

    let renewed = write_pair(dir.path(), "renewed");
    std::fs::rename(&renewed.cert, &files.cert).unwrap();
    std::fs::rename(&renewed.key, &files.key).unwrap();
    tls.reload().unwrap();
    assert!(!Arc::ptr_eq(&first, &tls.current.borrow()));
}
