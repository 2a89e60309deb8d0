//! PostgreSQL connections as DESIGN.md says: `--db URL`, else `DATABASE_URL`, else the libpq
//! variables, with libpq's conventions (service files, the password file, client
//! certificates, ~/.postgresql/root.crt, application_name) so that what works for psql works
//! for every tool (docs/connections.md). Nothing here ever prints a password.

mod libpq;
mod tls;

use crate::error::{Error, Result};
use libpq::{PassFile, Settings, Source};
use postgres::config::{ChannelBinding, Host, LoadBalanceHosts, SslMode, TargetSessionAttrs};
use postgres::{Client, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// libpq's sslmode values (the postgres crate knows only three of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// Waited for a server when no source sets connect_timeout (libpq would wait forever; a
/// cron job should not).
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;

/// Debian's libpq default for `host`: the Unix socket directory.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// A resolved connection target: what to connect to, and how to name it without secrets.
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub tls: TlsMode,
    /// What the server's certificate is verified against: a PEM file, or `system` (the
    /// system's trusted CAs); `None`: not verified.
    pub root_cert: Option<String>,
    /// The client certificate and its private key, when one is sent.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    ssl_password: Option<String>,
    sni: bool,
    /// The resolved libpq settings, handed to child programs such as pg_dump.
    resolved: Vec<(&'static str, String)>,
    /// Where the settings came from (names, never values), for a failed connection's message.
    tried: Vec<String>,
}

/// The running tool's name (argv[0]'s file name): the default application_name and the
/// prefix of warnings printed here.
pub fn tool_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "pgferry".into())
}

fn unsupported(k: &str, v: &str) -> Error {
    // Values of these options are modes and paths, never secrets.
    Error::Usage(format!("connection option {k}={v} is not supported by pgferry (docs/connections.md)"))
}

fn bad_value(k: &str, v: &str, want: &str) -> Error {
    let v = if k == "password" || k == "sslpassword" { "…" } else { v };
    Error::Usage(format!("connection option {k}='{v}': {want}"))
}

fn parse_sslmode(v: &str) -> Result<TlsMode> {
    Ok(match v {
        // allow: libpq tries without TLS first; without falling back, that is disable.
        "disable" | "allow" => TlsMode::Disable,
        "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        _ => return Err(bad_value("sslmode", v, "not one of disable, allow, prefer, require, verify-ca, verify-full")),
    })
}

fn secs(k: &str, v: &str) -> Result<i64> {
    v.trim().parse().map_err(|_| bad_value(k, v, "not a whole number"))
}

impl Target {
    /// Resolves `--db`, then `DATABASE_URL`, then the libpq variables, as libpq ranks them.
    pub fn resolve(db: Option<&str>) -> Result<Target> {
        Target::resolve_with(db, &libpq::process_env)
    }

    fn resolve_with(db: Option<&str>, env: libpq::Env) -> Result<Target> {
        let from_env = env("DATABASE_URL");
        let conn = match (db, &from_env) {
            (Some(s), _) => Some(("--db", s)),
            (None, Some(s)) => Some(("DATABASE_URL", s.as_str())),
            (None, None) => None,
        };
        let st = libpq::gather(conn, env)?;
        let mut tried: Vec<String> = conn.map(|(name, _)| name.to_string()).into_iter().collect();
        if let Some((name, file)) = &st.service {
            tried.push(format!("service '{name}' in {}", file.display()));
        }
        tried.extend(st.env_used().into_iter().map(String::from));
        refuse_unsupported(&st)?;
        let home = libpq::home(env);
        let mut c = Config::new();
        let mut resolved = vec![];
        let mut keep = |k: &'static str, v: &str| resolved.push((k, v.to_string()));

        let hosts: Vec<&str> = st.get("host").map(|h| h.split(',').collect()).unwrap_or_default();
        let addrs: Vec<&str> = st.get("hostaddr").map(|h| h.split(',').collect()).unwrap_or_default();
        if hosts.is_empty() && addrs.is_empty() {
            c.host_path(DEFAULT_SOCKET_DIR);
        }
        for h in &hosts {
            c.host(if h.is_empty() { DEFAULT_SOCKET_DIR } else { h });
        }
        for a in &addrs {
            c.hostaddr(a.trim().parse().map_err(|_| bad_value("hostaddr", a, "not an IP address"))?);
        }
        for k in ["host", "hostaddr"] {
            if let Some(v) = st.get(k) {
                keep(k, v);
            }
        }
        let mut ports = vec![];
        for p in st.get("port").map(|p| p.split(',').collect()).unwrap_or_else(|| vec![""]) {
            let p = if p.is_empty() {
                5432
            } else {
                p.trim().parse().map_err(|_| bad_value("port", p, "not a port number"))?
            };
            c.port(p);
            ports.push(p.to_string());
        }
        keep("port", &ports.join(","));
        let user = st.get("user").map(str::to_string).or_else(libpq::os_user).unwrap_or_else(|| "postgres".into());
        c.user(&user);
        keep("user", &user);
        let dbname = st.get("dbname").unwrap_or(&user).to_string();
        c.dbname(&dbname);
        keep("dbname", &dbname);

        let password = match st.get("password") {
            Some(p) => {
                tried.push(format!("password from {}", describe_source(st.source("password"))));
                Some(p.to_string())
            }
            None => {
                let file = st.get("passfile").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".pgpass")));
                match file {
                    Some(file) => {
                        // libpq matches the password file against the first host, "localhost"
                        // for a socket.
                        let host = match hosts.first().copied().or(addrs.first().copied()) {
                            Some(h) if !h.is_empty() && !h.starts_with('/') => h,
                            _ => "localhost",
                        };
                        let (pw, note) = libpq::pgpass(&file, host, &ports[0], &dbname, &user);
                        if !matches!(note, PassFile::Missing(_)) || st.get("passfile").is_some() {
                            tried.push(note.describe());
                        }
                        pw
                    }
                    None => None,
                }
            }
        };
        if let Some(p) = &password {
            c.password(p.as_bytes());
            keep("password", p);
        }

        let timeout = match st.get("connect_timeout") {
            Some(v) => secs("connect_timeout", v)?,
            None => DEFAULT_CONNECT_TIMEOUT as i64,
        };
        // libpq: zero or less waits forever, and 1 second is taken as 2.
        if timeout > 0 {
            c.connect_timeout(Duration::from_secs(timeout.max(2) as u64));
        }
        keep("connect_timeout", &timeout.to_string());
        let app = st.get("application_name").or(st.get("fallback_application_name")).map(str::to_string);
        let app = app.unwrap_or_else(tool_name);
        c.application_name(&app);
        keep("application_name", &app);
        if let Some(o) = st.get("options") {
            c.options(o);
            keep("options", o);
        }
        if let Some(v) = st.get("keepalives") {
            c.keepalives(secs("keepalives", v)? != 0);
        }
        if let Some(v) = st.get("keepalives_idle") {
            c.keepalives_idle(Duration::from_secs(secs("keepalives_idle", v)?.max(1) as u64));
        }
        if let Some(v) = st.get("keepalives_interval") {
            c.keepalives_interval(Duration::from_secs(secs("keepalives_interval", v)?.max(1) as u64));
        }
        if let Some(v) = st.get("keepalives_count") {
            c.keepalives_retries(secs("keepalives_count", v)?.max(1) as u32);
        }
        if let Some(v) = st.get("tcp_user_timeout") {
            c.tcp_user_timeout(Duration::from_millis(secs("tcp_user_timeout", v)?.max(0) as u64));
        }
        if let Some(v) = st.get("target_session_attrs") {
            c.target_session_attrs(match v {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                _ => return Err(unsupported("target_session_attrs", v)),
            });
            keep("target_session_attrs", v);
        }
        if let Some(v) = st.get("channel_binding") {
            c.channel_binding(match v {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                _ => return Err(bad_value("channel_binding", v, "not one of disable, prefer, require")),
            });
            keep("channel_binding", v);
        }
        if let Some(v) = st.get("load_balance_hosts") {
            c.load_balance_hosts(match v {
                "disable" => LoadBalanceHosts::Disable,
                "random" => LoadBalanceHosts::Random,
                _ => return Err(bad_value("load_balance_hosts", v, "not one of disable, random")),
            });
            keep("load_balance_hosts", v);
        }

        let root_setting = st.get("sslrootcert");
        let tls = match st.get("sslmode") {
            Some(m) => parse_sslmode(m)?,
            // libpq 16: sslrootcert=system makes verify-full the default.
            None if root_setting == Some("system") => TlsMode::VerifyFull,
            None => TlsMode::Prefer,
        };
        if root_setting == Some("system") && tls != TlsMode::VerifyFull && tls != TlsMode::Disable {
            return Err(Error::Usage(format!(
                "weak sslmode '{}' may not be used with sslrootcert=system (use verify-full)",
                tls.name()
            )));
        }
        keep("sslmode", tls.name());
        let mut target = Target {
            config: c,
            tls,
            root_cert: None,
            client_cert: None,
            ssl_password: st.get("sslpassword").map(str::to_string),
            sni: st.get("sslsni") != Some("0"),
            resolved,
            tried,
        };
        if tls != TlsMode::Disable {
            target.tls_files(&st, home.as_deref())?;
        }
        Ok(target)
    }

    /// libpq's TLS files: the root certificate (`sslrootcert`, else ~/.postgresql/root.crt,
    /// which when present is verified against even under prefer and require) and the client
    /// certificate (`sslcert`/`sslkey`, else ~/.postgresql/postgresql.crt and .key, sent when
    /// the certificate file exists).
    fn tls_files(&mut self, st: &Settings, home: Option<&Path>) -> Result<()> {
        let dot = |f: &str| home.map(|h| h.join(".postgresql").join(f));
        let root = st.get("sslrootcert").map(PathBuf::from).or_else(|| dot("root.crt"));
        match root {
            Some(p) if p.as_os_str() == "system" => self.root_cert = Some("system".into()),
            Some(p) if p.exists() => {
                self.tried.push(format!("server certificate checked against {}", p.display()));
                self.root_cert = Some(p.display().to_string());
            }
            other if matches!(self.tls, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
                let shown =
                    other.map(|p| format!("'{}'", p.display())).unwrap_or_else(|| "~/.postgresql/root.crt".into());
                return Err(Error::Usage(format!(
                    "root certificate file {shown} does not exist: give the file (sslrootcert), use the system's \
                     trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification"
                )));
            }
            _ => {}
        }
        if let Some(r) = &self.root_cert {
            self.resolved.push(("sslrootcert", r.clone()));
        }
        let Some(cert) = st.get("sslcert").map(PathBuf::from).or_else(|| dot("postgresql.crt")) else {
            return Ok(());
        };
        if !cert.is_file() {
            return Ok(());
        }
        let key = st.get("sslkey").map(PathBuf::from).or_else(|| dot("postgresql.key"));
        let Some(key) = key.filter(|k| k.exists()) else {
            return Err(Error::Usage(format!(
                "client certificate '{}' present, but not its private key file (sslkey)",
                cert.display()
            )));
        };
        check_key_mode(&key)?;
        self.tried.push(format!("client certificate {}", cert.display()));
        self.resolved.push(("sslcert", cert.display().to_string()));
        self.resolved.push(("sslkey", key.display().to_string()));
        self.client_cert = Some((cert, key));
        Ok(())
    }

    /// `user@host:port/db`, never the password: for logs, errors and `_migration_runs`.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => match c.get_hostaddrs().first() {
                Some(a) => a.to_string(),
                None => "localhost".into(),
            },
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("?");
        let db = c.get_dbname().unwrap_or(user);
        format!("{user}@{host}:{port}/{db}")
    }

    /// Where the settings came from, e.g. `DATABASE_URL, PGUSER, password from /home/u/.pgpass line 2`.
    pub fn sources(&self) -> String {
        if self.tried.is_empty() {
            "libpq's defaults".into()
        } else {
            self.tried.join(", ")
        }
    }

    /// Gives a child program (pg_dump, pg_restore) this connection through the libpq
    /// variables, never its command line; whatever the caller's environment held is removed.
    pub fn child_env(&self, cmd: &mut std::process::Command) {
        clear_libpq_env(cmd);
        for (k, v) in &self.resolved {
            if let Some(var) = libpq::env_var(k) {
                cmd.env(var, v);
            }
        }
    }

    /// Connects, with TLS as the sslmode asks.
    pub fn connect(&self) -> Result<Client> {
        let mut config = self.config.clone();
        if self.tls == TlsMode::Disable {
            config.ssl_mode(SslMode::Disable);
            return self.within_timeout(move || config.connect(postgres::NoTls));
        }
        let tls = self.tls_connector()?;
        config.ssl_mode(if self.tls == TlsMode::Prefer { SslMode::Prefer } else { SslMode::Require });
        self.within_timeout(move || config.connect(tls))
    }

    /// The TLS setup for these settings, made once per process and shared by its connections.
    fn tls_connector(&self) -> Result<tls::MakeTls> {
        type Built = Vec<(String, tls::MakeTls)>;
        static BUILT: std::sync::Mutex<Built> = std::sync::Mutex::new(Vec::new());
        let key = format!("{:?}", (self.tls, self.sni, &self.root_cert, &self.client_cert, &self.ssl_password));
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = built.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        // libpq: prefer and require encrypt, and verify the chain only when there is a root
        // certificate file; verify-ca the chain; verify-full the chain and the host name.
        let verify = match (self.tls, &self.root_cert) {
            (TlsMode::VerifyFull, _) => tls::Verify::ChainAndHost,
            (TlsMode::Prefer | TlsMode::Require, None) => tls::Verify::Nothing,
            _ => tls::Verify::Chain,
        };
        let roots = match self.root_cert.as_deref() {
            None => tls::Roots::None,
            Some("system") => tls::Roots::System,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| Error::io(format!("read sslrootcert '{path}'"), e))?;
                tls::Roots::Certificates(pem_certificates(&pem, || format!("sslrootcert '{path}'"))?)
            }
        };
        let identity = match &self.client_cert {
            Some((cert, key)) => Some(client_identity(cert, key, self.ssl_password.as_deref())?),
            None => None,
        };
        // Under prefer and require a root file checks the server only because it exists
        // (~/.postgresql/root.crt for another server, say): say so, and what to do.
        let hint = match (self.tls, self.root_cert.as_deref()) {
            (TlsMode::Prefer | TlsMode::Require, Some(root)) => Some(format!(
                "sslmode={} checks the server against {root} because that file exists, as libpq does: give this \
                 server's CA as sslrootcert{}",
                self.tls.name(),
                match self.tls {
                    TlsMode::Prefer => ", or sslmode=disable to connect without TLS, which psql falls back to here",
                    _ => "",
                }
            )),
            _ => None,
        };
        let made = tls::MakeTls::new(roots, verify, self.sni, identity, hint)
            .map_err(|e| Error::Unavailable(format!("TLS setup: {e}")))?;
        built.push((key, made.clone()));
        Ok(made)
    }

    /// libpq's connect_timeout bounds the whole start of a session (TCP, TLS, authentication)
    /// for each host; the postgres crate bounds only the TCP connect, so a server that
    /// accepts and never answers would hang us. The connect runs on a thread we stop waiting for.
    fn within_timeout(
        &self,
        connect: impl FnOnce() -> std::result::Result<Client, postgres::Error> + Send + 'static,
    ) -> Result<Client> {
        let Some(per_host) = self.config.get_connect_timeout().copied() else {
            return connect().map_err(|e| connect_error(self, e));
        };
        let hosts = self.config.get_hosts().len().max(self.config.get_hostaddrs().len()).max(1) as u32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(connect());
        });
        match rx.recv_timeout(per_host * hosts + Duration::from_millis(200)) {
            Ok(r) => r.map_err(|e| connect_error(self, e)),
            Err(_) => Err(Error::Unavailable(format!(
                "connect to {}: timeout expired after {}s (connect_timeout; tried: {})",
                self.describe(),
                (per_host * hosts).as_secs(),
                self.sources()
            ))),
        }
    }
}

/// Every environment variable libpq reads for a connection.
pub fn libpq_env_vars() -> impl Iterator<Item = &'static str> {
    libpq::env_vars()
}

/// Removes every libpq variable from a child's environment.
pub fn clear_libpq_env(cmd: &mut std::process::Command) {
    for var in libpq::env_vars() {
        cmd.env_remove(var);
    }
}

fn describe_source(s: Option<&Source>) -> String {
    match s {
        Some(Source::Conn(name)) => format!("the connection string ({name})"),
        Some(Source::Service) => "the service file".into(),
        Some(Source::Env(var)) => var.to_string(),
        None => "?".into(),
    }
}

/// Options whose absence would weaken what the user asked for: refused, never ignored.
fn refuse_unsupported(st: &Settings) -> Result<()> {
    for (k, v, _) in st.iter() {
        let ok = match k {
            "sslcrl" | "sslcrldir" | "require_auth" | "requirepeer" | "replication" | "ssl_max_protocol_version" => {
                false
            }
            "gssencmode" => v != "require",
            "sslnegotiation" => v == "postgres",
            "ssl_min_protocol_version" => v.eq_ignore_ascii_case("TLSv1.2"),
            "client_encoding" => {
                let e = v.to_ascii_lowercase().replace(['-', '_'], "");
                e == "utf8" || e == "auto"
            }
            _ => true,
        };
        if !ok {
            return Err(unsupported(k, v));
        }
    }
    Ok(())
}

/// libpq's rule for a private key file: not readable by group or other (0640 allowed when
/// root owns it).
fn check_key_mode(key: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(key).map_err(|e| Error::io(format!("read sslkey '{}'", key.display()), e))?;
    if !m.is_file() {
        return Err(Error::Usage(format!("private key file '{}' is not a regular file", key.display())));
    }
    let open = if m.uid() == 0 { m.mode() & 0o037 != 0 } else { m.mode() & 0o077 != 0 };
    if open {
        return Err(Error::Usage(format!(
            "private key file '{}' has group or world access; file must have permissions u=rw (0600) or less \
             if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root",
            key.display()
        )));
    }
    Ok(())
}

/// The client certificate chain and its key (PKCS#1 or PKCS#8, encrypted with sslpassword).
fn client_identity(cert: &Path, key: &Path, password: Option<&str>) -> Result<tls::Identity> {
    let read =
        |p: &Path, what: &str| std::fs::read(p).map_err(|e| Error::io(format!("read {what} '{}'", p.display()), e));
    let cert_pem = read(cert, "sslcert")?;
    let key_pem = read(key, "sslkey")?;
    // An empty passphrase rather than none: openssl would otherwise prompt on the terminal.
    let pkey = openssl::pkey::PKey::private_key_from_pem_passphrase(&key_pem, password.unwrap_or("").as_bytes())
        .map_err(|_| {
            let hint = if password.is_some() { "wrong sslpassword, or" } else { "encrypted (give sslpassword), or" };
            Error::Usage(format!("private key file '{}': cannot read it ({hint} not a PEM private key)", key.display()))
        })?;
    // The certificate first, then the chain libpq sends after it.
    let chain = pem_certificates(&cert_pem, || format!("client certificate '{}'", cert.display()))?;
    if !chain[0].public_key().is_ok_and(|public| public.public_eq(&pkey)) {
        return Err(Error::Usage(format!(
            "client certificate '{}' and private key '{}' do not belong together",
            cert.display(),
            key.display()
        )));
    }
    Ok(tls::Identity { chain, key: pkey })
}

/// The certificates of a PEM file, at least one; `what` names the file for the error.
fn pem_certificates(pem: &[u8], what: impl Fn() -> String) -> Result<Vec<openssl::x509::X509>> {
    openssl::x509::X509::stack_from_pem(pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::Usage(format!("{}: not PEM certificates", what())))
}

fn connect_error(t: &Target, e: postgres::Error) -> Error {
    let cause = pg_cause(&e);
    let msg = format!("connect to {}: {} (tried: {})", t.describe(), cause, t.sources());
    match e.as_db_error().map(|d| d.code().code()) {
        Some(c) if c.starts_with("3D") => Error::NoInput(msg),
        _ => Error::Unavailable(msg),
    }
}

/// A postgres error's cause in one line: the server's message, or the client's.
pub fn pg_cause(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(" (");
            s.push_str(d);
            s.push(')');
        }
        return s.replace('\n', " ");
    }
    crate::error::chain(e).replace('\n', " ")
}

/// Classifies a postgres error by SQLSTATE into our exit classes, with `what` as context.
pub fn pg_error(what: impl std::fmt::Display, e: postgres::Error) -> Error {
    let msg = format!("{what}: {}", pg_cause(&e));
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection broke or the server went away.
        return Error::Unavailable(msg);
    };
    let code = db.code().code();
    match &code[..2] {
        "08" | "57" | "28" => Error::Unavailable(msg),
        // The server's disk is full: retrying will not help until space is made.
        "53" if code == "53100" => Error::Io(format!("{msg} (the PostgreSQL server's disk is full)")),
        "40" | "53" => Error::TempFail(msg),
        "42" if code == "42501" => Error::NoPermission(msg),
        "55" if code == "55P03" => Error::TempFail(msg),
        "22" | "23" => Error::Data(msg),
        "42" if code == "42P01" || code == "42704" => Error::NoInput(msg),
        "3D" | "3F" => Error::NoInput(msg),
        _ => Error::Io(msg),
    }
}

/// Quotes an identifier for SQL (always, so reserved words and odd names are safe).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A table resolved in the catalog: its oid and its properly quoted, schema-qualified name.
#[derive(Debug, Clone)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` ordinary, `p` partitioned, `v` view, `f` foreign, `m` materialized view.
    pub kind: char,
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// How the user would write it: `name`, or `schema.name` outside public.
    pub fn display(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }

    /// Looks `name` up as SQL would (`schema.table`, quotes for mixed case); missing: exit 66.
    pub fn resolve(client: &mut impl postgres::GenericClient, name: &str) -> Result<Table> {
        let row = client
            .query_opt(
                "SELECT c.oid, n.nspname, c.relname, c.relkind::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
                &[&name],
            )
            .map_err(|e| match e.as_db_error().map(|d| d.code().code()) {
                // to_regclass raises on syntax errors in the name (e.g. `a.b.c.d`).
                Some(_) => Error::Usage(format!("'{name}' is not a table name: {}", pg_cause(&e))),
                None => pg_error(format!("look up table '{name}'"), e),
            })?;
        let Some(row) = row else {
            return Err(Error::NoInput(format!("table '{name}' does not exist")));
        };
        let kind: String = row.get(3);
        Ok(Table {
            oid: row.get::<_, postgres::types::Oid>(0),
            schema: row.get(1),
            name: row.get(2),
            kind: kind.chars().next().unwrap_or('r'),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(db: &str, vars: &[(&str, &str)]) -> Result<Target> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Target::resolve_with(Some(db), &env)
    }

    #[test]
    fn urls_and_keyword_strings() {
        let t =
            resolve("postgres://app:s3cret@db.example.com:6543/shop?sslmode=require&application_name=x", &[]).unwrap();
        assert_eq!(t.tls, TlsMode::Require);
        assert_eq!(t.describe(), "app@db.example.com:6543/shop");
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert!(!t.describe().contains("s3cret") && !t.sources().contains("s3cret"));
        let t = resolve("host=localhost port=5433 user=u password='p w' dbname=d sslmode=require", &[]).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"p w"[..]));
        assert_eq!(t.describe(), "u@localhost:5433/d");
        assert!(resolve("postgres://h/d?sslmode=sometimes", &[]).is_err());
    }

    #[test]
    fn ranks_and_defaults() {
        let env =
            [("PGCONNECT_TIMEOUT", "30"), ("PGUSER", "envuser"), ("PGAPPNAME", "envapp"), ("HOME", "/nonexistent")];
        let t = resolve("postgres://h/d?connect_timeout=3", &env).unwrap();
        assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(t.config.get_user(), Some("envuser"));
        assert_eq!(t.config.get_application_name(), Some("envapp"));
        let t = resolve("postgres://h/d", &[("PGCONNECT_TIMEOUT", "30"), ("HOME", "/nonexistent")]).unwrap();
        assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(t.config.get_application_name(), Some(tool_name().as_str()));
        let t = resolve("postgres://h/d?connect_timeout=0", &[]).unwrap();
        assert_eq!(t.config.get_connect_timeout(), None);
        let t = resolve("host=h connect_timeout=1", &[]).unwrap();
        assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        let t = resolve("host=h", &[("HOME", "/nonexistent")]).unwrap();
        assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(DEFAULT_CONNECT_TIMEOUT)));
        assert_eq!(t.config.get_dbname(), t.config.get_user());
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let e = resolve("host=h sslmode=verify-full", &[("HOME", "/nonexistent")]).err().expect("refused");
        assert!(e.message().contains("root certificate file"), "{}", e.message());
        let t = resolve("host=h sslrootcert=system", &[]).unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert!(resolve("host=h sslrootcert=system sslmode=require", &[]).is_err());
        // prefer and require do not verify when the file is missing.
        assert!(resolve("host=h sslmode=require sslrootcert=/nonexistent.crt", &[]).unwrap().root_cert.is_none());
    }

    #[test]
    fn unsupported_options_are_refused() {
        for s in [
            "host=h sslcrl=/x",
            "host=h gssencmode=require",
            "host=h client_encoding=LATIN1",
            "host=h require_auth=md5",
        ] {
            assert_eq!(resolve(s, &[]).err().expect("refused").exit_code(), 64, "{s}");
        }
        assert!(resolve("host=h client_encoding=UTF8 gssencmode=prefer", &[]).is_ok());
    }

    #[test]
    fn parse_errors_do_not_echo_the_string() {
        let Err(e) = resolve("postgres://u:hunter2@h:notaport/d", &[]) else { panic!("parsed") };
        assert!(!e.message().contains("hunter2"), "{}", e.message());
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
