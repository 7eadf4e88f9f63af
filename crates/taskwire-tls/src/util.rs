//! Small internal helpers: strict certificate parsing, hashing, hex, PEM encoding, times.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;

use crate::error::{LoadErrorKind, Origin, TlsError};

/// Parses one DER certificate, refusing trailing bytes. Never panics on any input.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// [`parse_certificate`] with the error as a [`TlsError::Load`] naming `origin`.
pub(crate) fn parse_certificate_from<'a>(
    der: &'a [u8],
    origin: &Origin,
    index: usize,
) -> Result<X509Certificate<'a>, TlsError> {
    parse_certificate(der).map_err(|reason| {
        TlsError::load(origin, LoadErrorKind::InvalidCertificate { index, reason })
    })
}

/// The SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Upper-case hex with ':' between bytes, as certificate serials are usually shown.
pub(crate) fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// PEM-encodes `der` under `label`, with 64-character lines and LF line endings.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[usize::try_from((n >> shift) & 0x3f).unwrap_or(0)];
        b64.push(sextet(18));
        b64.push(sextet(12));
        b64.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        b64.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Seconds since the Unix epoch (negative before it) as a `SystemTime`, saturating at the
/// platform's limits instead of panicking.
pub(crate) fn system_time_from_unix(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A `SystemTime` as seconds since the Unix epoch (negative before it), saturating.
pub(crate) fn unix_from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a `SystemTime`, for any representable time.
pub(crate) fn format_utc(t: SystemTime) -> String {
    let secs = unix_from_system_time(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day) in the
/// proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(
            format_utc(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
        assert_eq!(
            format_utc(system_time_from_unix(1_709_210_096)),
            "2024-02-29 12:34:56 UTC"
        );
        assert_eq!(
            format_utc(system_time_from_unix(-1)),
            "1969-12-31 23:59:59 UTC"
        );
        assert_eq!(
            format_utc(system_time_from_unix(253_402_300_799)),
            "9999-12-31 23:59:59 UTC"
        );
    }

    #[test]
    fn unix_round_trip() {
        for secs in [-86_401, -1, 0, 1, 1_700_000_000] {
            assert_eq!(unix_from_system_time(system_time_from_unix(secs)), secs);
        }
    }

    #[test]
    fn pem_encoding_matches_rfc4648_vectors() {
        let pem = pem_encode("X", b"foobar");
        assert_eq!(pem, "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n");
        assert!(pem_encode("X", b"fo").contains("\nZm8=\n"));
        assert!(pem_encode("X", b"f").contains("\nZg==\n"));
        let long = pem_encode("X", &[0u8; 100]);
        let lines: Vec<_> = long.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn hex_forms() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(hex_colon(&[0x00, 0xab, 0x7f]), "00:AB:7F");
    }
}
