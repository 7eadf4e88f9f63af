//! `taskwire cert`: a private CA, server and client certificates, and inspection, over
//! `taskwire-tls`.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use taskwire_tls::{
    CaParams, CertificateAuthority, CertificateInfo, ClientCertParams, IssuedCert,
    ServerCertParams, TlsError, Validity, WriteErrorKind, inspect_file, parse_identity_uri,
};

use crate::error::{CliError, print_line};

/// The CA certificate's file name in a CA directory.
const CA_CERT: &str = "ca.pem";
/// The CA private key's file name in a CA directory.
const CA_KEY: &str = "ca.key.pem";

const CERT_EXAMPLES: &str = "\
Examples:
  taskwire cert ca --out certs
  taskwire cert server --ca certs --out certs --dns localhost --ip 127.0.0.1
  taskwire cert client --ca certs --out certs --tenant acme --id worker-7
  taskwire cert inspect certs/client.pem --json";

const CA_EXAMPLES: &str = "\
Examples:
  # certs/ca.pem and certs/ca.key.pem, valid for 10 years:
  taskwire cert ca --out certs
  # A named CA valid for one year, replacing an existing one:
  taskwire cert ca --out certs --name \"acme dev CA\" --validity-days 365 --force";

const SERVER_EXAMPLES: &str = "\
Examples:
  # certs/server.pem and certs/server.key.pem for local development:
  taskwire cert server --ca certs --out certs --dns localhost --ip 127.0.0.1 --ip ::1
  # A wildcard name, valid for 30 days:
  taskwire cert server --ca certs --out engine --dns engine.internal --dns '*.engine.internal' --validity-days 30";

const CLIENT_EXAMPLES: &str = "\
Examples:
  # certs/client.pem and certs/client.key.pem, identity taskwire://acme/worker-7:
  taskwire cert client --ca certs --out certs --tenant acme --id worker-7
  # One directory per worker:
  taskwire cert client --ca certs --out workers/worker-8 --tenant acme --id worker-8";

const REVOKE_EXAMPLES: &str = "\
Examples:
  # Add a client certificate to certs/crl.pem, then tell the server to reload it:
  taskwire cert revoke --ca certs workers/worker-8/client.pem
  kill -HUP $(pidof taskwire)   # taskwire serve ... --ca certs/ca.pem --crl certs/crl.pem";

const INSPECT_EXAMPLES: &str = "\
Examples:
  taskwire cert inspect certs/server.pem
  # Machine-readable, for example to pin a server by its key:
  taskwire cert inspect certs/server.pem --json | jq -r .spki_sha256";

/// `taskwire cert`.
#[derive(Debug, Args)]
#[command(after_help = CERT_EXAMPLES)]
pub(crate) struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Generate a private CA: writes ca.pem and ca.key.pem.
    Ca(CaArgs),
    /// Issue a server certificate signed by a CA: writes server.pem and server.key.pem.
    Server(ServerArgs),
    /// Issue a client certificate for the identity taskwire://TENANT/ID: writes client.pem
    /// and client.key.pem.
    Client(ClientArgs),
    /// Show what a certificate says: subject, SANs, validity, identity, key fingerprint.
    Inspect(InspectArgs),
    /// Revoke certificates: adds them to the CA's revocation list (DIR/crl.pem by default),
    /// which `taskwire serve --crl` reads again on SIGHUP.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
#[command(after_help = REVOKE_EXAMPLES)]
struct RevokeArgs {
    /// The directory holding the CA's ca.pem and ca.key.pem.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The revocation list to extend, or create [default: DIR/crl.pem].
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Certificates (PEM) issued by the CA to revoke.
    #[arg(value_name = "CERT", required = true)]
    certs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = CA_EXAMPLES)]
struct CaArgs {
    /// The directory to write ca.pem and ca.key.pem into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The CA's common name.
    #[arg(long, value_name = "NAME", default_value = "taskwire CA")]
    name: String,
    /// How many days the CA is valid [default: 3650].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    validity_days: Option<u32>,
    /// Replace existing files instead of refusing to.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = SERVER_EXAMPLES,
    group(ArgGroup::new("names").args(["dns", "ip"]).required(true).multiple(true)),
)]
struct ServerArgs {
    /// The directory holding the CA's ca.pem and ca.key.pem.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The directory to write server.pem and server.key.pem into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A DNS name the certificate is valid for; `*.` in front makes a wildcard.
    /// Repeatable.
    #[arg(long, value_name = "NAME")]
    dns: Vec<String>,
    /// An IP address the certificate is valid for. Repeatable.
    #[arg(long, value_name = "ADDR")]
    ip: Vec<IpAddr>,
    /// The subject common name [default: the first DNS name, or the first IP address].
    #[arg(long, value_name = "NAME")]
    common_name: Option<String>,
    /// How many days the certificate is valid [default: 90].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    validity_days: Option<u32>,
    /// Replace existing files instead of refusing to.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(after_help = CLIENT_EXAMPLES)]
struct ClientArgs {
    /// The directory holding the CA's ca.pem and ca.key.pem.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The directory to write client.pem and client.key.pem into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The tenant of the identity: 1 to 128 of `a-z 0-9 . _ ~ -`, not beginning or ending
    /// with `.` nor containing `..` (docs/protocol.md, "Identity names").
    #[arg(long, value_name = "TENANT")]
    tenant: String,
    /// The worker or instance id of the identity: as the tenant, uppercase allowed.
    #[arg(long, value_name = "ID")]
    id: String,
    /// The subject common name [default: TENANT/ID].
    #[arg(long, value_name = "NAME")]
    common_name: Option<String>,
    /// How many days the certificate is valid [default: 90].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    validity_days: Option<u32>,
    /// Replace existing files instead of refusing to.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
#[command(after_help = INSPECT_EXAMPLES)]
struct InspectArgs {
    /// The certificate: a PEM file (its first certificate) or a DER file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `taskwire cert`.
pub(crate) fn run(args: CertArgs) -> Result<(), CliError> {
    match args.command {
        CertCommand::Ca(args) => ca(args),
        CertCommand::Server(args) => server(args),
        CertCommand::Client(args) => client(args),
        CertCommand::Inspect(args) => inspect(&args),
        CertCommand::Revoke(args) => revoke(&args),
    }
}

fn validity(days: Option<u32>) -> Option<Validity> {
    days.map(|days| Validity::from_now(Duration::from_secs(u64::from(days) * 24 * 60 * 60)))
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    fs::create_dir_all(dir)
        .map_err(|e| CliError::msg(format!("cannot create directory {}: {e}", dir.display())))
}

/// A write error, with the flag that overrides "file exists".
fn write_error(error: TlsError) -> CliError {
    match &error {
        TlsError::Write {
            path,
            kind: WriteErrorKind::AlreadyExists,
        } => CliError::msg(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        )),
        _ => error.into(),
    }
}

fn load_ca(dir: &Path) -> Result<CertificateAuthority, CliError> {
    Ok(CertificateAuthority::from_pem_files(
        dir.join(CA_CERT),
        dir.join(CA_KEY),
    )?)
}

fn ca(args: CaArgs) -> Result<(), CliError> {
    let mut params = CaParams::new(args.name);
    if let Some(validity) = validity(args.validity_days) {
        params = params.validity(validity);
    }
    let ca = CertificateAuthority::generate(&params)?;
    create_dir(&args.out)?;
    let (cert_path, key_path) = (args.out.join(CA_CERT), args.out.join(CA_KEY));
    ca.write_pem_files(&cert_path, &key_path, args.force)
        .map_err(write_error)?;
    print_line(format_args!("certificate:  {}", cert_path.display()))?;
    print_line(format_args!("private key:  {}", key_path.display()))?;
    print_line(format_args!("subject:      {}", ca.subject()))
}

fn server(args: ServerArgs) -> Result<(), CliError> {
    let ca = load_ca(&args.ca)?;
    let mut params = ServerCertParams::new(Vec::<String>::new())
        .dns_names(args.dns)
        .ip_addresses(args.ip);
    if let Some(common_name) = args.common_name {
        params = params.common_name(common_name);
    }
    if let Some(validity) = validity(args.validity_days) {
        params = params.validity(validity);
    }
    let cert = ca.issue_server(&params)?;
    write_leaf(&cert, &args.out, "server", args.force)
}

fn client(args: ClientArgs) -> Result<(), CliError> {
    // A bad tenant or id is reported before anything is read.
    let identity = taskwire_tls::identity_uri(&args.tenant, &args.id)?;
    let ca = load_ca(&args.ca)?;
    let mut params = ClientCertParams::new(&args.tenant, &args.id);
    if let Some(common_name) = args.common_name {
        params = params.common_name(common_name);
    }
    if let Some(validity) = validity(args.validity_days) {
        params = params.validity(validity);
    }
    let cert = ca.issue_client(&params)?;
    write_leaf(&cert, &args.out, "client", args.force)?;
    print_line(format_args!("identity:     {identity}"))
}

fn revoke(args: &RevokeArgs) -> Result<(), CliError> {
    let ca = load_ca(&args.ca)?;
    let crl_path = args.crl.clone().unwrap_or_else(|| args.ca.join("crl.pem"));
    let previous = if crl_path.exists() {
        let mut lists = taskwire_tls::pem::load_revocation_lists(&crl_path)?;
        if lists.len() != 1 {
            return Err(CliError::msg(format!(
                "{} holds {} revocation lists; expected one, this CA's",
                crl_path.display(),
                lists.len()
            )));
        }
        lists.pop()
    } else {
        None
    };
    let mut certificates = Vec::new();
    for path in &args.certs {
        let cert = taskwire_tls::pem::load_certificates(path)?
            .into_iter()
            .next()
            .ok_or_else(|| CliError::msg(format!("{}: no certificate", path.display())))?;
        certificates.push(cert);
    }
    let crl = ca.revoke(previous.as_ref(), &certificates)?;
    taskwire_tls::pem::write_revocation_list(&crl_path, &crl, true).map_err(write_error)?;
    for path in &args.certs {
        print_line(format_args!("revoked:      {}", path.display()))?;
    }
    print_line(format_args!("revocation list: {}", crl_path.display()))
}

/// Writes `NAME.pem` and `NAME.key.pem` into `dir` and says what was written.
fn write_leaf(cert: &IssuedCert, dir: &Path, name: &str, force: bool) -> Result<(), CliError> {
    create_dir(dir)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key.pem"));
    cert.write_pem_files(&cert_path, &key_path, force)
        .map_err(write_error)?;
    print_line(format_args!("certificate:  {}", cert_path.display()))?;
    print_line(format_args!("private key:  {}", key_path.display()))?;
    print_line(format_args!(
        "SPKI SHA-256: {}",
        taskwire_tls::fingerprint_to_hex(&cert.spki_sha256())
    ))
}

/// The tenant and id of a certificate's `taskwire://TENANT/ID` URI SAN, by the rule of
/// `taskwire_tls::PeerIdentity`: exactly one identity, however often it is repeated.
fn identity(info: &CertificateInfo) -> Option<(&str, &str)> {
    let mut identities: Vec<(&str, &str)> = info
        .uris
        .iter()
        .filter_map(|uri| parse_identity_uri(uri))
        .collect();
    identities.sort_unstable();
    identities.dedup();
    match identities.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

/// `time` as RFC 3339 in UTC, for example `2030-01-31T12:00:00Z`.
fn rfc3339(time: SystemTime) -> Result<String, CliError> {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs())
            .ok()
            .map(|secs| -secs),
    };
    secs.and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or_else(|| CliError::msg("the certificate's validity dates are out of range"))
}

/// The JSON form of `taskwire cert inspect --json`.
#[derive(Serialize)]
struct InspectJson<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    dns_names: &'a [String],
    ip_addresses: &'a [IpAddr],
    uris: &'a [String],
    tenant: Option<&'a str>,
    id: Option<&'a str>,
    not_before: String,
    not_after: String,
    is_ca: bool,
    path_len: Option<u32>,
    key_usages: &'a [String],
    extended_key_usages: &'a [String],
    public_key_algorithm: &'a str,
    spki_sha256: String,
}

fn inspect(args: &InspectArgs) -> Result<(), CliError> {
    let info = inspect_file(&args.file)?;
    let identity = identity(&info);
    if args.json {
        let json = InspectJson {
            subject: &info.subject,
            issuer: &info.issuer,
            serial: &info.serial,
            dns_names: &info.dns_names,
            ip_addresses: &info.ip_addresses,
            uris: &info.uris,
            tenant: identity.map(|(tenant, _)| tenant),
            id: identity.map(|(_, id)| id),
            not_before: rfc3339(info.not_before)?,
            not_after: rfc3339(info.not_after)?,
            is_ca: info.is_ca,
            path_len: info.path_len,
            key_usages: &info.key_usages,
            extended_key_usages: &info.extended_key_usages,
            public_key_algorithm: &info.public_key_algorithm,
            spki_sha256: info.spki_sha256_hex(),
        };
        return print_line(serde_json::to_string_pretty(&json)?);
    }
    // The library's summary, with the identity in the same layout.
    print_line(&info)?;
    if let Some((tenant, id)) = identity {
        print_line(format_args!("Tenant:             {tenant}"))?;
        print_line(format_args!("Id:                 {id}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t).unwrap(), "2024-02-29T12:34:56Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before).unwrap(), "1969-12-31T23:59:59Z");
    }
}
