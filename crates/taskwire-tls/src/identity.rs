//! Who the peer is, from its certificate, and whether it may connect.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use rustls::CommonState;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{IssueErrorKind, LoadErrorKind, Origin, TlsError};
use crate::util::{hex, parse_certificate, sha256};

/// The scheme of identity URIs: `taskwire://TENANT/ID`.
pub const IDENTITY_URI_SCHEME: &str = "taskwire";

/// The longest tenant or id accepted in an identity URI, in characters.
pub const MAX_IDENTITY_COMPONENT_LEN: usize = 128;

fn is_identity_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')
}

/// The rule shared by tenants and ids: 1 to 128 of `A-Z a-z 0-9 . _ ~ -`, not beginning or
/// ending with `.` and without `..`, so no component reads as a path segment (`.`, `..`)
/// or as a spelling of another (`acme.`).
fn is_identity_component(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_IDENTITY_COMPONENT_LEN
        && value.chars().all(is_identity_char)
        && !value.starts_with('.')
        && !value.ends_with('.')
        && !value.contains("..")
}

/// A tenant follows the component rule in lowercase only: nothing is ever folded, so a
/// certificate for `ACME` is refused rather than being a second tenant beside `acme`.
fn is_tenant(value: &str) -> bool {
    is_identity_component(value) && !value.bytes().any(|b| b.is_ascii_uppercase())
}

pub(crate) fn validate_identity_component(
    field: &'static str,
    value: &str,
) -> Result<(), IssueErrorKind> {
    let valid = if field == "tenant" {
        is_tenant(value)
    } else {
        is_identity_component(value)
    };
    if valid {
        Ok(())
    } else {
        Err(IssueErrorKind::InvalidIdentity {
            field,
            value: value.to_owned(),
        })
    }
}

/// The identity URI `taskwire://TENANT/ID` of a peer. `tenant` and `id` must each be 1 to
/// [`MAX_IDENTITY_COMPONENT_LEN`] characters of `A-Z a-z 0-9 . _ ~ -`, neither beginning
/// nor ending with `.` nor containing `..`, and the tenant in lowercase; so the URI needs
/// no escaping, parses back unambiguously, and no two spellings name one identity.
/// Nothing is normalised: a name off the rule is refused. Comparisons are exact.
///
/// ```
/// use taskwire_tls::{identity_uri, parse_identity_uri};
///
/// let uri = identity_uri("acme", "worker-7")?;
/// assert_eq!(uri, "taskwire://acme/worker-7");
/// assert_eq!(parse_identity_uri(&uri), Some(("acme", "worker-7")));
/// assert!(identity_uri("acme", "a/b").is_err());
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub fn identity_uri(tenant: &str, id: &str) -> Result<String, TlsError> {
    validate_identity_component("tenant", tenant)?;
    validate_identity_component("id", id)?;
    Ok(format!("{IDENTITY_URI_SCHEME}://{tenant}/{id}"))
}

/// The tenant and id of an identity URI, or `None` if `uri` is not one (the scheme is
/// matched case-insensitively; tenant and id must be valid as for [`identity_uri`]).
pub fn parse_identity_uri(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    if !scheme.eq_ignore_ascii_case(IDENTITY_URI_SCHEME) {
        return None;
    }
    let (tenant, id) = rest.split_once('/')?;
    (is_tenant(tenant) && is_identity_component(id)).then_some((tenant, id))
}

/// Who a peer is, read from the end-entity certificate it presented in the handshake.
///
/// `tenant` and `id` come from the peer's `taskwire://TENANT/ID` URI SAN (see
/// [`identity_uri`]); they are `None` when it has no such SAN, or when it has several naming
/// different identities.
///
/// Build it only from a certificate the handshake verified (rustls's `peer_certificates()`
/// after a successful handshake): it describes the certificate, it does not check it.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ClientCertParams, PeerIdentity};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let client = ca.issue_client(&ClientCertParams::new("acme", "worker-7"))?;
///
/// // On a server, after the handshake: `PeerIdentity::from_connection(&connection)`.
/// let peer = PeerIdentity::from_certificate(client.certificate())?;
/// assert_eq!(peer.tenant.as_deref(), Some("acme"));
/// assert_eq!(peer.id.as_deref(), Some("worker-7"));
/// assert_eq!(peer.san_uris, ["taskwire://acme/worker-7"]);
/// assert_eq!(peer.subject, "CN=acme/worker-7");
/// assert_eq!(peer.spki_sha256, client.spki_sha256());
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The certificate's subject, for example `CN=acme/worker-7`.
    pub subject: String,
    /// Every URI SAN.
    pub san_uris: Vec<String>,
    /// Every DNS name SAN.
    pub dns_names: Vec<String>,
    /// Every IP address SAN.
    pub ip_addresses: Vec<IpAddr>,
    /// The SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
    /// The tenant of the `taskwire://TENANT/ID` URI SAN.
    pub tenant: Option<String>,
    /// The worker or instance id of the `taskwire://TENANT/ID` URI SAN.
    pub id: Option<String>,
}

impl PeerIdentity {
    /// The identity in a peer's end-entity certificate. Fails, without panicking, on a
    /// certificate that does not parse.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, TlsError> {
        let parsed = parse_certificate(cert).map_err(|reason| {
            TlsError::load(
                &Origin::Peer,
                LoadErrorKind::InvalidCertificate { index: 0, reason },
            )
        })?;
        Ok(Self::from_parsed(&parsed))
    }

    /// The identity of the peer of an established connection (a rustls `ServerConnection`
    /// or `ClientConnection`, which dereference to [`CommonState`]): `Ok(None)` if the peer
    /// presented no certificate.
    pub fn from_connection(connection: &CommonState) -> Result<Option<Self>, TlsError> {
        match connection.peer_certificates().and_then(<[_]>::first) {
            Some(cert) => Self::from_certificate(cert).map(Some),
            None => Ok(None),
        }
    }

    fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        let mut identity = PeerIdentity {
            subject: cert.subject().to_string(),
            san_uris: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            spki_sha256: sha256(cert.public_key().raw),
            tenant: None,
            id: None,
        };
        let sans = SubjectAltNames::of(cert);
        identity.san_uris = sans.uris;
        identity.dns_names = sans.dns_names;
        identity.ip_addresses = sans.ip_addresses;

        let mut identities = identity
            .san_uris
            .iter()
            .filter_map(|uri| parse_identity_uri(uri))
            .collect::<Vec<_>>();
        identities.sort_unstable();
        identities.dedup();
        if let [(tenant, id)] = identities.as_slice() {
            identity.tenant = Some((*tenant).to_owned());
            identity.id = Some((*id).to_owned());
        }
        identity
    }

    /// [`spki_sha256`](Self::spki_sha256) as lower-case hex.
    pub fn spki_sha256_hex(&self) -> String {
        hex(&self.spki_sha256)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tenant, &self.id) {
            (Some(tenant), Some(id)) => write!(f, "tenant {tenant:?} id {id:?} ")?,
            _ => f.write_str("no taskwire identity, ")?,
        }
        write!(
            f,
            "(subject {:?}, SPKI SHA-256 {})",
            self.subject,
            self.spki_sha256_hex()
        )
    }
}

/// The SANs of a certificate, in order; malformed entries are skipped.
pub(crate) struct SubjectAltNames {
    pub(crate) dns_names: Vec<String>,
    pub(crate) ip_addresses: Vec<IpAddr>,
    pub(crate) uris: Vec<String>,
}

impl SubjectAltNames {
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Self {
        let mut sans = SubjectAltNames {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
        };
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => sans.dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => sans.uris.push((*uri).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            sans.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            sans.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        sans
    }
}

/// An allowlist of peers: by tenant, by (tenant, id), or by SPKI SHA-256 fingerprint. A
/// new `Authorizer` allows no one.
///
/// Use it after the handshake has verified the peer's certificate against the CA: it
/// decides which of the verified peers may go on.
///
/// ```
/// use taskwire_tls::{Authorizer, CaParams, CertificateAuthority, ClientCertParams, PeerIdentity};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let peer = |tenant, id| -> Result<PeerIdentity, taskwire_tls::TlsError> {
///     let cert = ca.issue_client(&ClientCertParams::new(tenant, id))?;
///     PeerIdentity::from_certificate(cert.certificate())
/// };
///
/// let mut allow = Authorizer::new();
/// allow.allow_tenant("acme").allow_instance("globex", "worker-1");
/// assert!(allow.check(&peer("acme", "anything")?).is_ok());
/// assert!(allow.check(&peer("globex", "worker-1")?).is_ok());
/// let denied = allow.check(&peer("globex", "worker-2")?).unwrap_err();
/// assert_eq!(denied.id.as_deref(), Some("worker-2"));
/// assert!(denied.to_string().starts_with("peer tenant \"globex\" id \"worker-2\""));
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authorizer {
    tenants: BTreeSet<String>,
    instances: BTreeSet<(String, String)>,
    spki_sha256: BTreeSet<[u8; 32]>,
}

impl Authorizer {
    /// An allowlist that allows no one.
    pub fn new() -> Self {
        Authorizer::default()
    }

    /// Allows every peer of `tenant`.
    pub fn allow_tenant(&mut self, tenant: impl Into<String>) -> &mut Self {
        self.tenants.insert(tenant.into());
        self
    }

    /// Allows the peer with this tenant and id.
    pub fn allow_instance(
        &mut self,
        tenant: impl Into<String>,
        id: impl Into<String>,
    ) -> &mut Self {
        self.instances.insert((tenant.into(), id.into()));
        self
    }

    /// Allows the peer whose certificate's SubjectPublicKeyInfo has this SHA-256, whatever
    /// its names.
    pub fn allow_spki_sha256(&mut self, spki_sha256: [u8; 32]) -> &mut Self {
        self.spki_sha256.insert(spki_sha256);
        self
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.instances.is_empty() && self.spki_sha256.is_empty()
    }

    /// `Ok` if `peer` is allowed by its fingerprint, its tenant, or its (tenant, id);
    /// otherwise an error naming the peer.
    pub fn check(&self, peer: &PeerIdentity) -> Result<(), AuthorizationError> {
        let by_fingerprint = self.spki_sha256.contains(&peer.spki_sha256);
        let by_tenant = peer
            .tenant
            .as_ref()
            .is_some_and(|t| self.tenants.contains(t));
        let by_instance = match (&peer.tenant, &peer.id) {
            (Some(tenant), Some(id)) => self.instances.contains(&(tenant.clone(), id.clone())),
            _ => false,
        };
        if by_fingerprint || by_tenant || by_instance {
            Ok(())
        } else {
            Err(AuthorizationError {
                subject: peer.subject.clone(),
                tenant: peer.tenant.clone(),
                id: peer.id.clone(),
                spki_sha256: peer.spki_sha256,
            })
        }
    }
}

/// A verified peer that the [`Authorizer`] does not allow, named.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer {} is not on the allowlist", DeniedPeer(self))]
#[non_exhaustive]
pub struct AuthorizationError {
    /// The peer certificate's subject.
    pub subject: String,
    /// The peer's tenant, if its certificate names one.
    pub tenant: Option<String>,
    /// The peer's id, if its certificate names one.
    pub id: Option<String>,
    /// The SHA-256 of the peer certificate's SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
}

struct DeniedPeer<'a>(&'a AuthorizationError);

impl fmt::Display for DeniedPeer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        match (&e.tenant, &e.id) {
            (Some(tenant), Some(id)) => write!(f, "tenant {tenant:?} id {id:?} ")?,
            _ => f.write_str("without a taskwire identity ")?,
        }
        write!(
            f,
            "(subject {:?}, SPKI SHA-256 {})",
            e.subject,
            hex(&e.spki_sha256)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_parsing() {
        assert_eq!(
            parse_identity_uri("taskwire://acme/w-1"),
            Some(("acme", "w-1"))
        );
        assert_eq!(
            parse_identity_uri("TaskWire://acme/w-1"),
            Some(("acme", "w-1"))
        );
        for bad in [
            "taskwire://acme",
            "taskwire://acme/",
            "taskwire:///w",
            "taskwire://acme/w/x",
            "taskwire://acme/w?x",
            "taskwire://ac%2Fme/w",
            "https://acme/w",
            "taskwire:acme/w",
            "",
        ] {
            assert_eq!(parse_identity_uri(bad), None, "{bad}");
        }
        let long = "a".repeat(MAX_IDENTITY_COMPONENT_LEN + 1);
        assert_eq!(parse_identity_uri(&format!("taskwire://{long}/w")), None);
        assert!(identity_uri(&long, "w").is_err());
        assert!(identity_uri("", "w").is_err());
        assert!(identity_uri("acme", "wörker").is_err());
        for (tenant, id) in [
            ("..", "."),
            ("acme.", "w"),
            (".acme", "w"),
            ("ACME", "w"),
            ("ac..me", "w"),
            ("acme", ".."),
            ("acme", "w."),
        ] {
            assert!(identity_uri(tenant, id).is_err(), "{tenant}/{id}");
            assert_eq!(
                parse_identity_uri(&format!("taskwire://{tenant}/{id}")),
                None
            );
        }
        assert_eq!(
            identity_uri("acme.eu", "Worker.7").unwrap(),
            "taskwire://acme.eu/Worker.7"
        );
    }

    #[test]
    fn garbage_certificate_is_an_error_not_a_panic() {
        for input in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", &[0xff; 64]] {
            let err = PeerIdentity::from_certificate(&CertificateDer::from(input)).unwrap_err();
            assert!(matches!(
                err,
                TlsError::Load {
                    origin: Origin::Peer,
                    kind: LoadErrorKind::InvalidCertificate { .. }
                }
            ));
        }
    }
}
