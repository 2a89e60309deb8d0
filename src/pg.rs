//! PostgreSQL connections as DESIGN.md says: `--db URL`, else `DATABASE_URL`, else the libpq
//! variables; TLS with libpq's sslmode meanings. Nothing here ever prints a password.

use crate::error::{Error, Result};
use postgres::config::{Host, SslMode};
use postgres::{Client, Config};

/// libpq's sslmode values (the postgres crate knows only three of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A resolved connection target: what to connect to, and how to name it without secrets.
pub struct Target {
    pub config: Config,
    pub tls: TlsMode,
    pub root_cert: Option<String>,
}

impl Target {
    /// Resolves `--db`, then `DATABASE_URL`, then the libpq variables.
    pub fn resolve(db: Option<&str>) -> Result<Target> {
        let from_env = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
        let conn = db.map(str::to_string).or(from_env);
        let mut target = match conn {
            Some(s) => parse_conninfo(&s)?,
            None => Target { config: Config::new(), tls: TlsMode::Prefer, root_cert: None },
        };
        target.apply_libpq_env()?;
        Ok(target)
    }

    /// Fills what the connection string left out from PGHOST, PGPORT, ... as libpq does.
    fn apply_libpq_env(&mut self) -> Result<()> {
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let c = &mut self.config;
        if c.get_hosts().is_empty() {
            match env("PGHOST") {
                Some(h) => {
                    for h in h.split(',') {
                        c.host(h);
                    }
                }
                None => {
                    // libpq's default on Debian: the Unix socket directory.
                    c.host_path("/var/run/postgresql");
                }
            }
        }
        if c.get_ports().is_empty() {
            if let Some(p) = env("PGPORT") {
                let port = p.parse().map_err(|_| Error::Usage(format!("PGPORT '{p}' is not a port number")))?;
                c.port(port);
            }
        }
        if c.get_user().is_none() {
            let user = env("PGUSER").or_else(|| env("USER")).unwrap_or_else(|| "postgres".into());
            c.user(&user);
        }
        if c.get_password().is_none() {
            if let Some(p) = env("PGPASSWORD") {
                c.password(p);
            }
        }
        if c.get_dbname().is_none() {
            if let Some(d) = env("PGDATABASE") {
                c.dbname(&d);
            }
        }
        if c.get_application_name().is_none() {
            c.application_name(&env("PGAPPNAME").unwrap_or_else(|| "pgferry".into()));
        }
        c.connect_timeout(std::time::Duration::from_secs(
            env("PGCONNECT_TIMEOUT").and_then(|s| s.parse().ok()).unwrap_or(10),
        ));
        if self.root_cert.is_none() {
            self.root_cert = env("PGSSLROOTCERT");
        }
        if let Some(m) = env("PGSSLMODE") {
            if !self.explicit_tls() {
                self.tls = parse_sslmode(&m)?;
            }
        }
        Ok(())
    }

    fn explicit_tls(&self) -> bool {
        // parse_conninfo records an explicit sslmode by leaving Prefer only when unset;
        // an explicit "prefer" and no sslmode behave the same, so this is exact enough.
        self.tls != TlsMode::Prefer
    }

    /// `user@host:port/db`, never the password: for logs, errors and `_migration_runs`.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("?");
        let db = c.get_dbname().unwrap_or(user);
        format!("{user}@{host}:{port}/{db}")
    }

    /// Connects, with TLS as the sslmode asks.
    pub fn connect(&self) -> Result<Client> {
        let mut config = self.config.clone();
        let unavailable = |e: postgres::Error| connect_error(self, e);
        if self.tls == TlsMode::Disable {
            config.ssl_mode(SslMode::Disable);
            return config.connect(postgres::NoTls).map_err(unavailable);
        }
        let mut b = native_tls::TlsConnector::builder();
        match self.tls {
            // libpq: prefer and require encrypt but do not verify (unless a root cert is given).
            TlsMode::Prefer | TlsMode::Require if self.root_cert.is_none() => {
                b.danger_accept_invalid_certs(true).danger_accept_invalid_hostnames(true);
            }
            TlsMode::Prefer | TlsMode::Require | TlsMode::VerifyCa => {
                b.danger_accept_invalid_hostnames(true);
            }
            _ => {}
        }
        // The system CA store costs ~0.1 s to load: skip it when nothing will be verified
        // against it (no verification, or libpq's sslrootcert, which replaces the defaults).
        let verifies = matches!(self.tls, TlsMode::VerifyCa | TlsMode::VerifyFull);
        if !verifies || self.root_cert.is_some() {
            b.disable_built_in_roots(true);
        }
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read(path).map_err(|e| Error::io(format!("read sslrootcert '{path}'"), e))?;
            let certs = native_tls::Certificate::from_pem(&pem)
                .map_err(|e| Error::Usage(format!("sslrootcert '{path}': {e}")))?;
            b.add_root_certificate(certs);
        }
        let connector = b.build().map_err(|e| Error::Unavailable(format!("TLS setup: {e}")))?;
        config.ssl_mode(if self.tls == TlsMode::Prefer { SslMode::Prefer } else { SslMode::Require });
        config.connect(postgres_native_tls::MakeTlsConnector::new(connector)).map_err(unavailable)
    }
}

fn connect_error(t: &Target, e: postgres::Error) -> Error {
    let cause = pg_cause(&e);
    let msg = format!("connect to {}: {}", t.describe(), cause);
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
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.replace('\n', " ")
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
        "40" | "53" => Error::TempFail(msg),
        "55" if code == "55P03" => Error::TempFail(msg),
        "22" | "23" => Error::Data(msg),
        "42" if code == "42P01" || code == "42704" => Error::NoInput(msg),
        "3D" | "3F" => Error::NoInput(msg),
        _ => Error::Io(msg),
    }
}

fn parse_sslmode(v: &str) -> Result<TlsMode> {
    Ok(match v {
        "disable" | "allow" => TlsMode::Disable,
        "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        _ => {
            return Err(Error::Usage(format!(
                "sslmode '{v}' is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    })
}

/// Parses a URL (`postgres://…`) or a `key=value` connection string. The TLS options the
/// postgres crate does not know (verify-ca, verify-full, sslrootcert) are taken out first.
pub fn parse_conninfo(s: &str) -> Result<Target> {
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut take = |k: &str, v: &str| -> Result<bool> {
        match k {
            "sslmode" => {
                tls = parse_sslmode(v)?;
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(v.to_string());
                Ok(true)
            }
            // Client certificates and CRLs are not supported; say so rather than ignore.
            "sslcert" | "sslkey" | "sslcrl" => {
                Err(Error::Usage(format!("connection option '{k}' is not supported by pgferry")))
            }
            _ => Ok(false),
        }
    };
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        match s.split_once('?') {
            Some((base, query)) => {
                let mut kept = vec![];
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => s.to_string(),
        }
    } else {
        let mut kept = vec![];
        for (k, v, raw) in split_kv(s)? {
            if !take(&k, &v)? {
                kept.push(raw);
            }
        }
        kept.join(" ")
    };
    let config: Config = rest.parse().map_err(|e: postgres::Error| {
        Error::Usage(format!("cannot read the connection string: {}", redact_cause(&e)))
    })?;
    Ok(Target { config, tls, root_cert })
}

/// The postgres crate's parse errors name options, never values; keep only the first line.
fn redact_cause(e: &postgres::Error) -> String {
    let mut s = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        s = format!("{s}: {src}");
    }
    s.lines().next().unwrap_or("").to_string()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Splits `k=v k2='v 2'` into (key, unquoted value, raw text of the pair).
fn split_kv(s: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = vec![];
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() || chars[i] != '=' {
            return Err(Error::Usage(format!("cannot read the connection string: '{key}' has no value")));
        }
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                val.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                val.push(chars[i]);
                i += 1;
            }
        }
        let raw: String = chars[start..i.min(chars.len())].iter().collect();
        out.push((key, val, raw));
    }
    Ok(out)
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

    #[test]
    fn urls_and_keyword_strings() {
        let t = parse_conninfo(
            "postgres://app:s3cret@db.example.com:6543/shop?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(t.describe(), "app@db.example.com:6543/shop");
        assert!(!t.describe().contains("s3cret"));
        let t = parse_conninfo("host=localhost port=5433 user=u password='p w' dbname=d sslmode=require").unwrap();
        assert_eq!(t.tls, TlsMode::Require);
        assert_eq!(t.config.get_password(), Some(&b"p w"[..]));
        assert_eq!(t.describe(), "u@localhost:5433/d");
        assert!(parse_conninfo("postgres://h/d?sslmode=sometimes").is_err());
    }

    #[test]
    fn parse_errors_do_not_echo_the_string() {
        let Err(e) = parse_conninfo("postgres://u:hunter2@h:notaport/d") else { panic!("parsed") };
        assert!(!e.message().contains("hunter2"), "{}", e.message());
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
