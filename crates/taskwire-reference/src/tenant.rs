//! Which tenant a call acts for.

use taskwire_rpc::{CallContext, Status, StatusCode};

/// Where the reference server takes a call's tenant from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantSource {
    /// From the client certificate (`taskwire://TENANT/ID`); a call without one is
    /// refused `UNAUTHENTICATED`. The default, and the only safe choice when the server
    /// is reachable by more than one party.
    #[default]
    Certificate,
    /// From the certificate if there is one, otherwise from the tenant the peer named in
    /// its Hello, which proves nothing: anyone can claim any tenant. For local
    /// development without client certificates only.
    ClaimedInHello,
}

impl TenantSource {
    /// The tenant `ctx` acts for.
    pub(crate) fn resolve(self, ctx: &CallContext) -> Result<String, Status> {
        if let Some(tenant) = ctx.peer.tenant() {
            return Ok(tenant.to_owned());
        }
        match self {
            TenantSource::ClaimedInHello => Ok(ctx.peer.claimed_tenant.clone()),
            TenantSource::Certificate => Err(Status::new(
                StatusCode::Unauthenticated,
                "this server needs a client certificate naming a tenant (taskwire://TENANT/ID)",
            )),
        }
    }
}

/// Checks a tenant named in a request field: empty means the caller's own, and any other
/// value must equal it.
pub(crate) fn check_named(own: &str, named: &str, field: &str) -> Result<(), Status> {
    if named.is_empty() || named == own {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{field} {named:?} is not the caller's tenant {own:?}"
        )))
    }
}
