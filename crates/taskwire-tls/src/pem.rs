//! PEM files: loading certificates and private keys with errors that name the file, and
//! writing them without clobbering anything unless asked.
//!
//! Private keys are written with mode `0600` (owner read/write only) and certificates with
//! `0644`, both subject to the process umask. Without `overwrite` a write creates the file
//! and fails with [`WriteErrorKind::AlreadyExists`] if it exists. With `overwrite` the new
//! contents go to a temporary file in the same directory that is then renamed over the
//! target, so a reader sees the old file or the new one, never a half-written one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{LoadErrorKind, Origin, TlsError, WriteErrorKind};
use crate::util::parse_certificate_from;

/// The permission bits of private key files.
pub const PRIVATE_KEY_MODE: u32 = 0o600;
/// The permission bits of certificate files.
pub const CERTIFICATE_MODE: u32 = 0o644;

/// Reads every `CERTIFICATE` of the PEM file at `path`, checking that each is valid X.509.
///
/// Errors name the file: an unreadable file, malformed PEM (for example a half-written
/// file whose last section has no `END` line), no certificate at all, or a certificate that
/// does not parse.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (origin, pem) = read_file(path.as_ref())?;
    certificates_from_pem(&pem, &origin)
}

/// [`load_certificates`] for PEM text in memory.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates_from_pem(pem, &Origin::Memory("certificate PEM"))
}

/// Reads the one private key (`PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`) of the
/// PEM file at `path`. A file with no key or with several keys is refused.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (origin, pem) = read_file(path.as_ref())?;
    private_key_from_pem(&pem, &origin)
}

/// [`load_private_key`] for PEM text in memory.
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    private_key_from_pem(pem, &Origin::Memory("private key PEM"))
}

/// Reads every `X509 CRL` of the PEM file at `path`. Errors name the file: unreadable,
/// malformed PEM, or no revocation list at all. Whether each list parses and is signed by a
/// CA of the bundle is checked when a [`ClientVerifier`](crate::ClientVerifier) is built
/// or reloaded with it.
pub fn load_revocation_lists(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let (origin, pem) = read_file(path.as_ref())?;
    revocation_lists_from_pem(&pem, &origin)
}

/// [`load_revocation_lists`] for PEM text in memory.
pub fn parse_revocation_lists(
    pem: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    revocation_lists_from_pem(pem, &Origin::Memory("revocation list PEM"))
}

fn revocation_lists_from_pem(
    pem: &[u8],
    origin: &Origin,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::load(origin, LoadErrorKind::Pem(e)))?;
    if crls.is_empty() {
        return Err(TlsError::load(origin, LoadErrorKind::NoRevocationLists));
    }
    Ok(crls)
}

/// Writes a revocation list as PEM (`X509 CRL`) to `path` with mode `0644`, replacing
/// the file atomically when `overwrite` is set.
pub fn write_revocation_list(
    path: impl AsRef<Path>,
    crl: &CertificateRevocationListDer<'_>,
    overwrite: bool,
) -> Result<(), TlsError> {
    let pem = crate::util::pem_encode("X509 CRL", crl);
    write_file(path.as_ref(), pem.as_bytes(), CERTIFICATE_MODE, overwrite)
}

/// Writes a certificate (or chain) PEM to `path` with mode `0644`.
///
/// Without `overwrite`, fails with [`WriteErrorKind::AlreadyExists`] if `path` exists.
pub fn write_certificate(
    path: impl AsRef<Path>,
    pem: &str,
    overwrite: bool,
) -> Result<(), TlsError> {
    write_file(path.as_ref(), pem.as_bytes(), CERTIFICATE_MODE, overwrite)
}

/// Writes a private key PEM to `path` with mode `0600`.
///
/// Without `overwrite`, fails with [`WriteErrorKind::AlreadyExists`] if `path` exists.
pub fn write_private_key(
    path: impl AsRef<Path>,
    pem: &str,
    overwrite: bool,
) -> Result<(), TlsError> {
    write_file(path.as_ref(), pem.as_bytes(), PRIVATE_KEY_MODE, overwrite)
}

/// Writes a certificate and its private key: the certificate with mode `0644`, the key
/// with mode `0600`.
///
/// Without `overwrite`, nothing is written if either file exists; if the key cannot be
/// written, the certificate file this call created is removed again. With `overwrite`,
/// each file is replaced atomically, the key first; a process reloading the pair between
/// the two renames sees a mismatched pair, which [`ReloadableCertResolver`] refuses
/// (keeping the pair it has) until the certificate follows.
///
/// [`ReloadableCertResolver`]: crate::ReloadableCertResolver
pub fn write_cert_and_key(
    cert_path: impl AsRef<Path>,
    cert_pem: &str,
    key_path: impl AsRef<Path>,
    key_pem: &str,
    overwrite: bool,
) -> Result<(), TlsError> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    if overwrite {
        write_file(key_path, key_pem.as_bytes(), PRIVATE_KEY_MODE, true)?;
        return write_file(cert_path, cert_pem.as_bytes(), CERTIFICATE_MODE, true);
    }
    for path in [cert_path, key_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(TlsError::Write {
                path: path.to_owned(),
                kind: WriteErrorKind::AlreadyExists,
            });
        }
    }
    write_file(cert_path, cert_pem.as_bytes(), CERTIFICATE_MODE, false)?;
    if let Err(e) = write_file(key_path, key_pem.as_bytes(), PRIVATE_KEY_MODE, false) {
        // Best effort: do not leave a certificate without its key behind.
        let _ = fs::remove_file(cert_path);
        return Err(e);
    }
    Ok(())
}

pub(crate) fn read_file(path: &Path) -> Result<(Origin, Vec<u8>), TlsError> {
    let origin = Origin::File(path.to_owned());
    match fs::read(path) {
        Ok(bytes) => Ok((origin, bytes)),
        Err(e) => Err(TlsError::load(&origin, LoadErrorKind::Io(e))),
    }
}

pub(crate) fn certificates_from_pem(
    pem: &[u8],
    origin: &Origin,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::load(origin, LoadErrorKind::Pem(e)))?;
    if certs.is_empty() {
        return Err(TlsError::load(origin, LoadErrorKind::NoCertificates));
    }
    for (index, cert) in certs.iter().enumerate() {
        parse_certificate_from(cert, origin, index)?;
    }
    Ok(certs)
}

pub(crate) fn private_key_from_pem(
    pem: &[u8],
    origin: &Origin,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| TlsError::load(origin, LoadErrorKind::Pem(e)))?;
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
            _ => continue,
        };
        keys.push(key);
    }
    match keys.len() {
        0 => Err(TlsError::load(origin, LoadErrorKind::NoPrivateKey)),
        1 => Ok(keys.remove(0)),
        count => Err(TlsError::load(
            origin,
            LoadErrorKind::MultiplePrivateKeys { count },
        )),
    }
}

fn write_error(path: &Path, e: io::Error) -> TlsError {
    let kind = if e.kind() == io::ErrorKind::AlreadyExists {
        WriteErrorKind::AlreadyExists
    } else {
        WriteErrorKind::Io(e)
    };
    TlsError::Write {
        path: path.to_owned(),
        kind,
    }
}

fn create_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

fn write_all_synced(mut file: fs::File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

fn temp_path_for(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: bool) -> Result<(), TlsError> {
    if !overwrite {
        let file = create_new(path, mode).map_err(|e| write_error(path, e))?;
        return write_all_synced(file, contents).map_err(|e| {
            let _ = fs::remove_file(path);
            write_error(path, e)
        });
    }
    let temp = temp_path_for(path);
    let result = create_new(&temp, mode)
        .and_then(|file| write_all_synced(file, contents))
        .and_then(|()| fs::rename(&temp, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&temp);
        TlsError::Write {
            path: path.to_owned(),
            kind: WriteErrorKind::Io(e),
        }
    })
}
