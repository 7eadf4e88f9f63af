//! Reading what a certificate says.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::asn1_rs::Oid;
use x509_parser::certificate::X509Certificate;

use crate::error::{LoadErrorKind, Origin, TlsError};
use crate::identity::SubjectAltNames;
use crate::pem::{certificates_from_pem, read_file};
use crate::util::{
    format_utc, hex, hex_colon, parse_certificate_from, sha256, system_time_from_unix,
};

/// What a certificate says, from [`inspect`]. `Display` gives a readable multi-line summary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// The subject, for example `CN=localhost`.
    pub subject: String,
    /// The issuer's subject.
    pub issuer: String,
    /// The serial number as colon-separated upper-case hex.
    pub serial: String,
    /// DNS name SANs.
    pub dns_names: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs, for example `taskwire://acme/worker-7`.
    pub uris: Vec<String>,
    /// Key usages by their RFC 5280 names (`digitalSignature`, `keyCertSign`, ...); empty
    /// without the extension.
    pub key_usages: Vec<String>,
    /// Extended key usages by name (`serverAuth`, `clientAuth`, ...) or dotted OID; empty
    /// without the extension.
    pub extended_key_usages: Vec<String>,
    /// Whether the basic constraints say CA.
    pub is_ca: bool,
    /// The basic constraints path length, if any.
    pub path_len: Option<u32>,
    /// The start of the validity period.
    pub not_before: SystemTime,
    /// The end of the validity period.
    pub not_after: SystemTime,
    /// The public key type, for example `ECDSA P-256`, `Ed25519` or `RSA 2048`.
    pub public_key_algorithm: String,
    /// The SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
}

impl CertificateInfo {
    /// [`spki_sha256`](Self::spki_sha256) as lower-case hex.
    pub fn spki_sha256_hex(&self) -> String {
        hex(&self.spki_sha256)
    }

    /// Whether `time` lies inside the validity period.
    pub fn is_valid_at(&self, time: SystemTime) -> bool {
        self.not_before <= time && time <= self.not_after
    }

    fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        let sans = SubjectAltNames::of(cert);
        let (is_ca, path_len) = match cert.basic_constraints() {
            Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
            _ => (false, None),
        };
        let key_usages = match cert.key_usage() {
            Ok(Some(ku)) => {
                let ku = ku.value;
                [
                    (ku.digital_signature(), "digitalSignature"),
                    (ku.non_repudiation(), "nonRepudiation"),
                    (ku.key_encipherment(), "keyEncipherment"),
                    (ku.data_encipherment(), "dataEncipherment"),
                    (ku.key_agreement(), "keyAgreement"),
                    (ku.key_cert_sign(), "keyCertSign"),
                    (ku.crl_sign(), "cRLSign"),
                    (ku.encipher_only(), "encipherOnly"),
                    (ku.decipher_only(), "decipherOnly"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| name.to_owned())
                .collect()
            }
            _ => Vec::new(),
        };
        let extended_key_usages = match cert.extended_key_usage() {
            Ok(Some(eku)) => {
                let eku = eku.value;
                let mut names: Vec<String> = [
                    (eku.any, "anyExtendedKeyUsage"),
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                ]
                .into_iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| name.to_owned())
                .collect();
                names.extend(eku.other.iter().map(Oid::to_id_string));
                names
            }
            _ => Vec::new(),
        };
        CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: hex_colon(cert.raw_serial()),
            dns_names: sans.dns_names,
            ip_addresses: sans.ip_addresses,
            uris: sans.uris,
            key_usages,
            extended_key_usages,
            is_ca,
            path_len,
            not_before: system_time_from_unix(cert.validity().not_before.timestamp()),
            not_after: system_time_from_unix(cert.validity().not_after.timestamp()),
            public_key_algorithm: public_key_algorithm(cert),
            spki_sha256: sha256(cert.public_key().raw),
        }
    }
}

fn public_key_algorithm(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let parameter = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| Oid::try_from(p).ok())
        .map(|oid| oid.to_id_string());
    match (algorithm.as_str(), parameter.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => "ECDSA P-256".to_owned(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "ECDSA P-384".to_owned(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "ECDSA P-521".to_owned(),
        ("1.2.840.10045.2.1", curve) => format!("ECDSA (curve {})", curve.unwrap_or("unknown")),
        ("1.3.101.112", _) => "Ed25519".to_owned(),
        ("1.3.101.113", _) => "Ed448".to_owned(),
        ("1.2.840.113549.1.1.1", _) => match spki.parsed() {
            Ok(key) => format!("RSA {}", key.key_size()),
            Err(_) => "RSA".to_owned(),
        },
        (other, _) => other.to_owned(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Subject:            {}", self.subject)?;
        writeln!(f, "Issuer:             {}", self.issuer)?;
        writeln!(f, "Serial:             {}", self.serial)?;
        writeln!(f, "Not before:         {}", format_utc(self.not_before))?;
        writeln!(f, "Not after:          {}", format_utc(self.not_after))?;
        writeln!(f, "Public key:         {}", self.public_key_algorithm)?;
        writeln!(f, "SPKI SHA-256:       {}", self.spki_sha256_hex())?;
        match self.path_len {
            Some(len) if self.is_ca => writeln!(f, "CA:                 yes (path length {len})")?,
            _ => writeln!(f, "CA:                 {}", yes_no(self.is_ca))?,
        }
        writeln!(f, "Key usage:          {}", list(&self.key_usages))?;
        writeln!(f, "Extended key usage: {}", list(&self.extended_key_usages))?;
        writeln!(f, "DNS names:          {}", list(&self.dns_names))?;
        writeln!(f, "IP addresses:       {}", list(&self.ip_addresses))?;
        write!(f, "URIs:               {}", list(&self.uris))
    }
}

fn looks_like_pem(input: &[u8]) -> bool {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    input[start..].starts_with(b"-----BEGIN")
}

/// What a certificate says: the first `CERTIFICATE` of PEM text, or one DER certificate.
///
/// ```
/// use taskwire_tls::{CaParams, CertificateAuthority, ServerCertParams, inspect};
///
/// let ca = CertificateAuthority::generate(&CaParams::new("example CA"))?;
/// let cert = ca.issue_server(&ServerCertParams::new(["localhost", "127.0.0.1"]))?;
///
/// let info = inspect(cert.cert_pem().as_bytes())?;
/// assert_eq!(info.subject, "CN=localhost");
/// assert_eq!(info.issuer, "CN=example CA");
/// assert_eq!(info.extended_key_usages, ["serverAuth"]);
/// assert!(!info.is_ca);
/// assert_eq!(info.spki_sha256, cert.spki_sha256());
/// assert_eq!(info, inspect(cert.certificate())?); // DER works too
///
/// let summary = info.to_string();
/// assert!(summary.contains("DNS names:          localhost"));
/// assert!(summary.contains("IP addresses:       127.0.0.1"));
/// # Ok::<(), taskwire_tls::TlsError>(())
/// ```
pub fn inspect(input: &[u8]) -> Result<CertificateInfo, TlsError> {
    inspect_from(input, &Origin::Memory("certificate"))
}

/// [`inspect`] for a file (PEM or DER); errors name the file.
pub fn inspect_file(path: impl AsRef<Path>) -> Result<CertificateInfo, TlsError> {
    let (origin, bytes) = read_file(path.as_ref())?;
    inspect_from(&bytes, &origin)
}

/// What every certificate of PEM text (a chain or bundle) says, in order; or the one
/// certificate of DER input.
pub fn inspect_all(input: &[u8]) -> Result<Vec<CertificateInfo>, TlsError> {
    let origin = Origin::Memory("certificate");
    if looks_like_pem(input) {
        let certs = certificates_from_pem(input, &origin)?;
        certs
            .iter()
            .enumerate()
            .map(|(index, der)| {
                Ok(CertificateInfo::from_parsed(&parse_certificate_from(
                    der, &origin, index,
                )?))
            })
            .collect()
    } else {
        Ok(vec![CertificateInfo::from_parsed(&parse_certificate_from(
            input, &origin, 0,
        )?)])
    }
}

fn inspect_from(input: &[u8], origin: &Origin) -> Result<CertificateInfo, TlsError> {
    if looks_like_pem(input) {
        let der = CertificateDer::from_pem_slice(input).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                TlsError::load(origin, LoadErrorKind::NoCertificates)
            }
            e => TlsError::load(origin, LoadErrorKind::Pem(e)),
        })?;
        Ok(CertificateInfo::from_parsed(&parse_certificate_from(
            &der, origin, 0,
        )?))
    } else {
        Ok(CertificateInfo::from_parsed(&parse_certificate_from(
            input, origin, 0,
        )?))
    }
}
