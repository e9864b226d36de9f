//! A cluster's certificates, as k3s makes them: a server CA (its hash is
//! the `K10<hash>` of secure tokens), a client CA, an admin client
//! certificate for the kubeconfig, and serving certificates whose SANs
//! include `127.0.0.1` and `localhost` (so the API verifies through an SSH
//! tunnel) plus each server's names and addresses.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// A cluster's PKI.
pub struct Pki {
    /// The server CA, PEM (what `/cacerts` serves and kubeconfigs carry).
    pub ca_pem: String,
    /// SHA-256 of [`Self::ca_pem`], hex: the hash in secure tokens.
    pub ca_hash: String,
    /// The client CA, DER: the API accepts client certificates it signed.
    pub client_ca_der: Vec<u8>,
    /// The admin client certificate and key (PEM).
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    server_ca: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

fn ca(cn: &str) -> Result<(CertificateParams, KeyPair, String, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((params, key, cert.pem(), cert.der().to_vec()))
}

impl Pki {
    /// New CAs and an admin certificate for a cluster.
    pub fn new(cluster: &str) -> Result<Pki, String> {
        let err = |e: rcgen::Error| format!("cannot create the certificates of {cluster}: {e}");
        let (server_params, server_key, ca_pem, _) =
            ca(&format!("k3s-server-ca@{cluster}")).map_err(err)?;
        let (client_params, client_key, _, client_ca_der) =
            ca(&format!("k3s-client-ca@{cluster}")).map_err(err)?;
        let client_ca = Issuer::new(client_params, client_key);
        let admin_key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name
            .push(DnType::CommonName, "system:admin");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin = p.signed_by(&admin_key, &client_ca).map_err(err)?;
        let ca_hash = Sha256::digest(ca_pem.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Pki {
            ca_hash,
            ca_pem,
            client_ca_der,
            admin_cert_pem: admin.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            server_ca: Issuer::new(server_params, server_key),
        })
    }

    /// A serving certificate (PEM cert, PEM key) for these names and
    /// addresses.
    pub fn serving(&self, sans: &[String]) -> Result<(String, String), String> {
        let err = |e: rcgen::Error| format!("cannot create a serving certificate: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(sans.to_vec()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, "k3s");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.server_ca).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The admin kubeconfig as k3s writes it: every name `default`.
    pub fn kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_pem),
            b64(&self.admin_cert_pem),
            b64(&self.admin_key_pem),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_what_k3s_writes() {
        let p = Pki::new("c1").unwrap();
        assert_eq!(p.ca_hash.len(), 64);
        let k = p.kubeconfig("https://127.0.0.1:6443");
        let kc = kube::config::Kubeconfig::from_yaml(&k).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("default"));
        assert_eq!(kc.clusters[0].name, "default");
        assert!(k.contains("server: https://127.0.0.1:6443"));
        let (cert, key) = p
            .serving(&["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert_ne!(Pki::new("c2").unwrap().ca_hash, p.ca_hash);
    }
}
