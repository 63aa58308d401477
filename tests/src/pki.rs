//! A throwaway certificate authority for the mutual-TLS tests.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

pub type Ca = CertifiedIssuer<'static, KeyPair>;

pub fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// (certificate PEM, key PEM) for `name`, signed by `issuer`.
pub fn leaf(issuer: &Ca, name: &str, client: bool) -> (String, String) {
    leaf_naming(issuer, name, &[name], client)
}

/// A leaf whose common name is `cn` and whose DNS names are `sans`.
pub fn leaf_naming(issuer: &Ca, cn: &str, sans: &[&str], client: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    (
        p.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// Writes `name.pem` and `name.key` into `dir`; returns their paths.
pub fn write_leaf(
    issuer: &Ca,
    dir: &std::path::Path,
    name: &str,
    client: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    write_leaf_naming(issuer, dir, name, name, &[name], client)
}

/// Writes `file.pem` and `file.key` for a leaf naming `cn` and `sans`.
pub fn write_leaf_naming(
    issuer: &Ca,
    dir: &std::path::Path,
    file: &str,
    cn: &str,
    sans: &[&str],
    client: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = leaf_naming(issuer, cn, sans, client);
    let name = file;
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}
