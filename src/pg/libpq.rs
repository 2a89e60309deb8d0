//! libpq's conventions for finding connection settings, so that what works for psql works
//! for us: connection strings (URL and keyword forms), service files, the PG* variables, the
//! password file and the files under ~/.postgresql. Reads only; never prints a value.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a setting came from: named in connection errors (values never are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The connection string, given as `--db` or `DATABASE_URL` (the name).
    Conn(&'static str),
    /// The section of the service file.
    Service,
    /// A libpq environment variable.
    Env(&'static str),
}

/// The libpq keywords pgferry accepts, each with the environment variable libpq reads for it.
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("service", Some("PGSERVICE")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("sslmode", Some("PGSSLMODE")),
    ("requiressl", Some("PGREQUIRESSL")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslpassword", None),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslcompression", None),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("replication", None),
];

/// Every environment variable libpq reads for a connection (children get ours, not these).
pub fn env_vars() -> impl Iterator<Item = &'static str> {
    KEYWORDS.iter().filter_map(|(_, e)| *e).chain(["PGSERVICEFILE", "PGSYSCONFDIR"])
}

/// The environment variable libpq reads for `keyword`.
pub fn env_var(keyword: &str) -> Option<&'static str> {
    KEYWORDS.iter().find(|(k, _)| *k == keyword).and_then(|(_, e)| *e)
}

fn keyword(k: &str) -> Option<&'static str> {
    KEYWORDS.iter().find(|(name, _)| *name == k).map(|(name, _)| *name)
}

/// The environment as the resolver sees it (a function, so unit tests need not touch the process's).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment; empty values count as unset, as in libpq.
pub fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|s| !s.is_empty())
}

/// Connection settings gathered as libpq gathers them: the connection string first, then the
/// service's section, then the environment (each fills only what is still unset).
#[derive(Debug, Default)]
pub struct Settings {
    vals: BTreeMap<&'static str, (String, Source)>,
    /// The service used and the file its section came from.
    pub service: Option<(String, PathBuf)>,
}

impl Settings {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vals.get(k).map(|(v, _)| v.as_str())
    }

    pub fn source(&self, k: &str) -> Option<&Source> {
        self.vals.get(k).map(|(_, s)| s)
    }

    /// Every setting with a value (values are for building the connection, never for output).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str, &Source)> {
        self.vals.iter().map(|(k, (v, s))| (*k, v.as_str(), s))
    }

    /// The environment variables that supplied a value, in keyword order.
    pub fn env_used(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self
            .vals
            .values()
            .filter_map(|(_, s)| match s {
                Source::Env(e) => Some(*e),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn fill(&mut self, k: &'static str, v: String, s: Source) {
        self.vals.entry(k).or_insert((v, s));
    }
}

/// Reads the settings: `conn` is the connection string and the name of where it came from.
pub fn gather(conn: Option<(&'static str, &str)>, env: Env) -> Result<Settings> {
    let mut st = Settings::default();
    if let Some((name, s)) = conn {
        for (k, v) in parse_conninfo(s)? {
            // A later duplicate wins, as in libpq.
            st.vals.insert(k, (v, Source::Conn(name)));
        }
    }
    let service = st.get("service").map(str::to_string).or_else(|| env("PGSERVICE"));
    if let Some(name) = service {
        let (file, section) = find_service(&name, env)?;
        for (k, v) in section {
            st.fill(k, v, Source::Service);
        }
        st.service = Some((name, file));
    }
    for (k, var) in KEYWORDS {
        if let Some(var) = var {
            if let Some(v) = env(var) {
                st.fill(k, v, Source::Env(var));
            }
        }
    }
    // libpq's deprecated PGREQUIRESSL=1 means sslmode=require when nothing set sslmode.
    if st.get("sslmode").is_none() && st.get("requiressl") == Some("1") {
        let src = st.source("requiressl").cloned().unwrap_or(Source::Env("PGREQUIRESSL"));
        st.fill("sslmode", "require".into(), src);
    }
    Ok(st)
}

/// Parses a URL (`postgres://…`) or a `key=value` connection string into keyword/value pairs.
pub fn parse_conninfo(s: &str) -> Result<Vec<(&'static str, String)>> {
    let pairs =
        if s.starts_with("postgres://") || s.starts_with("postgresql://") { parse_url(s)? } else { split_kv(s)? };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let k = if k == "ssl" && v == "true" { "sslmode".to_string() } else { k };
            let v = if k == "sslmode" && v == "true" { "require".to_string() } else { v };
            match keyword(&k) {
                Some(kw) => Ok((kw, v)),
                None => Err(Error::Usage(format!("connection string: invalid connection option '{k}'"))),
            }
        })
        .collect()
}

/// libpq's URL form: `postgres[ql]://[user[:password]@][host[:port][,…]][/dbname][?k=v&…]`.
fn parse_url(s: &str) -> Result<Vec<(String, String)>> {
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = vec![];
    // The user part ends at the first '@' before any '/', as libpq reads it.
    let rest = match rest.find(['@', '/']) {
        Some(i) if rest.as_bytes()[i] == b'@' => {
            let (user, pass) = match rest[..i].split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (&rest[..i], None),
            };
            if !user.is_empty() {
                out.push(("user".into(), percent_decode(user)?));
            }
            if let Some(p) = pass {
                out.push(("password".into(), percent_decode(p)?));
            }
            &rest[i + 1..]
        }
        _ => rest,
    };
    let (hostspec, db) = match rest.split_once('/') {
        Some((h, d)) => (h, Some(d)),
        None => (rest, None),
    };
    if !hostspec.is_empty() {
        let (mut hosts, mut ports) = (vec![], vec![]);
        for h in hostspec.split(',') {
            let (host, port) = if let Some(v6) = h.strip_prefix('[') {
                let Some((addr, after)) = v6.split_once(']') else {
                    return Err(Error::Usage("connection string: unterminated IPv6 address in the URL".into()));
                };
                (addr.to_string(), after.strip_prefix(':'))
            } else {
                match h.split_once(':') {
                    Some((host, port)) => (host.to_string(), Some(port)),
                    None => (h.to_string(), None),
                }
            };
            hosts.push(percent_decode(&host)?);
            ports.push(port.unwrap_or("").to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.push(("host".into(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".into(), ports.join(",")));
        }
    }
    if let Some(db) = db.filter(|d| !d.is_empty()) {
        out.push(("dbname".into(), percent_decode(db)?));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Error::Usage(format!(
                "connection string: URL parameter '{}' has no value",
                percent_decode(pair)?
            )));
        };
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

/// Decodes as libpq does: a '%' not followed by two hex digits is refused (the crate would
/// keep it as is), and the bytes must be UTF-8.
fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    if (0..b.len()).any(|i| b[i] == b'%' && !(hex(i + 1) && hex(i + 2))) {
        return Err(Error::Usage("connection string: invalid percent-encoding in the URL".into()));
    }
    // libpq refuses an encoded NUL: no C string could carry it.
    if (0..b.len()).any(|i| b[i] == b'%' && b.get(i + 1) == Some(&b'0') && b.get(i + 2) == Some(&b'0')) {
        return Err(Error::Usage("connection string: forbidden value %00 in the URL".into()));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| Error::Usage("connection string: percent-encoding is not UTF-8".into()))
}

/// Splits `k=v k2='v 2'` into (key, unquoted value); backslash escapes as in libpq.
fn split_kv(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i == chars.len() || chars[i] != '=' {
            // Not echoed: a word without '=' may be a password pasted in the wrong place.
            return Err(Error::Usage("connection string: a word without '=' (expected key=value pairs)".into()));
        }
        i += 1;
        skip_ws(&mut i);
        let mut val = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(Error::Usage(format!("connection string: unterminated quote after '{key}='"))),
                    Some('\'') => break,
                    Some('\\') if i + 1 < chars.len() => i += 1,
                    _ => {}
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
        out.push((key, val));
    }
    Ok(out)
}

/// The home directory as libpq finds it: `$HOME`, else the password database's entry.
pub fn home(env: Env) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from).or_else(|| passwd_entry().map(|(_, dir)| dir))
}

/// The effective user's name, libpq's default for `user`.
pub fn os_user() -> Option<String> {
    passwd_entry().map(|(name, _)| name)
}

fn passwd_entry() -> Option<(String, PathBuf)> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into pw and buf (whose length we pass); result points
    // to pw or is null.
    let rc = unsafe { libc::getpwuid_r(libc::geteuid(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings inside buf.
    let (name, dir) = unsafe { (CStr::from_ptr(pw.pw_name), CStr::from_ptr(pw.pw_dir)) };
    Some((name.to_string_lossy().into_owned(), PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()))))
}

/// The section `name` of the first service file that has it: `PGSERVICEFILE` (else
/// `~/.pg_service.conf`), then `pg_service.conf` in `PGSYSCONFDIR` (else Debian's
/// /etc/postgresql-common).
fn find_service(name: &str, env: Env) -> Result<(PathBuf, Vec<(&'static str, String)>)> {
    let user_file = env("PGSERVICEFILE").map(PathBuf::from).or_else(|| home(env).map(|h| h.join(".pg_service.conf")));
    let sys_dir = env("PGSYSCONFDIR").unwrap_or_else(|| "/etc/postgresql-common".into());
    let sys_file = Path::new(&sys_dir).join("pg_service.conf");
    let mut looked = vec![];
    for file in user_file.into_iter().chain([sys_file]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                looked.push(file.display().to_string());
                continue;
            }
            Err(e) => return Err(Error::io(format!("read service file '{}'", file.display()), e)),
        };
        if let Some(section) = service_section(&text, name, &file)? {
            return Ok((file, section));
        }
        looked.push(file.display().to_string());
    }
    Err(Error::Usage(format!("definition of service '{name}' not found (looked in {})", looked.join(", "))))
}

/// The `[name]` section of a service file's text, or `None` when it has none.
fn service_section(text: &str, name: &str, file: &Path) -> Result<Option<Vec<(&'static str, String)>>> {
    let mut in_section = false;
    let mut found = None::<Vec<(&'static str, String)>>;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            in_section = sec.strip_suffix(']').map(str::trim) == Some(name);
            if in_section {
                found = Some(vec![]);
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let bad = |why: &str| Error::Usage(format!("service file '{}', line {}: {why}", file.display(), n + 1));
        let Some((k, v)) = line.split_once('=') else { return Err(bad("syntax error (expected key=value)")) };
        let k = k.trim();
        if k == "service" {
            return Err(bad("nested service specifications are not supported"));
        }
        let Some(kw) = keyword(k) else { return Err(bad(&format!("invalid connection option '{k}'"))) };
        if let Some(sec) = found.as_mut() {
            sec.push((kw, v.trim().to_string()));
        }
    }
    Ok(found)
}

/// What the password file said, for the message of a failed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassFile {
    /// No file at the path.
    Missing(PathBuf),
    /// Its line (1-based) matched; the password came from there.
    Matched(PathBuf, usize),
    /// No line matched.
    NoMatch(PathBuf),
    /// Not used: group or other can read it, or it is not a plain file (libpq's rule).
    Refused(PathBuf, &'static str),
}

impl PassFile {
    pub fn describe(&self) -> String {
        match self {
            PassFile::Missing(p) => format!("no password file at {}", p.display()),
            PassFile::Matched(p, n) => format!("password from {} line {n}", p.display()),
            PassFile::NoMatch(p) => format!("no line of {} matched", p.display()),
            PassFile::Refused(p, why) => format!("password file {} not used: {why}", p.display()),
        }
    }
}

/// Looks the password up in the password file as libpq does: the first line whose
/// `host:port:database:user` fields match (`*` matches anything, `\` escapes `:` and `\`).
/// A file group or other can read is refused, with libpq's warning on stderr.
pub fn pgpass(path: &Path, host: &str, port: &str, db: &str, user: &str) -> (Option<String>, PassFile) {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return (None, PassFile::Missing(path.to_path_buf())),
    };
    let tool = crate::pg::tool_name();
    if !meta.is_file() {
        eprintln!("{tool}: warning: password file '{}' is not a plain file", path.display());
        return (None, PassFile::Refused(path.to_path_buf(), "not a plain file"));
    }
    if meta.mode() & 0o077 != 0 {
        eprintln!(
            "{tool}: warning: password file '{}' has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return (None, PassFile::Refused(path.to_path_buf(), "group or other can read it"));
    }
    let Ok(text) = std::fs::read(path) else { return (None, PassFile::Missing(path.to_path_buf())) };
    let text = String::from_utf8_lossy(&text);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |f: &(String, bool), want: &str| f.1 || f.0 == want;
        if matches(&fields[0], host)
            && matches(&fields[1], port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return (Some(fields[4].0.clone()), PassFile::Matched(path.to_path_buf(), n + 1));
        }
    }
    (None, PassFile::NoMatch(path.to_path_buf()))
}

/// A pgpass line's fields, unescaped, each with "is a lone `*`"; the fifth holds the rest.
fn split_pgpass(line: &str) -> Vec<(String, bool)> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut star = true;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                star = false;
            }
            ':' if out.len() < 4 => {
                let lone = star && cur == "*";
                out.push((std::mem::take(&mut cur), lone));
                star = true;
            }
            _ => cur.push(c),
        }
    }
    out.push((cur, false));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(s: &str) -> Vec<(&'static str, String)> {
        parse_conninfo(s).unwrap_or_else(|e| panic!("{s}: {}", e.message()))
    }

    #[test]
    fn urls_as_libpq_reads_them() {
        let p = kv("postgresql://app:p%40ss:w@db.example.com:6543/shop?sslmode=verify-full&application_name=x");
        assert_eq!(
            p,
            vec![
                ("user", "app".into()),
                ("password", "p@ss:w".into()),
                ("host", "db.example.com".into()),
                ("port", "6543".into()),
                ("dbname", "shop".into()),
                ("sslmode", "verify-full".into()),
                ("application_name", "x".into()),
            ]
        );
        assert_eq!(kv("postgres://h1:5433,[::1]:5434,h3/d")[0], ("host", "h1,::1,h3".into()));
        assert_eq!(kv("postgres://h1:5433,[::1]:5434,h3/d")[1], ("port", "5433,5434,".into()));
        assert_eq!(kv("postgres://%2Fvar%2Frun%2Fpostgresql/d")[0], ("host", "/var/run/postgresql".into()));
        assert_eq!(kv("postgres:///d?service=prod"), vec![("dbname", "d".into()), ("service", "prod".into())]);
        assert_eq!(
            kv("postgres://h/d?ssl=true"),
            vec![("host", "h".into()), ("dbname", "d".into()), ("sslmode", "require".into())]
        );
        assert!(parse_conninfo("postgres://h/d?nosuch=1").is_err());
        assert!(parse_conninfo("postgres://u:pw%zz@h/d").is_err());
    }

    #[test]
    fn percent_decoding_is_as_strict_as_libpq() {
        assert_eq!(kv("postgres://u%3a%C3%A9%2541@h/d")[0], ("user", "u:é%41".into()));
        assert_eq!(kv("postgres://h/d?application_name=a%20b")[2], ("application_name", "a b".into()));
        // A '%' without two hex digits after it, anywhere: libpq refuses the URL.
        for bad in ["%", "%4", "pw%", "pw%4", "%+f", "%-1", "%g0", "%%41", "%41%"] {
            let e = parse_conninfo(&format!("postgres://u:{bad}@h/d")).unwrap_err();
            assert_eq!(e.message(), "connection string: invalid percent-encoding in the URL", "{bad}");
        }
        let e = parse_conninfo("postgres://h/%C3%28").unwrap_err();
        assert_eq!(e.message(), "connection string: percent-encoding is not UTF-8");
        let e = parse_conninfo("postgres://u:p%00w@h/d").unwrap_err();
        assert_eq!(e.message(), "connection string: forbidden value %00 in the URL");
    }

    #[test]
    fn keyword_strings() {
        assert_eq!(
            kv(r"host=localhost password='p w\'x' sslcert = /c.crt"),
            vec![("host", "localhost".into()), ("password", "p w'x".into()), ("sslcert", "/c.crt".into())]
        );
        assert!(parse_conninfo("host=h bogus=1").is_err());
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("password='open").is_err());
    }

    #[test]
    fn errors_never_echo_values() {
        for s in ["postgres://u:hunter2@h/d?x=hunter2", "password=hunter2 nope=hunter2", "password='hunter2"] {
            let e = parse_conninfo(s).unwrap_err();
            assert!(!e.message().contains("hunter2"), "{}", e.message());
            assert_eq!(e.exit_code(), 64);
        }
    }

    #[test]
    fn sources_rank_as_in_libpq() {
        let dir = std::env::temp_dir().join(format!("pgferry-libpq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svc = dir.join("services.conf");
        std::fs::write(&svc, "# comment\n[other]\nport=1\n[prod]\nhost = svc-host\nport=7000\nuser=svc-user\n")
            .unwrap();
        let svc_s = svc.display().to_string();
        let env = move |k: &str| match k {
            "PGSERVICEFILE" => Some(svc_s.clone()),
            "PGUSER" => Some("env-user".into()),
            "PGCONNECT_TIMEOUT" => Some("30".into()),
            "PGDATABASE" => Some("envdb".into()),
            _ => None,
        };
        let st = gather(Some(("--db", "postgres://url-host/?service=prod&connect_timeout=3")), &env).unwrap();
        assert_eq!(st.get("host"), Some("url-host"));
        assert_eq!(st.get("port"), Some("7000"));
        assert_eq!(st.source("port"), Some(&Source::Service));
        // The service beats the environment; the URL beats both.
        assert_eq!(st.get("user"), Some("svc-user"));
        assert_eq!(st.get("connect_timeout"), Some("3"));
        assert_eq!(st.get("dbname"), Some("envdb"));
        assert_eq!(st.env_used(), vec!["PGDATABASE"]);
        assert!(gather(Some(("--db", "service=missing")), &env).unwrap_err().message().contains("'missing' not found"));
        std::fs::write(&svc, "[prod]\nbogus=1\n").unwrap();
        assert!(gather(Some(("--db", "service=prod")), &env).unwrap_err().message().contains("line 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pgpass_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgferry-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pgpass");
        std::fs::write(&f, "# c\nother:*:*:*:no\nh\\:x:5432:*:u:a\\:b\\\\c\n*:*:shop:*:star\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(pgpass(&f, "h:x", "5432", "d", "u"), (Some("a:b\\c".into()), PassFile::Matched(f.clone(), 3)));
        assert_eq!(pgpass(&f, "any", "1", "shop", "u").0.as_deref(), Some("star"));
        assert_eq!(pgpass(&f, "any", "1", "d", "u"), (None, PassFile::NoMatch(f.clone())));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(pgpass(&f, "any", "1", "shop", "u"), (None, PassFile::Refused(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
