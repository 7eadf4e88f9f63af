//! Issuing certificates with rcgen: a CA, server leaves and client leaves.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use time::OffsetDateTime;

use crate::credentials::{CaBundle, Credentials};
use crate::error::{IssueErrorKind, LoadErrorKind, Origin, TlsError};
use crate::identity::identity_uri;
use crate::pem::{certificates_from_pem, private_key_from_pem, read_file, write_cert_and_key};
use crate::provider::default_provider;
use crate::util::{parse_certificate_from, pem_encode, sha256, unix_from_system_time};

/// Default lifetime of a CA certificate: 10 years (3650 days).
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
/// Default lifetime of a leaf (server or client) certificate: 90 days.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// How far [`Validity::from_now`] backdates `not_before`, so that a peer whose clock is a
/// little behind accepts a certificate issued a moment ago: 5 minutes.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// The key type of a new certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256. The default: supported by every TLS stack.
    #[default]
    EcdsaP256,
    /// Ed25519: small and fast, but not accepted by every TLS peer.
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A certificate's validity period. X.509 keeps whole seconds; sub-second parts are
/// dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first instant the certificate is valid.
    pub not_before: SystemTime,
    /// The last instant the certificate is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// An explicit period.
    pub const fn new(not_before: SystemTime, not_after: SystemTime) -> Self {
        Validity {
            not_before,
            not_after,
        }
    }

    /// From [`CLOCK_SKEW_ALLOWANCE`] ago until `lifetime` from now.
    pub fn from_now(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            // An absurd lifetime saturates to `now`, which issuing then refuses as empty.
            not_after: now.checked_add(lifetime).unwrap_or(now),
        }
    }

    fn to_rcgen(self) -> Result<(OffsetDateTime, OffsetDateTime), IssueErrorKind> {
        let convert = |t: SystemTime| {
            OffsetDateTime::from_unix_timestamp(unix_from_system_time(t))
                .ok()
                .filter(|t| (1950..=9999).contains(&t.year()))
                .ok_or(IssueErrorKind::InvalidValidity {
                    reason: "dates must lie between the years 1950 and 9999",
                })
        };
        let (not_before, not_after) = (convert(self.not_before)?, convert(self.not_after)?);
        if not_after <= not_before {
            return Err(IssueErrorKind::InvalidValidity {
                reason: "not_after must be later than not_before",
            });
        }
        Ok((not_before, not_after))
    }
}

/// What a new CA looks like. Defaults: common name as given, no organization, valid for
/// [`DEFAULT_CA_VALIDITY`] from [`CLOCK_SKEW_ALLOWANCE`] ago, ECDSA P-256, path length 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParams {
    common_name: String,
    organization: Option<String>,
    validity: Option<Validity>,
    key_algorithm: KeyAlgorithm,
    path_len: Option<u8>,
}

impl CaParams {
    /// A CA named `common_name`, with the defaults above.
    pub fn new(common_name: impl Into<String>) -> Self {
        CaParams {
            common_name: common_name.into(),
            organization: None,
            validity: None,
            key_algorithm: KeyAlgorithm::default(),
            path_len: Some(0),
        }
    }

    /// The subject's organization (O). Default: none.
    #[must_use]
    pub fn organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = Some(organization.into());
        self
    }

    /// The validity period. Default: [`Validity::from_now`]`(`[`DEFAULT_CA_VALIDITY`]`)`,
    /// taken when the CA is generated.
    #[must_use]
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = Some(validity);
        self
    }

    /// The key type. Default: [`KeyAlgorithm::EcdsaP256`].
    #[must_use]
    pub fn key_algorithm(mut self, key_algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = key_algorithm;
        self
    }

    /// The basic constraints path length: how many intermediate CAs may sit below this one;
    /// `None` for no limit. Default: `Some(0)`, the CA signs leaves only.
    #[must_use]
    pub fn path_len(mut self, path_len: Option<u8>) -> Self {
        self.path_len = path_len;
        self
    }
}

impl Default for CaParams {
    /// [`CaParams::new`]`("taskwire CA")`.
    fn default() -> Self {
        CaParams::new("taskwire CA")
    }
}

/// What a new server certificate looks like. Defaults: common name = the first DNS name
/// (or IP address), valid for [`DEFAULT_LEAF_VALIDITY`] from [`CLOCK_SKEW_ALLOWANCE`] ago,
/// ECDSA P-256. Always: extended key usage serverAuth only, key usage digitalSignature,
/// basic constraints CA:FALSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertParams {
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    common_name: Option<String>,
    validity: Option<Validity>,
    key_algorithm: KeyAlgorithm,
}

impl ServerCertParams {
    /// A certificate for `names`: each one that parses as an IP address becomes an IP
    /// address SAN, every other one a DNS name SAN (checked when issuing).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut params = ServerCertParams {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            common_name: None,
            validity: None,
            key_algorithm: KeyAlgorithm::default(),
        };
        for name in names {
            let name = name.into();
            match name.parse::<IpAddr>() {
                Ok(ip) => params.ip_addresses.push(ip),
                Err(_) => params.dns_names.push(name),
            }
        }
        params
    }

    /// The DNS name SANs, replacing those given to [`new`](Self::new). A leading `*.`
    /// makes a wildcard name.
    #[must_use]
    pub fn dns_names<I, S>(mut self, dns_names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dns_names = dns_names.into_iter().map(Into::into).collect();
        self
    }

    /// The IP address SANs, replacing those given to [`new`](Self::new).
    #[must_use]
    pub fn ip_addresses(mut self, ip_addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.ip_addresses = ip_addresses.into_iter().collect();
        self
    }

    /// The subject common name. Informational only: TLS clients match the SANs. Default:
    /// the first DNS name, or the first IP address.
    #[must_use]
    pub fn common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// The validity period. Default: [`Validity::from_now`]`(`[`DEFAULT_LEAF_VALIDITY`]`)`,
    /// taken when the certificate is issued.
    #[must_use]
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = Some(validity);
        self
    }

    /// The key type. Default: [`KeyAlgorithm::EcdsaP256`].
    #[must_use]
    pub fn key_algorithm(mut self, key_algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = key_algorithm;
        self
    }
}

/// What a new client certificate looks like: the identity of one peer, a tenant and a
/// worker or instance id, carried as the URI SAN `taskwire://TENANT/ID`. Defaults: common
/// name `TENANT/ID`, valid for [`DEFAULT_LEAF_VALIDITY`] from [`CLOCK_SKEW_ALLOWANCE`] ago,
/// ECDSA P-256. Always: extended key usage clientAuth only, key usage digitalSignature,
/// basic constraints CA:FALSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertParams {
    tenant: String,
    id: String,
    common_name: Option<String>,
    validity: Option<Validity>,
    key_algorithm: KeyAlgorithm,
}

impl ClientCertParams {
    /// A certificate for instance `id` of `tenant`. Both must be 1 to
    /// [`MAX_IDENTITY_COMPONENT_LEN`](crate::MAX_IDENTITY_COMPONENT_LEN) characters of
    /// `A-Z a-z 0-9 . _ ~ -` (checked when issuing).
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        ClientCertParams {
            tenant: tenant.into(),
            id: id.into(),
            common_name: None,
            validity: None,
            key_algorithm: KeyAlgorithm::default(),
        }
    }

    /// The subject common name. Default: `TENANT/ID`.
    #[must_use]
    pub fn common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// The validity period. Default: [`Validity::from_now`]`(`[`DEFAULT_LEAF_VALIDITY`]`)`,
    /// taken when the certificate is issued.
    #[must_use]
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = Some(validity);
        self
    }

    /// The key type. Default: [`KeyAlgorithm::EcdsaP256`].
    #[must_use]
    pub fn key_algorithm(mut self, key_algorithm: KeyAlgorithm) -> Self {
        self.key_algorithm = key_algorithm;
        self
    }
}

/// A certificate authority: a CA certificate and its private key, able to issue server and
/// client certificates.
///
/// It can only be made by [`generate`](Self::generate), which makes a CA certificate
/// (basic constraints CA:TRUE, key usage keyCertSign and cRLSign), or by loading one whose
/// basic constraints say CA ([`from_pem`](Self::from_pem),
/// [`from_pem_files`](Self::from_pem_files)): this crate never signs a leaf with a
/// certificate that is not a CA.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ClientCertParams, ServerCertParams, inspect};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let server = ca.issue_server(&ServerCertParams::new(["db.internal", "10.0.0.7"]))?;
/// let client = ca.issue_client(&ClientCertParams::new("acme", "worker-7"))?;
///
/// let info = inspect(server.certificate())?;
/// assert_eq!(info.dns_names, ["db.internal"]);
/// assert_eq!(info.ip_addresses, ["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]);
/// assert_eq!(info.extended_key_usages, ["serverAuth"]);
/// assert!(inspect(ca.certificate())?.is_ca);
/// assert_eq!(inspect(client.certificate())?.uris, ["taskwire://acme/worker-7"]);
///
/// // Round trip through PEM; a certificate that is not a CA is refused as an issuer.
/// let reloaded = CertificateAuthority::from_pem(ca.cert_pem().as_bytes(), ca.key_pem().as_bytes())?;
/// assert_eq!(reloaded.certificate(), ca.certificate());
/// let not_a_ca = CertificateAuthority::from_pem(server.cert_pem().as_bytes(), server.key_pem().as_bytes());
/// assert!(not_a_ca.unwrap_err().to_string().contains("cannot issue certificates"));
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub struct CertificateAuthority {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
}

impl CertificateAuthority {
    /// A new self-signed CA.
    ///
    /// ```
    /// use taskwire_tls::{CaParams, CertificateAuthority, inspect};
    ///
    /// let ca = CertificateAuthority::generate(&CaParams::new("acme dev CA").organization("Acme"))?;
    /// let info = inspect(ca.certificate())?;
    /// assert!(info.is_ca);
    /// assert_eq!(info.path_len, Some(0), "the CA signs leaves only");
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn generate(params: &CaParams) -> Result<Self, TlsError> {
        let validity = params
            .validity
            .unwrap_or_else(|| Validity::from_now(DEFAULT_CA_VALIDITY));
        let (not_before, not_after) = validity.to_rcgen()?;
        let key =
            KeyPair::generate_for(params.key_algorithm.rcgen()).map_err(IssueErrorKind::Rcgen)?;

        let mut cert_params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, params.common_name.as_str());
        if let Some(organization) = &params.organization {
            name.push(DnType::OrganizationName, organization.as_str());
        }
        cert_params.distinguished_name = name;
        cert_params.is_ca = IsCa::Ca(match params.path_len {
            Some(len) => BasicConstraints::Constrained(len),
            None => BasicConstraints::Unconstrained,
        });
        cert_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cert_params.not_before = not_before;
        cert_params.not_after = not_after;
        cert_params.serial_number = Some(random_serial()?);

        let cert = cert_params
            .self_signed(&key)
            .map_err(IssueErrorKind::Rcgen)?;
        let cert = cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(pkcs8_for_export(&key));
        let subject = subject_of(&cert, &Origin::Memory("generated CA certificate"))?;
        Ok(CertificateAuthority {
            cert,
            key: key_der,
            issuer: Issuer::new(cert_params, key),
            subject,
        })
    }

    /// Loads a CA from PEM text: the first `CERTIFICATE` of `cert_pem` and the private key
    /// of `key_pem`.
    ///
    /// Refused with [`LoadErrorKind::NotCa`] unless the certificate's basic constraints say
    /// CA and its key usage (when present) allows keyCertSign; refused with
    /// [`TlsError::KeyMismatch`] unless the key belongs to the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let cert_origin = Origin::Memory("CA certificate PEM");
        let key_origin = Origin::Memory("CA private key PEM");
        let certs = certificates_from_pem(cert_pem, &cert_origin)?;
        let key = private_key_from_pem(key_pem, &key_origin)?;
        Self::from_parts(certs, key, &cert_origin, &key_origin)
    }

    /// [`from_pem`](Self::from_pem) for files; errors name the file at fault.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert_origin, cert_pem) = read_file(cert_path.as_ref())?;
        let (key_origin, key_pem) = read_file(key_path.as_ref())?;
        let certs = certificates_from_pem(&cert_pem, &cert_origin)?;
        let key = private_key_from_pem(&key_pem, &key_origin)?;
        Self::from_parts(certs, key, &cert_origin, &key_origin)
    }

    fn from_parts(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_origin: &Origin,
        key_origin: &Origin,
    ) -> Result<Self, TlsError> {
        let Some(cert) = certs.into_iter().next() else {
            return Err(TlsError::load(cert_origin, LoadErrorKind::NoCertificates));
        };
        let parsed = parse_certificate_from(&cert, cert_origin, 0)?;
        let subject = parsed.subject().to_string();
        let not_ca = |reason| {
            TlsError::load(
                cert_origin,
                LoadErrorKind::NotCa {
                    subject: subject.clone(),
                    reason,
                },
            )
        };
        match parsed.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(Some(_)) => return Err(not_ca("its basic constraints say CA:FALSE")),
            Ok(None) => return Err(not_ca("it has no basic constraints extension")),
            Err(_) => {
                return Err(not_ca(
                    "its basic constraints extension is invalid or repeated",
                ));
            }
        }
        match parsed.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(not_ca("its key usage does not include keyCertSign"));
            }
            Ok(_) => {}
            Err(_) => return Err(not_ca("its key usage extension is invalid or repeated")),
        }
        let key_pair = KeyPair::try_from(&key).map_err(|e| {
            TlsError::load(
                key_origin,
                LoadErrorKind::InvalidPrivateKey {
                    reason: e.to_string(),
                },
            )
        })?;
        if rcgen::PublicKeyData::subject_public_key_info(&key_pair) != parsed.public_key().raw {
            return Err(TlsError::KeyMismatch {
                cert: cert_origin.clone(),
                key: key_origin.clone(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key_pair).map_err(|e| {
            TlsError::load(
                cert_origin,
                LoadErrorKind::InvalidCertificate {
                    index: 0,
                    reason: e.to_string(),
                },
            )
        })?;
        Ok(CertificateAuthority {
            cert,
            key,
            issuer,
            subject,
        })
    }

    /// Issues a server certificate.
    ///
    /// ```
    /// use taskwire_tls::{CaParams, CertificateAuthority, ServerCertParams, inspect};
    ///
    /// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
    /// let server = ca.issue_server(&ServerCertParams::new(["localhost", "127.0.0.1"]))?;
    /// let info = inspect(server.certificate())?;
    /// assert_eq!(info.dns_names, ["localhost"]);
    /// assert_eq!(info.ip_addresses, ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    /// assert_eq!(info.extended_key_usages, ["serverAuth"]);
    ///
    /// // A server certificate needs at least one name.
    /// assert!(ca.issue_server(&ServerCertParams::new(Vec::<String>::new())).is_err());
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn issue_server(&self, params: &ServerCertParams) -> Result<IssuedCert, TlsError> {
        if params.dns_names.is_empty() && params.ip_addresses.is_empty() {
            return Err(IssueErrorKind::NoSubjectAltNames.into());
        }
        let mut sans = Vec::with_capacity(params.dns_names.len() + params.ip_addresses.len());
        for name in &params.dns_names {
            let invalid = || IssueErrorKind::InvalidDnsName { name: name.clone() };
            let base = name.strip_prefix("*.").unwrap_or(name);
            rustls_pki_types::DnsName::try_from(base).map_err(|_| invalid())?;
            if base.parse::<IpAddr>().is_ok() {
                return Err(invalid().into());
            }
            sans.push(SanType::DnsName(
                name.as_str().try_into().map_err(|_| invalid())?,
            ));
        }
        sans.extend(params.ip_addresses.iter().copied().map(SanType::IpAddress));
        let common_name = params
            .common_name
            .clone()
            .or_else(|| params.dns_names.first().cloned())
            .or_else(|| params.ip_addresses.first().map(ToString::to_string))
            .unwrap_or_default();
        self.issue_leaf(
            common_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            params.validity,
            params.key_algorithm,
        )
    }

    /// Issues a client certificate naming its peer by the URI SAN `taskwire://TENANT/ID`.
    ///
    /// ```
    /// use taskwire_tls::{CaParams, CertificateAuthority, ClientCertParams, PeerIdentity};
    ///
    /// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
    /// let worker = ca.issue_client(&ClientCertParams::new("acme", "worker-7"))?;
    /// let peer = PeerIdentity::from_certificate(worker.certificate())?;
    /// assert_eq!(peer.tenant.as_deref(), Some("acme"));
    /// assert_eq!(peer.id.as_deref(), Some("worker-7"));
    ///
    /// // Tenant and id are limited to `A-Z a-z 0-9 . _ ~ -`.
    /// assert!(ca.issue_client(&ClientCertParams::new("acme corp", "worker-7")).is_err());
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn issue_client(&self, params: &ClientCertParams) -> Result<IssuedCert, TlsError> {
        let uri = identity_uri(&params.tenant, &params.id)?;
        let uri = uri.try_into().map_err(IssueErrorKind::Rcgen)?;
        let common_name = params
            .common_name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", params.tenant, params.id));
        self.issue_leaf(
            common_name,
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
            params.validity,
            params.key_algorithm,
        )
    }

    fn issue_leaf(
        &self,
        common_name: String,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        validity: Option<Validity>,
        key_algorithm: KeyAlgorithm,
    ) -> Result<IssuedCert, TlsError> {
        let validity = validity.unwrap_or_else(|| Validity::from_now(DEFAULT_LEAF_VALIDITY));
        let (not_before, not_after) = validity.to_rcgen()?;
        let key = KeyPair::generate_for(key_algorithm.rcgen()).map_err(IssueErrorKind::Rcgen)?;

        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);

        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(IssueErrorKind::Rcgen)?;
        let cert = cert.der().clone();
        let spki_sha256 = sha256(rcgen::PublicKeyData::subject_public_key_info(&key).as_slice());
        Ok(IssuedCert {
            cert,
            key: pkcs8_for_export(&key),
            spki_sha256,
        })
    }

    /// A revocation list signed by this CA: every certificate `previous` revoked, plus
    /// `certificates`, numbered one above `previous` and current for
    /// [`DEFAULT_CRL_VALIDITY`]. Certificates already revoked keep their revocation time.
    /// Servers load it with [`pem::load_revocation_lists`](crate::pem::load_revocation_lists)
    /// and [`ClientVerifier::reload`](crate::ClientVerifier::reload).
    ///
    /// ```
    /// use taskwire_tls::{CaParams, CertificateAuthority, ClientCertParams};
    ///
    /// let ca = CertificateAuthority::generate(&CaParams::new("tenants CA"))?;
    /// let lost = ca.issue_client(&ClientCertParams::new("acme", "laptop-3"))?;
    /// let crl = ca.revoke(None, &[lost.certificate().clone()])?;
    /// let other = CertificateAuthority::generate(&CaParams::new("other CA"))?;
    /// let refused = other.revoke(Some(&crl), &[]).unwrap_err();
    /// assert!(refused.to_string().contains("not signed by this CA"));
    /// # Ok::<(), taskwire_tls::TlsError>(())
    /// ```
    pub fn revoke(
        &self,
        previous: Option<&CertificateRevocationListDer<'_>>,
        certificates: &[CertificateDer<'_>],
    ) -> Result<CertificateRevocationListDer<'static>, TlsError> {
        let ca = parse_certificate_from(&self.cert, &Origin::Memory("CA certificate"), 0)?;
        let ca_subject = ca.subject().as_raw();
        let not_ours = |what: String, issuer: String| IssueErrorKind::NotIssuedHere {
            what,
            issuer,
            ca: self.subject.clone(),
        };
        let now = OffsetDateTime::now_utc();
        let mut revoked: Vec<RevokedCertParams> = Vec::new();
        let mut number: u64 = 1;
        if let Some(previous) = previous {
            let (_, crl) = x509_parser::parse_x509_crl(previous).map_err(|e| {
                IssueErrorKind::InvalidRevocationList {
                    reason: e.to_string(),
                }
            })?;
            // By signature, not only by name: two CAs may share a name.
            if crl.issuer().as_raw() != ca_subject || crl.verify_signature(ca.public_key()).is_err()
            {
                return Err(not_ours(
                    "the previous revocation list".into(),
                    crl.issuer().to_string(),
                )
                .into());
            }
            for entry in crl.iter_revoked_certificates() {
                revoked.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(entry.raw_serial()),
                    revocation_time: entry.revocation_date.to_datetime(),
                    reason_code: None,
                    invalidity_date: None,
                });
            }
            let previous_number = crl.crl_number().map_or(0, |n| {
                n.to_bytes_be().iter().fold(0u64, |acc, b| {
                    acc.saturating_mul(256).saturating_add(u64::from(*b))
                })
            });
            number = previous_number.saturating_add(1);
        }
        for (index, der) in certificates.iter().enumerate() {
            let cert =
                parse_certificate_from(der, &Origin::Memory("certificate to revoke"), index)?;
            if cert.issuer().as_raw() != ca_subject
                || cert.verify_signature(Some(ca.public_key())).is_err()
            {
                return Err(
                    not_ours(format!("certificate #{index}"), cert.issuer().to_string()).into(),
                );
            }
            let serial = SerialNumber::from_slice(cert.raw_serial());
            if !revoked.iter().any(|r| r.serial_number == serial) {
                revoked.push(RevokedCertParams {
                    serial_number: serial,
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        let next_update = now
            + time::Duration::try_from(DEFAULT_CRL_VALIDITY).map_err(|_| {
                IssueErrorKind::InvalidValidity {
                    reason: "the revocation list's validity does not fit",
                }
            })?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(IssueErrorKind::Rcgen)?;
        Ok(crl.der().clone())
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// The CA private key as PEM (PKCS#8 `PRIVATE KEY` for generated CAs; as loaded
    /// otherwise). Keep it secret.
    pub fn key_pem(&self) -> String {
        key_pem(&self.key)
    }

    /// The CA certificate's subject, for example `CN=taskwire CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A bundle trusting this CA: what clients and mTLS servers verify against.
    pub fn ca_bundle(&self) -> Result<CaBundle, TlsError> {
        CaBundle::from_der(vec![self.cert.clone()])
    }

    /// Writes the certificate (mode `0644`) and the private key (mode `0600`); see
    /// [`write_cert_and_key`](crate::pem::write_cert_and_key).
    pub fn write_pem_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<(), TlsError> {
        write_cert_and_key(
            cert_path,
            &self.cert_pem(),
            key_path,
            &self.key_pem(),
            overwrite,
        )
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A certificate this crate issued, with its new private key.
pub struct IssuedCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    spki_sha256: [u8; 32],
}

impl IssuedCert {
    /// The certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// The private key (PKCS#8 DER).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The private key as PKCS#8 `PRIVATE KEY` PEM. Keep it secret.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    /// The SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// The certificate and key as [`Credentials`] for a server or an mTLS client.
    pub fn credentials(&self) -> Result<Credentials, TlsError> {
        Credentials::from_der(vec![self.cert.clone()], self.private_key())
    }

    /// Writes the certificate (mode `0644`) and the private key (mode `0600`); see
    /// [`write_cert_and_key`](crate::pem::write_cert_and_key).
    pub fn write_pem_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<(), TlsError> {
        write_cert_and_key(
            cert_path,
            &self.cert_pem(),
            key_path,
            &self.key_pem(),
            overwrite,
        )
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("spki_sha256", &crate::util::hex(&self.spki_sha256))
            .finish_non_exhaustive()
    }
}

fn key_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_encode(label, key.secret_der())
}

fn subject_of(cert: &CertificateDer<'_>, origin: &Origin) -> Result<String, TlsError> {
    Ok(parse_certificate_from(cert, origin, 0)?
        .subject()
        .to_string())
}

/// The PKCS#8 form of a generated key as written to files.
///
/// ring and aws-lc-rs make Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key
/// included), which OpenSSL 3.0 cannot read; those are rewritten as the equivalent PKCS#8
/// v1 (RFC 8410), which every tool reads. Other keys are kept as they are.
fn pkcs8_for_export(key: &KeyPair) -> PrivatePkcs8KeyDer<'static> {
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const V2_PUBLIC_KEY: [u8; 3] = [0x81, 0x21, 0x00];
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let der = key.serialized_der();
    let is_ed25519_v2 = der.len() == V2_PREFIX.len() + 32 + V2_PUBLIC_KEY.len() + 32
        && der.starts_with(&V2_PREFIX)
        && der[V2_PREFIX.len() + 32..].starts_with(&V2_PUBLIC_KEY);
    if !is_ed25519_v2 {
        return PrivatePkcs8KeyDer::from(der.to_vec());
    }
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(&der[V2_PREFIX.len()..V2_PREFIX.len() + 32]);
    PrivatePkcs8KeyDer::from(v1)
}

/// A random positive 16-byte serial number.
/// How long a revocation list made by [`CertificateAuthority::revoke`] is current before
/// its next update is due: 30 days. A verifier still uses it after that date (revocation
/// lists are not refused for being old), so a new one need only be made when revoking.
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

fn random_serial() -> Result<SerialNumber, IssueErrorKind> {
    let mut bytes = [0u8; 16];
    default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(IssueErrorKind::Random)?;
    // Positive (top bit clear) and exactly 16 bytes long (a non-zero first byte).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
