//! People signed in through an OpenID Connect provider (issue 17, WIP).
//!
//! The coordinator trusts configured issuers. For each it reads the
//! discovery document and the signing keys (JWKS) over verified https, and
//! checks every ID token with `openidconnect`: the signature against the
//! issuer's keys, `iss`, `aud` (this coordinator's client id), `exp`, and
//! the `nonce` when the flow used one. Nothing here parses a token by hand.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use openidconnect::{
    AdditionalClaims, ClientId, IdToken, IssuerUrl, Nonce, NonceVerifier,
    core::{
        CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm, CoreProviderMetadata,
    },
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("oidc.issuer `{0}` is not a URL (https, or http only to this host)")]
    Issuer(String),
    #[error("oidc.ca_file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("reading {issuer}'s discovery document and keys: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("the ID token is refused: {0}")]
    Token(String),
}

/// The claims beyond the standard ones (`groups`, `department`, ...), as
/// the issuer sent them; a mapping in the config picks what policy sees.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl AdditionalClaims for Extra {}

type Token =
    IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Who a verified ID token names.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedIn {
    pub issuer: String,
    pub subject: String,
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// One trusted issuer, its keys read at discovery.
pub struct Issuer {
    issuer: String,
    client_id: ClientId,
    metadata: CoreProviderMetadata,
}

/// An https client that trusts `ca_file` only, or else the system's roots.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, OidcError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca = |reason: String| OidcError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| ca(e.to_string()))?)
                    .map_err(|e| ca(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| OidcError::Discovery {
        issuer: String::new(),
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // The discovery document names where the keys are; no redirects.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| OidcError::Discovery {
            issuer: String::new(),
            reason: e.to_string(),
        })
}

impl Issuer {
    /// Reads `issuer`'s discovery document and keys with `http`.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        http: &reqwest::Client,
    ) -> Result<Issuer, OidcError> {
        let url =
            IssuerUrl::new(issuer.to_owned()).map_err(|_| OidcError::Issuer(issuer.into()))?;
        let loopback = url
            .url()
            .host_str()
            .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]");
        if url.url().scheme() != "https" && !loopback {
            return Err(OidcError::Issuer(issuer.into()));
        }
        let metadata = CoreProviderMetadata::discover_async(url, http)
            .await
            .map_err(|e| OidcError::Discovery {
                issuer: issuer.into(),
                reason: ward_proto::error_chain(&e),
            })?;
        Ok(Issuer {
            issuer: issuer.to_owned(),
            client_id: ClientId::new(client_id.to_owned()),
            metadata,
        })
    }

    /// Verifies `id_token`: signature, `iss`, `aud`, `exp`, and `nonce`
    /// when one was sent (the device grant sends none).
    pub fn verify(&self, id_token: &str, nonce: Option<&str>) -> Result<SignedIn, OidcError> {
        let token: Token = id_token
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Token(e.to_string()))?;
        let verifier = openidconnect::IdTokenVerifier::<CoreJsonWebKey>::new_public_client(
            self.client_id.clone(),
            self.metadata.issuer().clone(),
            self.metadata.jwks().clone(),
        );
        let expected = nonce.map(|n| Nonce::new(n.to_owned()));
        let check = move |got: Option<&Nonce>| match (&expected, got) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if want.secret() == got.secret() => Ok(()),
            (Some(_), _) => Err("the nonce is not the one sent".to_owned()),
        };
        let claims = token
            .claims(&verifier, NonceCheck(check))
            .map_err(|e| OidcError::Token(e.to_string()))?;
        Ok(SignedIn {
            issuer: self.issuer.clone(),
            subject: claims.subject().to_string(),
            claims: claims.additional_claims().claims.clone(),
        })
    }
}

/// A closure as the nonce check.
struct NonceCheck<F>(F);

impl<F: FnOnce(Option<&Nonce>) -> Result<(), String>> NonceVerifier for NonceCheck<F> {
    fn verify(self, nonce: Option<&Nonce>) -> Result<(), String> {
        (self.0)(nonce)
    }
}
