//! Session resumption that re-checks the client certificate, for servers with client
//! authentication.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::server::StoresServerSessions;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::util::parse_certificate;
use crate::verifier::ClientVerifier;

/// How long a session can be resumed after its full handshake, by default: one hour.
pub const DEFAULT_RESUMPTION_LIFETIME: Duration = Duration::from_secs(3600);

/// How many sessions a server keeps for resumption, by default: 256 (as rustls's own
/// cache). Each costs its chain plus about 100 bytes, typically 1–2 KiB.
pub const DEFAULT_RESUMPTION_SESSIONS: usize = 256;

/// A [`StoresServerSessions`] that re-verifies the client's chain on resumption.
/// [`ServerConfigBuilder`](crate::ServerConfigBuilder) installs one whenever client
/// authentication is on.
///
/// A TLS 1.3 resumption skips certificate verification: the session carries the chain of
/// the full handshake forward. Left alone, a certificate that expired, was revoked or whose
/// CA was removed since then keeps logging in for as long as the session is cached. This
/// store keeps each session's client chain beside it and, when a client resumes, verifies
/// the chain again with the server's [`ClientVerifier`] at that moment; a chain that no
/// longer verifies is not resumed, so the client falls back to a full handshake, which
/// refuses the certificate as it would any other. Sessions also end after a maximum
/// lifetime, whatever their certificates say.
pub struct VerifyingSessionStore {
    verifier: Arc<ClientVerifier>,
    lifetime: Duration,
    capacity: usize,
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    by_key: HashMap<Vec<u8>, Stored>,
    /// Keys in the order they were stored, for eviction; may hold keys already taken.
    order: VecDeque<Vec<u8>>,
}

#[derive(Clone)]
struct Stored {
    value: Vec<u8>,
    chain: Option<Vec<CertificateDer<'static>>>,
    stored_at: Instant,
}

impl VerifyingSessionStore {
    /// A store of up to `capacity` sessions, each resumable for `lifetime` while its chain
    /// still verifies with `verifier`.
    pub fn new(verifier: Arc<ClientVerifier>, lifetime: Duration, capacity: usize) -> Self {
        VerifyingSessionStore {
            verifier,
            lifetime,
            capacity: capacity.max(1),
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.sessions.lock().expect("sessions lock").by_key.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn resume(&self, key: &[u8], take: bool) -> Option<Vec<u8>> {
        let stored = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            if take {
                sessions.by_key.remove(key)?
            } else {
                sessions.by_key.get(key)?.clone()
            }
        };
        if stored.stored_at.elapsed() > self.lifetime {
            self.forget(key);
            return None;
        }
        if let Some(chain) = &stored.chain {
            let (leaf, intermediates) = chain.split_first()?;
            if let Err(e) = self
                .verifier
                .verify_chain(leaf, intermediates, UnixTime::now())
            {
                tracing::info!(error = %e, "a session was not resumed: its client certificate no longer verifies");
                self.forget(key);
                return None;
            }
        } else if self.verifier.is_mandatory() {
            return None;
        }
        Some(stored.value)
    }

    fn forget(&self, key: &[u8]) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .by_key
            .remove(key);
    }
}

impl StoresServerSessions for VerifyingSessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        // A session whose chain cannot be read is not kept: it could not be re-checked.
        let Ok(chain) = client_chain(&value) else {
            return false;
        };
        if chain.is_none() && self.verifier.is_mandatory() {
            return false;
        }
        let mut sessions = self.sessions.lock().expect("sessions lock");
        while sessions.by_key.len() >= self.capacity {
            match sessions.order.pop_front() {
                Some(oldest) => {
                    sessions.by_key.remove(&oldest);
                }
                None => break,
            }
        }
        if sessions.order.len() > 2 * self.capacity {
            let Sessions { by_key, order } = &mut *sessions;
            order.retain(|k| by_key.contains_key(k));
        }
        sessions.order.push_back(key.clone());
        sessions.by_key.insert(
            key,
            Stored {
                value,
                chain,
                stored_at: Instant::now(),
            },
        );
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.resume(key, false)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.resume(key, true)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl fmt::Debug for VerifyingSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingSessionStore")
            .field("sessions", &self.len())
            .field("capacity", &self.capacity)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The client certificate chain inside rustls's encoding of a server session (its
/// `ServerSessionValue`): an optional SNI name (u8 flag, u8 length), the version and
/// cipher suite (2 bytes each), the secret (u8 length), the extended-master-secret flag,
/// then an optional chain (u8 flag; u24 list length; each certificate u24 length + DER).
/// `Err` if the bytes do not read that way, so that such a session is never resumed
/// unchecked; `a_fresh_client_certificate_resumes` in the tests notices a layout change.
fn client_chain(value: &[u8]) -> Result<Option<Vec<CertificateDer<'static>>>, ()> {
    let mut r = Reader(value);
    match r.u8()? {
        0 => {}
        1 => {
            let len = r.u8()?;
            r.take(usize::from(len))?;
        }
        _ => return Err(()),
    }
    r.take(4)?; // version and cipher suite
    let secret = r.u8()?;
    r.take(usize::from(secret))?;
    if r.u8()? > 1 {
        return Err(());
    }
    match r.u8()? {
        0 => Ok(None),
        1 => {
            let total = r.u24()?;
            let mut list = Reader(r.take(total)?);
            let mut chain = Vec::new();
            while !list.0.is_empty() {
                let len = list.u24()?;
                let der = list.take(len)?;
                parse_certificate(der).map_err(|_| ())?;
                chain.push(CertificateDer::from(der.to_vec()));
            }
            if chain.is_empty() {
                return Err(());
            }
            Ok(Some(chain))
        }
        _ => Err(()),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ()> {
        if self.0.len() < n {
            return Err(());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ()> {
        Ok(self.take(1)?[0])
    }

    fn u24(&mut self) -> Result<usize, ()> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u24(len: usize) -> [u8; 3] {
        let b = u32::try_from(len).unwrap().to_be_bytes();
        [b[1], b[2], b[3]]
    }

    fn session_value(chain: Option<&[&[u8]]>) -> Vec<u8> {
        let mut v = vec![1, 9];
        v.extend_from_slice(b"localhost");
        v.extend_from_slice(&[0x03, 0x04, 0x13, 0x01, 3, 7, 7, 7, 0]);
        match chain {
            None => v.push(0),
            Some(certs) => {
                v.push(1);
                let mut list = Vec::new();
                for cert in certs {
                    list.extend_from_slice(&u24(cert.len()));
                    list.extend_from_slice(cert);
                }
                v.extend_from_slice(&u24(list.len()));
                v.extend_from_slice(&list);
            }
        }
        v.extend_from_slice(&[0, 0, 0]); // no ALPN, empty application data
        v
    }

    #[test]
    fn the_chain_is_read_from_a_session_value_and_damage_is_an_error() {
        let ca = crate::CertificateAuthority::generate(&crate::CaParams::new("ca")).unwrap();
        let leaf = ca
            .issue_client(&crate::ClientCertParams::new("acme", "w1"))
            .unwrap();
        let value = session_value(Some(&[leaf.certificate(), ca.certificate()]));
        let chain = client_chain(&value).unwrap().unwrap();
        assert_eq!(
            chain,
            [leaf.certificate().clone(), ca.certificate().clone()]
        );
        assert_eq!(client_chain(&session_value(None)), Ok(None));
        // Cut anywhere inside the chain, or a flag that is not 0 or 1: an error, not a guess.
        for cut in 12..value.len() - 3 {
            assert_eq!(client_chain(&value[..cut]), Err(()), "cut at {cut}");
        }
        let mut bad_flag = value.clone();
        bad_flag[0] = 2;
        assert_eq!(client_chain(&bad_flag), Err(()));
        let not_a_certificate = session_value(Some(&[b"not DER"]));
        assert_eq!(client_chain(&not_a_certificate), Err(()));
    }
}
