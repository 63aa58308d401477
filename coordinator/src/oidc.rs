//! People signed in through OpenID Connect providers.
//!
//! The coordinator trusts the issuers its config lists (`[[oidc]]`). For
//! each it reads the discovery document and the signing keys (JWKS) over
//! verified https, and checks every ID token with `openidconnect`: the
//! signature against the issuer's keys, `iss`, `aud` (this coordinator's
//! client id), `exp`, and the `nonce` when the flow sent one. Nothing here
//! parses a token by hand.
//!
//! Terminals sign in with the device grant (RFC 8628), driven by the
//! coordinator so that the client secret never leaves it; browsers with
//! the authorization code flow and PKCE (`web`). A verified token's claims
//! become a [`Person`]: a name from `username_claim`, groups from
//! `groups_claim`, and the attributes `[oidc.attributes]` maps.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthenticationFlow, AuthorizationCode,
    ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdToken, IssuerUrl, Nonce, NonceVerifier, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, Scope,
    core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
        CoreDeviceAuthorizationResponse, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
        CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
        CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    },
};
use serde::{Deserialize, Serialize};
use ward_policy::{AttrType, EntityDef, EntityKey, Kind, attribute_type};

use crate::store::Person;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("oidc.issuer `{0}` is not a URL (https, or http only to this host)")]
    Issuer(String),
    #[error("oidc.ca_file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("oidc.client_secret_file {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("oidc.attributes.{attribute}: {reason}")]
    Mapping { attribute: String, reason: String },
    #[error("reading {issuer}'s discovery document and keys: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("no issuer {0:?} is configured ([[oidc]] in coordinator.toml)")]
    NotConfigured(String),
    #[error("{issuer} does not offer the device grant (no device_authorization_endpoint)")]
    NoDeviceGrant { issuer: String },
    #[error("{issuer}: {reason}")]
    Flow { issuer: String, reason: String },
    #[error("the ID token is refused: {0}")]
    Token(String),
    /// The token verified but its claims do not make a person.
    #[error("the ID token's claims: {0}")]
    Claims(String),
}

/// `[[oidc]]`: one trusted identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The issuer URL, exactly as its tokens' `iss` says.
    pub issuer: String,
    /// This coordinator's client id at the provider: every ID token's
    /// audience.
    pub client_id: String,
    /// The client secret, in a file only the coordinator reads. Absent for
    /// a public client.
    pub client_secret_file: Option<PathBuf>,
    /// The CA that signed the provider's https certificate; the system's
    /// roots when absent.
    pub ca_file: Option<PathBuf>,
    /// The claim that is the person's ward name (their login on hosts).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim listing the person's groups (Cedar `Group`s); "" for none.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Cedar attribute = claim, e.g. `department = "department"`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Scopes asked for beside `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_username_claim() -> String {
    "preferred_username".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes() -> Vec<String> {
    vec!["profile".into()]
}

impl OidcSection {
    /// Refuses a mapping to an attribute that ward's schema does not give
    /// users, naming it.
    pub fn check(&self) -> Result<(), OidcError> {
        IssuerUrl::new(self.issuer.clone()).map_err(|_| OidcError::Issuer(self.issuer.clone()))?;
        for (attribute, claim) in &self.attributes {
            if attribute_type(Kind::User, attribute).is_none() {
                return Err(OidcError::Mapping {
                    attribute: attribute.clone(),
                    reason: "users have no such attribute in ward's schema".into(),
                });
            }
            if claim.is_empty() {
                return Err(OidcError::Mapping {
                    attribute: attribute.clone(),
                    reason: "names no claim".into(),
                });
            }
        }
        Ok(())
    }

    /// The person a verified token names: its claims mapped as configured.
    pub fn person(&self, signed: &SignedIn) -> Result<Person, OidcError> {
        let claim = |name: &str| signed.claims.get(name).filter(|v| !v.is_null());
        let raw = claim(&self.username_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                OidcError::Claims(format!(
                    "no `{}` (username_claim) string in the token",
                    self.username_claim
                ))
            })?;
        // An address the provider has not verified names nobody.
        if self.username_claim == "email"
            && claim("email_verified").and_then(|v| v.as_bool()) != Some(true)
        {
            return Err(OidcError::Claims(
                "`email` is the username_claim but the provider has not verified it \
                 (email_verified is not true)"
                    .into(),
            ));
        }
        let name = ward_proto::identity::canonical(&[raw.to_owned()])
            .map_err(|e| OidcError::Claims(format!("`{}`: {e}", self.username_claim)))?;
        // An agent's identity is NAME.agent; no person may take one.
        if name.ends_with(crate::service::AGENT_SUFFIX) {
            return Err(OidcError::Claims(format!(
                "`{}` is {name:?}, an agent's name",
                self.username_claim
            )));
        }
        let mut parents = Vec::new();
        if !self.groups_claim.is_empty() {
            let groups: Vec<&serde_json::Value> = match claim(&self.groups_claim) {
                None => Vec::new(),
                Some(serde_json::Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
            };
            for g in groups {
                let g = g.as_str().filter(|g| !g.is_empty()).ok_or_else(|| {
                    OidcError::Claims(format!(
                        "`{}` (groups_claim) must be a list of names, got {g}",
                        self.groups_claim
                    ))
                })?;
                parents.push(EntityKey::new(Kind::Group, g));
            }
        }
        let mut attrs = serde_json::Map::new();
        for (attribute, from) in &self.attributes {
            let Some(v) = claim(from) else { continue };
            let fits = match attribute_type(Kind::User, attribute) {
                Some(AttrType::Long) => v.is_i64(),
                Some(AttrType::String) => v.is_string(),
                _ => false,
            };
            if !fits {
                return Err(OidcError::Claims(format!(
                    "`{from}` (mapped to {attribute}) has the wrong type: {v}"
                )));
            }
            attrs.insert(attribute.clone(), v.clone());
        }
        Ok(Person {
            name: name.clone(),
            issuer: signed.issuer.clone(),
            subject: signed.subject.clone(),
            def: EntityDef {
                kind: Kind::User,
                id: name,
                parents,
                attrs,
            },
        })
    }
}

/// Every claim of a token, standard or not, as the issuer sent it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl AdditionalClaims for Extra {}

type Token =
    IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The discovery document, with the device endpoint when it has one.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The client `CoreClient::from_provider_metadata` makes: the
/// authorization endpoint set, the token and user-info endpoints as the
/// discovery document says.
type BaseClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Who a verified ID token names, with all its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedIn {
    pub issuer: String,
    pub subject: String,
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// One trusted issuer, its keys read at discovery.
pub struct Issuer {
    pub section: OidcSection,
    secret: Option<ClientSecret>,
    metadata: Metadata,
    http: reqwest::Client,
}

/// A device sign-in under way: what to show the person, and what to poll.
pub struct DeviceLogin {
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    details: CoreDeviceAuthorizationResponse,
}

/// A browser sign-in under way: where to send the browser, and what the
/// callback must match (kept server-side, never in the URL).
pub struct BrowserLogin {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
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
        // The discovery document names where the keys are; following
        // redirects would let a provider's page send the coordinator
        // anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| OidcError::Discovery {
            issuer: String::new(),
            reason: e.to_string(),
        })
}

impl Issuer {
    /// Reads the section's secret, then the issuer's discovery document
    /// and keys over https.
    pub async fn discover(section: &OidcSection) -> Result<Issuer, OidcError> {
        section.check()?;
        let issuer = &section.issuer;
        let url =
            IssuerUrl::new(issuer.to_owned()).map_err(|_| OidcError::Issuer(issuer.into()))?;
        let loopback = url
            .url()
            .host_str()
            .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]");
        if url.url().scheme() != "https" && !loopback {
            return Err(OidcError::Issuer(issuer.into()));
        }
        let secret = match &section.client_secret_file {
            None => None,
            Some(path) => Some(ClientSecret::new(read_secret(path)?)),
        };
        let http = http_client(section.ca_file.as_deref())?;
        let metadata =
            Metadata::discover_async(url, &http)
                .await
                .map_err(|e| OidcError::Discovery {
                    issuer: issuer.into(),
                    reason: ward_proto::error_chain(&e),
                })?;
        Ok(Issuer {
            section: section.clone(),
            secret,
            metadata,
            http,
        })
    }

    /// This coordinator's client at the issuer, as discovered.
    fn client(&self) -> BaseClient {
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(self.section.client_id.clone()),
            self.secret.clone(),
        )
    }

    /// Where the browser flow returns, checked.
    fn redirect(&self, redirect: &str) -> Result<RedirectUrl, OidcError> {
        RedirectUrl::new(redirect.to_owned()).map_err(|e| OidcError::Flow {
            issuer: self.section.issuer.clone(),
            reason: format!("redirect URL {redirect}: {e}"),
        })
    }

    fn flow(&self, e: impl std::error::Error) -> OidcError {
        OidcError::Flow {
            issuer: self.section.issuer.clone(),
            reason: ward_proto::error_chain(&e),
        }
    }

    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.section.scopes.iter().map(|s| Scope::new(s.clone()))
    }

    /// Starts the device grant: the person opens the URI and enters the code.
    pub async fn start_device(&self) -> Result<DeviceLogin, OidcError> {
        let endpoint = self
            .metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| OidcError::NoDeviceGrant {
                issuer: self.section.issuer.clone(),
            })?;
        let client = self
            .client()
            .set_device_authorization_url(endpoint)
            .set_auth_type(AuthType::RequestBody);
        let details: CoreDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_scopes(self.scopes())
            .request_async(&self.http)
            .await
            .map_err(|e| self.flow(e))?;
        Ok(DeviceLogin {
            user_code: details.user_code().secret().clone(),
            verification_uri: details.verification_uri().to_string(),
            verification_uri_complete: details
                .verification_uri_complete()
                .map(|u| u.secret().clone()),
            expires_in: details.expires_in(),
            details,
        })
    }

    /// Polls until the person has signed in (or the code expires), then
    /// verifies the ID token.
    pub async fn finish_device(&self, login: &DeviceLogin) -> Result<SignedIn, OidcError> {
        let client = self.client().set_auth_type(AuthType::RequestBody);
        let token = client
            .exchange_device_access_token(&login.details)
            .map_err(|e| self.flow(e))?
            .request_async(&self.http, tokio::time::sleep, Some(login.expires_in))
            .await
            .map_err(|e| self.flow(e))?;
        let id_token = token
            .extra_fields()
            .id_token()
            .ok_or_else(|| OidcError::Token("the provider sent no ID token".into()))?;
        self.verify(&id_token.to_string(), None)
    }

    /// Starts a browser sign-in (authorization code with PKCE and a nonce)
    /// that returns to `redirect`.
    pub fn start_browser(&self, redirect: &str) -> Result<BrowserLogin, OidcError> {
        let client = self.client().set_redirect_uri(self.redirect(redirect)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes())
            .set_pkce_challenge(challenge)
            .url();
        Ok(BrowserLogin {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges a browser's code (with the PKCE verifier) and verifies the
    /// ID token against the sign-in's nonce.
    pub async fn finish_browser(
        &self,
        redirect: &str,
        code: &str,
        login: &BrowserLogin,
    ) -> Result<SignedIn, OidcError> {
        let client = self.client().set_redirect_uri(self.redirect(redirect)?);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| self.flow(e))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| self.flow(e))?;
        let id_token = token
            .extra_fields()
            .id_token()
            .ok_or_else(|| OidcError::Token("the provider sent no ID token".into()))?;
        self.verify(&id_token.to_string(), Some(&login.nonce))
    }

    /// Verifies `id_token`: signature, `iss`, `aud`, `exp`, and `nonce`
    /// when one was sent (the device grant sends none).
    pub fn verify(&self, id_token: &str, nonce: Option<&str>) -> Result<SignedIn, OidcError> {
        let token: Token = id_token
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Token(e.to_string()))?;
        let verifier = openidconnect::IdTokenVerifier::<CoreJsonWebKey>::new_public_client(
            ClientId::new(self.section.client_id.clone()),
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
        // Standard claims (preferred_username, email) and others alike.
        let all = match serde_json::to_value(claims) {
            Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Ok(SignedIn {
            issuer: self.section.issuer.clone(),
            subject: claims.subject().to_string(),
            claims: all,
        })
    }
}

/// The configured issuers, each discovered on first use (and again after
/// a failed discovery): an unreachable provider at start does not stop
/// the coordinator, only sign-ins through it. Discovery (and with it the
/// signing keys) is read again once it is an hour old, so a provider's key
/// rotation is followed; if that read fails, the keys in hand go on.
pub struct Issuers {
    list: Vec<(OidcSection, tokio::sync::Mutex<Option<Discovered>>)>,
}

/// An issuer as discovered, and when.
type Discovered = (Arc<Issuer>, Instant);

/// How long a discovery document and its keys are used before reading
/// them again.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

impl Issuers {
    pub fn new(sections: &[OidcSection]) -> Issuers {
        Issuers {
            list: sections
                .iter()
                .map(|s| (s.clone(), tokio::sync::Mutex::new(None)))
                .collect(),
        }
    }

    /// The issuer URLs configured.
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|(s, _)| s.issuer.clone()).collect()
    }

    /// `issuer`, or the first configured for "".
    pub async fn get(&self, issuer: &str) -> Result<Arc<Issuer>, OidcError> {
        let found = if issuer.is_empty() {
            self.list.first()
        } else {
            self.list.iter().find(|(s, _)| s.issuer == issuer)
        };
        let Some((section, cell)) = found else {
            return Err(OidcError::NotConfigured(issuer.to_owned()));
        };
        let mut held = cell.lock().await;
        if let Some((i, at)) = held.as_ref()
            && at.elapsed() < KEYS_MAX_AGE
        {
            return Ok(i.clone());
        }
        match (Issuer::discover(section).await, held.as_ref()) {
            (Ok(fresh), _) => {
                let fresh = Arc::new(fresh);
                *held = Some((fresh.clone(), Instant::now()));
                Ok(fresh)
            }
            (Err(e), Some((old, _))) => {
                tracing::warn!(issuer = %section.issuer, error = %e, "re-reading the provider's keys failed; the keys in hand go on, and the read is tried again in a minute");
                let old = old.clone();
                // Not again on every sign-in: a minute from now.
                let retry = Instant::now()
                    .checked_sub(KEYS_MAX_AGE - Duration::from_secs(60))
                    .unwrap_or_else(Instant::now);
                *held = Some((old.clone(), retry));
                Ok(old)
            }
            (Err(e), None) => Err(e),
        }
    }
}

/// A secret file: one line, readable by its owner only.
fn read_secret(path: &Path) -> Result<String, OidcError> {
    use std::os::unix::fs::MetadataExt;
    let err = |reason: String| OidcError::Secret {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(err(format!(
            "is readable or writable by others (mode {:04o}); run `chmod 600` on it",
            meta.mode() & 0o7777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(secret.to_owned())
}

/// A closure as the nonce check.
struct NonceCheck<F>(F);

impl<F: FnOnce(Option<&Nonce>) -> Result<(), String>> NonceVerifier for NonceCheck<F> {
    fn verify(self, nonce: Option<&Nonce>) -> Result<(), String> {
        (self.0)(nonce)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn section(extra: &str) -> OidcSection {
        toml::from_str(&format!(
            "issuer = \"https://idp.example\"\nclient_id = \"ward\"\n{extra}"
        ))
        .unwrap()
    }

    fn signed(claims: serde_json::Value) -> SignedIn {
        SignedIn {
            issuer: "https://idp.example".into(),
            subject: "u-1".into(),
            claims: claims
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn claims_become_a_person_as_the_mapping_says() {
        let s = section("[attributes]\ndepartment = \"dept\"\nclearance = \"level\"\n");
        let p = s
            .person(&signed(json!({
                "preferred_username": "Alice", "groups": ["staff", "oncall"],
                "dept": "eng", "level": 3, "email": "a@example",
            })))
            .unwrap();
        assert_eq!(p.name, "alice", "names are lowercase, as certificates' are");
        assert_eq!(
            (p.issuer.as_str(), p.subject.as_str()),
            ("https://idp.example", "u-1")
        );
        let groups: Vec<&str> = p.def.parents.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(groups, ["staff", "oncall"]);
        assert_eq!(p.def.attrs["department"], "eng");
        assert_eq!(p.def.attrs["clearance"], 3);
        assert!(!p.def.attrs.contains_key("email"), "only mapped claims");
        // One group as a plain string is one group.
        let p = s
            .person(&signed(
                json!({"preferred_username": "bob", "groups": "leads"}),
            ))
            .unwrap();
        assert_eq!(p.def.parents.len(), 1);
    }

    #[test]
    fn claims_that_do_not_make_a_person_are_refused_by_name() {
        let s = section("[attributes]\nclearance = \"level\"\n");
        let refused = |claims| s.person(&signed(claims)).unwrap_err().to_string();
        assert!(refused(json!({"sub": "u-1"})).contains("preferred_username"));
        assert!(refused(json!({"preferred_username": "db1.agent"})).contains("agent's name"));
        assert!(refused(json!({"preferred_username": "al ice"})).contains("preferred_username"));
        let e = refused(json!({"preferred_username": "a", "level": "high"}));
        assert!(e.contains("`level`") && e.contains("clearance"), "{e}");
        assert!(refused(json!({"preferred_username": "a", "groups": [1]})).contains("groups"));
        let by_email = section("username_claim = \"email\"\n");
        let e = by_email
            .person(&signed(
                json!({"email": "a@example", "email_verified": false}),
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("email_verified"), "{e}");
        let ok = by_email
            .person(&signed(
                json!({"email": "A@example", "email_verified": true}),
            ))
            .unwrap();
        assert_eq!(ok.name, "a@example");
    }

    #[test]
    fn a_mapping_to_an_attribute_users_lack_is_refused() {
        let e = section("[attributes]\ncgroup = \"x\"\n")
            .check()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "oidc.attributes.cgroup: users have no such attribute in ward's schema"
        );
        assert!(section("").check().is_ok());
    }
}
