//! Firestore over its REST API v1, read-only: connection and credentials, runQuery paging
//! with cursors at one read time, retries with jittered backoff, the count aggregation, and
//! the conversion of Firestore values to stream values (docs/stream.md section 3).
//!
//! Only `runQuery` and `runAggregationQuery` are called: nothing here can write.

use crate::cli;
use crate::error::{Error, Result};
use crate::gauth;
use crate::stream;
use crate::timefmt;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Google's public endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://firestore.googleapis.com";
/// The audience of a self-signed service-account JWT for Firestore.
const JWT_AUDIENCE: &str = "https://firestore.googleapis.com/";
/// The environment variable an access token is read from when no option names another.
pub const TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";
/// Access tokens from a command or a key are renewed after this long (they live an hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

// ---------------------------------------------------------------- connecting

/// What the command line said about the connection; the environment fills the rest.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub project: Option<String>,
    pub database: Option<String>,
    pub endpoint: Option<String>,
    pub token_env: Option<String>,
    pub token_command: Option<String>,
    pub credentials: Option<String>,
    pub retry: Retry,
}

impl ConnectOptions {
    /// The `Connection:` options of fs-export's USAGE (count-check takes the same), with
    /// `--retries N` and `--backoff MS`.
    pub fn from_args(args: &mut pico_args::Arguments) -> Result<ConnectOptions> {
        let d = Retry::default();
        Ok(ConnectOptions {
            project: cli::opt(args, "--project")?,
            database: cli::opt(args, "--database")?,
            endpoint: cli::opt(args, "--endpoint")?,
            token_env: cli::opt(args, "--token-env")?,
            token_command: cli::opt(args, "--token-command")?,
            credentials: cli::opt(args, "--credentials")?,
            retry: Retry {
                attempts: cli::number(args, "--retries", "a number of attempts, at least 1", |n| *n >= 1)?
                    .unwrap_or(d.attempts),
                base: cli::millis(args, "--backoff")?.unwrap_or(d.base),
                ..d
            },
        })
    }
}

/// Bounded retries with jittered exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per request (1 = no retry), counted since the last document received.
    pub attempts: u32,
    /// The first delay; doubled per attempt up to `max_delay`, then jittered to 50-100%.
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 6, base: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

impl Retry {
    /// The delay before retry number `n` (1-based), at least what the server asked for.
    pub fn delay(&self, n: u32, server: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << (n - 1).min(20)).min(self.max_delay);
        let mut r = [0u8; 2];
        let frac = match openssl::rand::rand_bytes(&mut r) {
            Ok(()) => u16::from_le_bytes(r) as f64 / u16::MAX as f64,
            Err(_) => 1.0,
        };
        let d = exp.mul_f64(0.5 + 0.5 * frac);
        match server {
            Some(s) => d.max(s.min(Duration::from_secs(60))),
            None => d,
        }
    }
}

/// How requests are authorized.
enum Auth {
    /// The emulator: `Bearer owner` (full access, no rules).
    Emulator,
    /// A token given once (environment variable).
    Static { token: String, source: String },
    /// A token printed by a command, run again when it ages or is refused.
    Command { command: String, cached: Option<(String, Instant)> },
    /// A service-account key, signing its own short-lived JWT.
    ServiceAccount { key: ServiceAccountKey, file: String, cached: Option<(String, Instant)> },
    /// Application Default Credentials: a user's login or the metadata server (src/gauth.rs).
    Google { source: gauth::Source, cached: Option<(String, Instant, Duration)> },
}

/// The parts of a service-account key file we use.
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    pub private_key: String,
    pub project_id: Option<String>,
}

impl Auth {
    fn header(&mut self) -> Result<String> {
        match self {
            Auth::Emulator => Ok("Bearer owner".into()),
            Auth::Static { token, .. } => Ok(format!("Bearer {token}")),
            Auth::Command { command, cached } => {
                if let Some((t, at)) = cached {
                    if at.elapsed() < TOKEN_LIFETIME {
                        return Ok(format!("Bearer {t}"));
                    }
                }
                let t = run_token_command(command)?;
                *cached = Some((t.clone(), Instant::now()));
                Ok(format!("Bearer {t}"))
            }
            Auth::ServiceAccount { key, file, cached } => {
                if let Some((t, at)) = cached {
                    if at.elapsed() < TOKEN_LIFETIME {
                        return Ok(format!("Bearer {t}"));
                    }
                }
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let t = sign_jwt(key, now).map_err(|e| e.context(format!("credentials '{file}'")))?;
                *cached = Some((t.clone(), Instant::now()));
                Ok(format!("Bearer {t}"))
            }
            Auth::Google { source, cached } => {
                if let Some((t, at, life)) = cached {
                    if at.elapsed() < *life {
                        return Ok(format!("Bearer {t}"));
                    }
                }
                let t = source.token()?;
                *cached = Some((t.token.clone(), Instant::now(), t.lifetime));
                Ok(format!("Bearer {}", t.token))
            }
        }
    }

    /// Forgets a cached token so the next request gets a fresh one; false if it cannot.
    fn renew(&mut self) -> bool {
        match self {
            Auth::Command { cached, .. } | Auth::ServiceAccount { cached, .. } => cached.take().is_some(),
            Auth::Google { cached, .. } => cached.take().is_some(),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Auth::Emulator => "the emulator's owner credentials".into(),
            Auth::Static { source, .. } => format!("the access token in ${source}"),
            Auth::Command { .. } => "the access token from --token-command".into(),
            Auth::ServiceAccount { key, file, .. } => {
                format!("service account {} (key file '{file}')", key.client_email)
            }
            Auth::Google { source, .. } => source.describe(),
        }
    }
}

/// Runs the user's token command with `sh -c`; its trimmed stdout is the token.
fn run_token_command(command: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("run --token-command", e))?;
    if !out.status.success() {
        // Its stderr explains (gcloud: "not logged in"); its stdout could hold a secret.
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        let status = out.status.code().map(|c| format!("exit status {c}")).unwrap_or("killed by a signal".into());
        return Err(Error::Unavailable(format!(
            "--token-command failed ({status}){}",
            if first.is_empty() { String::new() } else { format!(": {first}") }
        )));
    }
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(Error::Unavailable(
            "--token-command printed no single token on stdout (expected one line, e.g. from 'gcloud auth print-access-token')"
                .into(),
        ));
    }
    Ok(t)
}

/// Reads a service-account key file. Its content is never shown in a message.
pub fn read_service_account(path: &str) -> Result<ServiceAccountKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read credentials '{path}'"), e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|_| Error::Data(format!("credentials '{path}': not a JSON key file")))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match field("type").as_deref() {
        Some("service_account") => {}
        Some("authorized_user") => {
            return Err(Error::Usage(format!(
                "credentials '{path}' are a user's login, not a service-account key; use \
                 --token-command 'gcloud auth print-access-token' instead"
            )))
        }
        other => {
            return Err(Error::Data(format!(
                "credentials '{path}': type is {}, expected \"service_account\"",
                other.map(|t| format!("\"{t}\"")).unwrap_or("missing".into())
            )))
        }
    }
    let need = |k: &str| field(k).ok_or_else(|| Error::Data(format!("credentials '{path}': no \"{k}\"")));
    Ok(ServiceAccountKey {
        client_email: need("client_email")?,
        private_key_id: need("private_key_id")?,
        private_key: need("private_key")?,
        project_id: field("project_id"),
    })
}

/// A credentials file by its type: a service-account key (signing its own tokens) or a
/// user's login (Application Default Credentials, refreshed at its token endpoint).
fn credentials_file(file: String, key_project: &mut Option<String>) -> Result<Auth> {
    Ok(match gauth::read_file(&file)? {
        gauth::FileKind::ServiceAccount => {
            let key = read_service_account(&file)?;
            *key_project = key.project_id.clone();
            Auth::ServiceAccount { key, file, cached: None }
        }
        gauth::FileKind::User(login) => Auth::Google { source: gauth::Source::User(login), cached: None },
    })
}

/// A self-signed JWT (RS256) that Google APIs accept as an access token.
pub fn sign_jwt(key: &ServiceAccountKey, now: u64) -> Result<String> {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key.private_key_id});
    let claims = json!({
        "iss": key.client_email, "sub": key.client_email, "aud": JWT_AUDIENCE,
        "iat": now, "exp": now + 3600,
    });
    let mut msg = base64url(header.to_string().as_bytes());
    msg.push('.');
    msg.push_str(&base64url(claims.to_string().as_bytes()));
    let bad_key = || Error::Data("the private_key is not a PEM private key".into());
    let pkey = PKey::private_key_from_pem(key.private_key.as_bytes()).map_err(|_| bad_key())?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).map_err(|_| bad_key())?;
    signer.update(msg.as_bytes()).map_err(|_| bad_key())?;
    let sig = signer.sign_to_vec().map_err(|_| bad_key())?;
    msg.push('.');
    msg.push_str(&base64url(&sig));
    Ok(msg)
}

/// Base64url without padding (RFC 7515).
pub fn base64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Base64 in either alphabet, standard or URL-safe, padding optional: how protobuf's JSON
/// form writes bytes (Firestore's `bytesValue`), and JWT parts.
pub fn base64_any_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let std = s.replace('-', "+").replace('_', "/");
    stream::base64_decode(&std)
}

/// A connection to one Firestore database.
pub struct Client {
    http: reqwest::blocking::Client,
    /// `https://firestore.googleapis.com` or `http://host:port`, no trailing slash.
    endpoint: String,
    pub project: String,
    pub database: String,
    auth: Auth,
    pub retry: Retry,
    /// `x-goog-user-project`: the project billed for user credentials' calls.
    user_project: Option<String>,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|s| !s.trim().is_empty())
}

impl Client {
    /// `--endpoint` (with credentials), else `FIRESTORE_EMULATOR_HOST`, else Google's
    /// endpoint with credentials: `--token-command`, `--token-env`, `--credentials`, then
    /// `$GOOGLE_APPLICATION_CREDENTIALS` (unless `$GOOGLE_OAUTH_ACCESS_TOKEN` is set), then
    /// gcloud's well-known file, then the metadata server (src/gauth.rs).
    pub fn connect(o: &ConnectOptions) -> Result<Client> {
        let emulator = if o.endpoint.is_none() { env("FIRESTORE_EMULATOR_HOST") } else { None };
        let mut key_project = None;
        let (endpoint, auth) = match emulator {
            Some(host) => {
                let host = host.trim().trim_start_matches("http://").trim_end_matches('/').to_string();
                (format!("http://{host}"), Auth::Emulator)
            }
            None => {
                let endpoint = o.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.into());
                let endpoint = endpoint.trim_end_matches('/').to_string();
                check_endpoint(&endpoint)?;
                let auth = if let Some(c) = &o.token_command {
                    Auth::Command { command: c.clone(), cached: None }
                } else if let Some(var) = &o.token_env {
                    let token = env(var).ok_or_else(|| {
                        Error::Usage(format!("--token-env {var}: the environment variable {var} is not set"))
                    })?;
                    Auth::Static { token: token.trim().to_string(), source: var.clone() }
                } else if let Some(file) = o.credentials.clone().or_else(|| {
                    if env(TOKEN_ENV).is_some() {
                        None
                    } else {
                        env("GOOGLE_APPLICATION_CREDENTIALS")
                    }
                }) {
                    credentials_file(file, &mut key_project)?
                } else if let Some(token) = env(TOKEN_ENV) {
                    Auth::Static { token: token.trim().to_string(), source: TOKEN_ENV.into() }
                } else if let Some(file) = gauth::well_known_file().filter(|f| f.is_file()) {
                    credentials_file(file.display().to_string(), &mut key_project)?
                } else if gauth::metadata_available(&gauth::metadata_host()) {
                    let host = gauth::metadata_host();
                    key_project = gauth::metadata_project(&host);
                    Auth::Google { source: gauth::Source::Metadata(host), cached: None }
                } else {
                    return Err(Error::Usage(format!(
                        "no Firestore credentials: give --token-command 'gcloud auth print-access-token', \
                         --token-env VAR, --credentials KEY.json, or set ${TOKEN_ENV} or \
                         $GOOGLE_APPLICATION_CREDENTIALS; run 'gcloud auth application-default login' \
                         (no {} and no metadata server at {}); set FIRESTORE_EMULATOR_HOST for the emulator",
                        gauth::well_known_file().map(|f| f.display().to_string()).unwrap_or("ADC file".into()),
                        gauth::metadata_host()
                    )));
                };
                (endpoint, auth)
            }
        };
        let project = o
            .project
            .clone()
            .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
            .or_else(|| env("GCLOUD_PROJECT"))
            .or_else(|| env("CLOUDSDK_CORE_PROJECT"))
            .or(key_project)
            .ok_or_else(|| Error::Usage("no project: give --project ID or set GOOGLE_CLOUD_PROJECT".into()))?;
        let database = o.database.clone().unwrap_or_else(|| "(default)".into());
        for (what, v) in [("project", &project), ("database", &database)] {
            if v.is_empty() || v.contains('/') {
                return Err(Error::Usage(format!("{what} '{v}' is not a valid id")));
            }
        }
        let http = reqwest::blocking::Client::builder()
            .user_agent(concat!("pgferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::Unavailable(format!("start the HTTP client: {}", cause(&e))))?;
        let user_project = match &auth {
            Auth::Google { source, .. } => source.quota_project(),
            _ => None,
        };
        Ok(Client { http, endpoint, project, database, auth, retry: o.retry, user_project })
    }

    /// For messages: where we read from, never a secret.
    pub fn describe(&self) -> String {
        format!(
            "project '{}', database '{}' at {} with {}",
            self.project,
            self.database,
            self.endpoint,
            self.auth.describe()
        )
    }

    /// `projects/P/databases/D/documents`, the prefix of every document name.
    pub fn documents_root(&self) -> String {
        format!("projects/{}/databases/{}/documents", self.project, self.database)
    }

    /// A document's full name from its path relative to the database.
    pub fn full_name(&self, path: &str) -> String {
        format!("{}/{}", self.documents_root(), path)
    }

    fn url(&self, parent: &str, method: &str) -> String {
        let mut u =
            format!("{}/v1/projects/{}/databases/{}/documents", self.endpoint, pct(&self.project), pct(&self.database));
        for seg in parent.split('/').filter(|s| !s.is_empty()) {
            u.push('/');
            u.push_str(&pct(seg));
        }
        u.push(':');
        u.push_str(method);
        u
    }

    /// One POST; the response when it is 200, else a classified failure.
    fn post(&mut self, parent: &str, method: &str, body: &Value) -> Result<reqwest::blocking::Response, Fail> {
        let auth = self.auth.header().map_err(Fail::Fatal)?;
        let mut req = self.http.post(self.url(parent, method));
        if let Some(p) = &self.user_project {
            req = req.header("x-goog-user-project", p);
        }
        let resp = req
            .header("Content-Type", "application/json")
            .header("Authorization", auth)
            .body(body.to_string())
            .send()
            .map_err(|e| Fail::Retry { cause: cause(&e), after: None, unreachable: e.is_connect() })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(resp);
        }
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = Vec::new();
        let _ = resp.take(64 * 1024).read_to_end(&mut text);
        let err = serde_json::from_slice::<Value>(&text).ok().and_then(|v| match v {
            Value::Array(mut a) if !a.is_empty() => a.swap_remove(0).get("error").cloned(),
            v => v.get("error").cloned(),
        });
        let (grpc, message) = match &err {
            Some(e) => (
                e.get("status").and_then(Value::as_str).unwrap_or("").to_string(),
                e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
            ),
            None => (String::new(), String::from_utf8_lossy(&text).chars().take(200).collect()),
        };
        if status == 401 && self.auth.renew() {
            return Err(Fail::Retry {
                cause: format!("401 {grpc}: {message} (renewing the token)"),
                after: None,
                unreachable: false,
            });
        }
        Err(classify(status, &grpc, &message, after, &self.auth))
    }
}

/// Credentials go over plain HTTP only to this machine.
fn check_endpoint(endpoint: &str) -> Result<()> {
    if let Some(rest) = endpoint.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        let host =
            if rest.starts_with('[') { rest.split(']').next().unwrap_or("").trim_start_matches('[') } else { host };
        if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
            return Err(Error::Usage(format!(
                "--endpoint '{endpoint}': credentials are sent over https only (plain http only to this machine)"
            )));
        }
        return Ok(());
    }
    if !endpoint.starts_with("https://") {
        return Err(Error::Usage(format!("--endpoint '{endpoint}' must start with https://")));
    }
    Ok(())
}

/// What a failed attempt means for the next one.
enum Fail {
    /// Temporary (429, 5xx, a broken stream, no connection): try again after a delay.
    Retry { cause: String, after: Option<Duration>, unreachable: bool },
    /// The read time is older than Firestore keeps versions (the server's words).
    TooOld(String),
    /// Final.
    Fatal(Error),
}

/// An error element inside a 200 response: its gRPC status decides, its code may be gRPC's.
/// The next element of a streamed response array, parsed. A cut-off or unreadable body is
/// retryable; an element carrying an `error` becomes that error.
fn next_result<R: Read>(arr: &mut ArrayReader<R>, auth: &Auth) -> Result<Option<Value>, Fail> {
    let Some(elem) = arr.next_element().map_err(|c| Fail::Retry { cause: c, after: None, unreachable: false })? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_slice(elem).map_err(|e| Fail::Retry {
        cause: format!("unreadable response: {e}"),
        after: None,
        unreachable: false,
    })?;
    match v.get("error") {
        Some(err) => Err(classify_element(err, auth)),
        None => Ok(Some(v)),
    }
}

fn classify_element(err: &Value, auth: &Auth) -> Fail {
    let grpc = err.get("status").and_then(Value::as_str).unwrap_or("");
    let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
    let status = match grpc {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "RESOURCE_EXHAUSTED" => 429,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => match err.get("code").and_then(Value::as_u64) {
            Some(c @ 400..=599) => c as u16,
            _ => 500,
        },
    };
    classify(status, grpc, msg, None, auth)
}

/// The final error for a refused read time.
fn too_old_error(read_time: &str, given: bool, server: &str, docs: u64) -> Error {
    let keeps = "Firestore keeps past versions for one hour (7 days, at whole minutes, with point-in-time recovery)";
    if given {
        Error::Usage(format!(
            "read time {read_time} is too old ({server}): {keeps}; run without --read-time to read the current data"
        ))
    } else {
        Error::TempFail(format!(
            "read time {read_time} expired after {docs} documents ({server}): {keeps}; run again for a fresh \
             snapshot (resuming with a new --read-time would mix two snapshots)"
        ))
    }
}

fn classify(status: u16, grpc: &str, message: &str, after: Option<Duration>, auth: &Auth) -> Fail {
    let what = if grpc.is_empty() { format!("HTTP {status}") } else { format!("{status} {grpc}") };
    let full = if message.is_empty() { what.clone() } else { format!("{what}: {message}") };
    let retryable_grpc =
        matches!(grpc, "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "RESOURCE_EXHAUSTED" | "ABORTED" | "INTERNAL");
    if matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || retryable_grpc {
        return Fail::Retry { cause: full, after, unreachable: false };
    }
    let lower = message.to_lowercase();
    if status == 400 && grpc == "FAILED_PRECONDITION" && lower.contains("too old") {
        return Fail::TooOld(full);
    }
    Fail::Fatal(match status {
        400 if lower.contains("jwt") || lower.contains("credential") => {
            Error::Unavailable(format!("{full} (authorizing with {})", auth.describe()))
        }
        400 => Error::Usage(full),
        401 => Error::Unavailable(format!("{full}: Firestore refused {}", auth.describe())),
        403 => Error::Unavailable(format!("{full}: {} may not read this database", auth.describe())),
        404 => Error::NoInput(format!("{full} (check --project and --database)")),
        _ => Error::Unavailable(full),
    })
}

/// The innermost cause of an error chain, e.g. "Connection refused".
fn cause(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !m.is_empty() {
            msg = m;
        }
        cur = s.source();
    }
    match msg.find(" (os error") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters and parentheses kept).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- what to read

/// What an export reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The collection at a path relative to the database (`customers`, `customers/c1/orders`).
    Collection(String),
    /// Every collection with this id, at any depth.
    Group(String),
    /// One document, by path relative to the database (`settings/console`).
    Document(String),
}

impl Scope {
    /// A PATH argument: an odd number of segments is a collection, an even one a document.
    pub fn from_path(path: &str) -> Result<Scope> {
        let p = path.trim_matches('/');
        let segs: Vec<&str> = p.split('/').collect();
        if p.is_empty() || segs.iter().any(|s| s.is_empty()) {
            return Err(Error::Usage(format!("'{path}' is not a collection or document path")));
        }
        Ok(if segs.len() % 2 == 1 { Scope::Collection(p.into()) } else { Scope::Document(p.into()) })
    }

    /// For messages and the end record's value.
    pub fn name(&self) -> &str {
        match self {
            Scope::Collection(p) | Scope::Group(p) | Scope::Document(p) => p,
        }
    }

    /// The end record's key: `collection`, `group` or `document`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Collection(_) => "collection",
            Scope::Group(_) => "group",
            Scope::Document(_) => "document",
        }
    }

    /// The parent (URL path, relative to the database) and the structured query's `from`/`where`.
    fn query(&self, root: &str) -> (String, Map<String, Value>) {
        let mut q = Map::new();
        // The collection the query reads from: its parent path and its id.
        let collection = match self {
            Scope::Collection(p) => p.as_str(),
            Scope::Group(g) => g.as_str(),
            Scope::Document(d) => d.rsplit_once('/').map(|x| x.0).unwrap_or(""),
        };
        let (parent, id) = match collection.rsplit_once('/') {
            Some((parent, id)) => (parent.to_string(), id.to_string()),
            None => (String::new(), collection.to_string()),
        };
        match self {
            Scope::Group(g) => {
                q.insert("from".into(), json!([{"collectionId": g, "allDescendants": true}]));
                (String::new(), q)
            }
            Scope::Collection(_) => {
                q.insert("from".into(), json!([{"collectionId": id}]));
                (parent, q)
            }
            Scope::Document(d) => {
                q.insert("from".into(), json!([{"collectionId": id}]));
                q.insert(
                    "where".into(),
                    json!({"fieldFilter": {"field": {"fieldPath": "__name__"}, "op": "EQUAL",
                        "value": {"referenceValue": format!("{root}/{d}")}}}),
                );
                (parent, q)
            }
        }
    }

    /// Checks that a document path lies in this scope (for `--resume-after`); a bare id is
    /// taken relative to a collection. Returns the path relative to the database.
    pub fn resume_path(&self, p: &str) -> Result<String> {
        let p = p.trim_matches('/');
        let path = match (self, p.contains('/')) {
            (Scope::Collection(c), false) => format!("{c}/{p}"),
            (Scope::Document(_), _) => {
                return Err(Error::Usage("--resume-after does not apply to a single document".into()))
            }
            (Scope::Group(_), false) => {
                return Err(Error::Usage(format!(
                    "--resume-after '{p}': give the document's full path for a collection group (ids repeat across parents)"
                )))
            }
            _ => p.to_string(),
        };
        let segs: Vec<&str> = path.split('/').collect();
        let ok = segs.len().is_multiple_of(2)
            && !segs.iter().any(|s| s.is_empty())
            && match self {
                Scope::Collection(c) => path.rsplit_once('/').map(|x| x.0) == Some(c.as_str()),
                Scope::Group(g) => segs[segs.len() - 2] == g,
                Scope::Document(_) => false,
            };
        if !ok {
            return Err(Error::Usage(format!(
                "--resume-after '{p}' is not a document of {} '{}'",
                self.kind(),
                self.name()
            )));
        }
        Ok(path)
    }
}

/// A field path for a projection: plain names as they are, others in backquotes.
pub fn quote_field_path(name: &str) -> String {
    let simple = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        return name.to_string();
    }
    let mut s = String::from("`");
    for c in name.chars() {
        if c == '`' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// How to read: page size, snapshot, start, projection.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub page_size: u32,
    /// RFC 3339; `None` takes the read time of the first response and keeps it.
    pub read_time: Option<String>,
    /// Start after this document (path relative to the database).
    pub start_after: Option<String>,
    /// Only these top-level fields (a projection); `None` for all.
    pub fields: Option<Vec<String>>,
}

/// Where an export stands; still valid after it failed (for the resume hint).
#[derive(Debug, Clone, Default)]
pub struct QueryState {
    pub read_time: Option<String>,
    /// Path (relative to the database) of the last document handed to the sink.
    pub last_path: Option<String>,
    pub documents: u64,
    pub retries: u64,
    /// The read time was refused as too old: resuming at it cannot work.
    pub read_time_expired: bool,
}

/// One document as it arrived.
pub struct Doc<'a> {
    /// Path relative to the database: `customers/c1/orders/o9`.
    pub path: &'a str,
    /// The Firestore fields (`{"name": {"stringValue": ...}}`).
    pub fields: &'a Map<String, Value>,
    pub read_time: &'a str,
}

/// Receives the documents of an export in order, and hears about retries.
pub trait Sink {
    fn document(&mut self, doc: &Doc) -> Result<()>;
    fn retrying(&mut self, _cause: &str, _attempt: u32, _wait: Duration) {}
}

impl Client {
    /// Reads every document in `scope` in name order, page by page at one read time, calling
    /// `sink` once per document: never twice, never skipping one, whatever retries happen.
    pub fn export(&mut self, scope: &Scope, o: &QueryOptions, st: &mut QueryState, sink: &mut dyn Sink) -> Result<()> {
        let root = self.documents_root();
        let (parent, base) = scope.query(&root);
        if st.read_time.is_none() {
            st.read_time = o.read_time.clone();
        }
        if st.last_path.is_none() {
            st.last_path = o.start_after.clone();
        }
        let mut failures = 0u32;
        loop {
            let mut q = base.clone();
            q.insert("orderBy".into(), json!([{"field": {"fieldPath": "__name__"}, "direction": "ASCENDING"}]));
            q.insert("limit".into(), json!(o.page_size));
            if let Some(fields) = &o.fields {
                let f: Vec<Value> = fields.iter().map(|f| json!({"fieldPath": quote_field_path(f)})).collect();
                q.insert("select".into(), json!({"fields": f}));
            }
            if let Some(last) = &st.last_path {
                q.insert(
                    "startAt".into(),
                    json!({"values": [{"referenceValue": format!("{root}/{last}")}], "before": false}),
                );
            }
            let mut body = json!({"structuredQuery": q});
            if let Some(t) = &st.read_time {
                body["readTime"] = json!(t);
            }
            let before = st.documents;
            match self.page(&parent, &body, &root, st, sink) {
                Ok(n) => {
                    failures = 0;
                    if n < o.page_size as u64 {
                        return Ok(());
                    }
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::TooOld(server)) => {
                    st.read_time_expired = true;
                    let t = st.read_time.clone().unwrap_or_default();
                    return Err(too_old_error(&t, o.read_time.is_some(), &server, st.documents));
                }
                Err(Fail::Retry { cause, after, unreachable }) => {
                    if st.documents > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= self.retry.attempts {
                        return Err(self.gave_up(failures, &cause, unreachable));
                    }
                    let wait = self.retry.delay(failures, after);
                    st.retries += 1;
                    sink.retrying(&cause, failures, wait);
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// The final error after `attempts` failures in a row: 69 when Firestore could not be
    /// reached at all, else 75.
    fn gave_up(&self, attempts: u32, cause: &str, unreachable: bool) -> Error {
        if unreachable {
            Error::Unavailable(format!("cannot reach {}: gave up after {attempts} attempts: {cause}", self.endpoint))
        } else {
            Error::TempFail(format!("gave up after {attempts} attempts in a row: {cause}"))
        }
    }

    /// One runQuery page; returns how many documents it held.
    fn page(
        &mut self,
        parent: &str,
        body: &Value,
        root: &str,
        st: &mut QueryState,
        sink: &mut dyn Sink,
    ) -> Result<u64, Fail> {
        let resp = self.post(parent, "runQuery", body)?;
        let mut arr = ArrayReader::new(resp);
        let mut n = 0u64;
        let prefix = format!("{root}/");
        while let Some(v) = next_result(&mut arr, &self.auth)? {
            if st.read_time.is_none() {
                if let Some(t) = v.get("readTime").and_then(Value::as_str) {
                    st.read_time = Some(normalize_read_time(t).unwrap_or_else(|| t.to_string()));
                }
            }
            let Some(doc) = v.get("document") else { continue };
            let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(path) = name.strip_prefix(&prefix) else {
                return Err(Fail::Fatal(Error::Data(format!("a document named '{name}' outside '{root}'"))));
            };
            let empty = Map::new();
            let fields = doc.get("fields").and_then(Value::as_object).unwrap_or(&empty);
            let read_time = st.read_time.clone().unwrap_or_default();
            sink.document(&Doc { path, fields, read_time: &read_time }).map_err(Fail::Fatal)?;
            st.last_path = Some(path.to_string());
            st.documents += 1;
            n += 1;
        }
        Ok(n)
    }

    /// The number of documents in `scope` (a count aggregation) and the read time it is for.
    pub fn count(&mut self, scope: &Scope, read_time: Option<&str>) -> Result<(u64, String)> {
        let root = self.documents_root();
        let (parent, q) = scope.query(&root);
        let mut body = json!({"structuredAggregationQuery": {
            "structuredQuery": q, "aggregations": [{"alias": "n", "count": {}}]}});
        if let Some(t) = read_time {
            body["readTime"] = json!(t);
        }
        let mut failures = 0;
        loop {
            match self.count_once(&parent, &body) {
                Ok(r) => return Ok(r),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::TooOld(server)) => return Err(too_old_error(read_time.unwrap_or(""), true, &server, 0)),
                Err(Fail::Retry { cause, after, unreachable }) => {
                    failures += 1;
                    if failures >= self.retry.attempts {
                        return Err(self.gave_up(failures, &cause, unreachable));
                    }
                    std::thread::sleep(self.retry.delay(failures, after));
                }
            }
        }
    }

    fn count_once(&mut self, parent: &str, body: &Value) -> Result<(u64, String), Fail> {
        let resp = self.post(parent, "runAggregationQuery", body)?;
        let mut arr = ArrayReader::new(resp);
        let (mut count, mut read_time) = (None, None);
        while let Some(v) = next_result(&mut arr, &self.auth)? {
            if let Some(t) = v.get("readTime").and_then(Value::as_str) {
                read_time.get_or_insert_with(|| normalize_read_time(t).unwrap_or_else(|| t.to_string()));
            }
            if let Some(n) = v.pointer("/result/aggregateFields/n/integerValue") {
                let text = match n {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                count = text.parse::<u64>().ok();
            }
        }
        match (count, read_time) {
            (Some(c), Some(t)) => Ok((c, t)),
            (Some(c), None) => Ok((c, String::new())),
            _ => Err(Fail::Fatal(Error::Unavailable("runAggregationQuery answered without a count".into()))),
        }
    }
}

// ---------------------------------------------------------------- the response as a stream

/// Splits a JSON array read from `r` into its elements' bytes, one at a time, so memory
/// holds one element whatever the response's size. A lone object counts as one element.
pub struct ArrayReader<R: Read> {
    r: BufReader<R>,
    elem: Vec<u8>,
    state: ArrayState,
    read: u64,
}

#[derive(PartialEq)]
enum ArrayState {
    Start,
    First,
    Next,
    Single,
    Done,
}

impl<R: Read> ArrayReader<R> {
    pub fn new(r: R) -> Self {
        ArrayReader { r: BufReader::with_capacity(1 << 16, r), elem: Vec::new(), state: ArrayState::Start, read: 0 }
    }

    /// The next non-whitespace byte, not consumed; `None` at EOF.
    fn peek_token(&mut self) -> Result<Option<u8>, String> {
        loop {
            let buf = fill(&mut self.r, self.read)?;
            if buf.is_empty() {
                return Ok(None);
            }
            let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            if skip < buf.len() {
                let b = buf[skip];
                self.r.consume(skip);
                self.read += skip as u64;
                return Ok(Some(b));
            }
            let n = buf.len();
            self.r.consume(n);
            self.read += n as u64;
        }
    }

    fn consume1(&mut self) {
        self.r.consume(1);
        self.read += 1;
    }

    /// The next element's bytes; `Ok(None)` after the closing `]`. `Err` is a broken or
    /// malformed stream (worth retrying).
    pub fn next_element(&mut self) -> Result<Option<&[u8]>, String> {
        let early = |read: u64| format!("the response ended early, after {read} bytes");
        match self.state {
            ArrayState::Done | ArrayState::Single => {
                self.state = ArrayState::Done;
                return Ok(None);
            }
            ArrayState::Start => match self.peek_token()? {
                Some(b'[') => {
                    self.consume1();
                    self.state = ArrayState::First;
                }
                Some(b'{') => self.state = ArrayState::Single,
                Some(b) => return Err(format!("unexpected response: starts with {:?}", b as char)),
                None => return Err(early(self.read)),
            },
            _ => {}
        }
        if self.state != ArrayState::Single {
            match self.peek_token()? {
                Some(b']') => {
                    self.consume1();
                    self.state = ArrayState::Done;
                    return Ok(None);
                }
                Some(b',') if self.state == ArrayState::Next => {
                    self.consume1();
                    if self.peek_token()?.is_none() {
                        return Err(early(self.read));
                    }
                }
                Some(_) if self.state == ArrayState::First => {}
                Some(b) => return Err(format!("malformed response: {:?} between elements", b as char)),
                None => return Err(early(self.read)),
            }
            self.state = ArrayState::Next;
        }
        self.elem.clear();
        let (mut depth, mut in_str, mut esc) = (0u32, false, false);
        loop {
            let buf = fill(&mut self.r, self.read)?;
            if buf.is_empty() {
                return Err(early(self.read));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_str {
                    if esc {
                        esc = false;
                    } else if b == b'\\' {
                        esc = true;
                    } else if b == b'"' {
                        in_str = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let n = end.unwrap_or(buf.len());
            self.elem.extend_from_slice(&buf[..n]);
            self.r.consume(n);
            self.read += n as u64;
            if end.is_some() {
                return Ok(Some(&self.elem));
            }
        }
    }
}

/// The reader's buffered bytes, reading more when it is empty; empty at EOF.
fn fill<R: Read>(r: &mut BufReader<R>, read: u64) -> Result<&[u8], String> {
    loop {
        match r.fill_buf() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    r.fill_buf().map_err(|e| format!("the response broke off after {read} bytes: {}", cause(&e)))
}

// ---------------------------------------------------------------- values

/// How references are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueOptions {
    /// The path relative to the database instead of the id.
    pub ref_paths: bool,
}

/// A Firestore value (REST form, `{"integerValue": "42"}`) as a stream value
/// (docs/stream.md section 3). `Err` names the kind that could not be converted.
pub fn stream_value(v: &Value, o: ValueOptions) -> std::result::Result<Value, String> {
    let Some(m) = v.as_object() else {
        return Err(format!("not a Firestore value: {}", stream::value_snippet(v)));
    };
    let Some((kind, x)) = m.iter().next() else {
        return Err("a Firestore value with no kind".into());
    };
    if m.len() != 1 {
        return Err(format!("a Firestore value with {} kinds", m.len()));
    }
    Ok(match kind.as_str() {
        "nullValue" => Value::Null,
        "booleanValue" => Value::Bool(x.as_bool().ok_or("booleanValue is not a boolean")?),
        "integerValue" => Value::from(integer(x)?),
        "doubleValue" => stream::float_value(double(x)?),
        "stringValue" => Value::String(x.as_str().ok_or("stringValue is not a string")?.to_string()),
        "timestampValue" => {
            let s = x.as_str().ok_or("timestampValue is not a string")?;
            let (secs, nanos) = parse_timestamp_nanos(s).ok_or_else(|| format!("unreadable timestampValue {s:?}"))?;
            Value::String(timefmt::format_rfc3339_nanos(secs, nanos))
        }
        "bytesValue" => {
            let s = x.as_str().ok_or("bytesValue is not a string")?;
            stream::bytes_value(&base64_any_decode(s).map_err(|e| format!("bytesValue: {e}"))?)
        }
        "referenceValue" => {
            let s = x.as_str().ok_or("referenceValue is not a string")?;
            let path = match s.find("/documents/") {
                Some(i) => &s[i + "/documents/".len()..],
                None => s,
            };
            Value::String(if o.ref_paths {
                path.to_string()
            } else {
                path.rsplit('/').next().unwrap_or(path).to_string()
            })
        }
        "geoPointValue" => {
            let coord = |k: &str| -> std::result::Result<Value, String> {
                Ok(stream::float_value(match x.get(k) {
                    None | Some(Value::Null) => 0.0,
                    Some(c) => double(c).map_err(|e| format!("geoPointValue {k}: {e}"))?,
                }))
            };
            let mut g = Map::new();
            g.insert("lat".into(), coord("latitude")?);
            g.insert("lng".into(), coord("longitude")?);
            Value::Object(g)
        }
        "arrayValue" => {
            let mut out = Vec::new();
            if let Some(vals) = x.get("values").and_then(Value::as_array) {
                out.reserve(vals.len());
                for (i, e) in vals.iter().enumerate() {
                    out.push(stream_value(e, o).map_err(|e| format!("[{i}]: {e}"))?);
                }
            }
            Value::Array(out)
        }
        "mapValue" => {
            let empty = Map::new();
            let fields = x.get("fields").and_then(Value::as_object).unwrap_or(&empty);
            if let Some(vector) = as_vector(fields) {
                return vector;
            }
            let mut out = Map::new();
            for (k, e) in fields {
                out.insert(k.clone(), stream_value(e, o).map_err(|e| format!("{k}: {e}"))?);
            }
            Value::Object(out)
        }
        other => return Err(format!("unknown Firestore value kind '{other}'")),
    })
}

/// A vector value (`{"__type__": "__vector__", "value": [doubles]}`) as an array of floats.
fn as_vector(fields: &Map<String, Value>) -> Option<std::result::Result<Value, String>> {
    if fields.len() != 2 || fields.get("__type__")?.get("stringValue")?.as_str()? != "__vector__" {
        return None;
    }
    let empty = Vec::new();
    let vals = fields.get("value")?.get("arrayValue")?;
    let vals = vals.get("values").and_then(Value::as_array).unwrap_or(&empty);
    let mut out = Vec::with_capacity(vals.len());
    for (i, e) in vals.iter().enumerate() {
        let f = match (e.get("doubleValue"), e.get("integerValue")) {
            (Some(d), _) => double(d),
            (None, Some(n)) => integer(n).map(|n| n as f64),
            _ => Err(format!("not a number: {}", stream::value_snippet(e))),
        };
        match f {
            Ok(f) => out.push(stream::float_value(f)),
            Err(e) => return Some(Err(format!("vector [{i}]: {e}"))),
        }
    }
    Some(Ok(Value::Array(out)))
}

/// int64 from its REST text (a string) or a JSON number, exactly.
fn integer(x: &Value) -> std::result::Result<i64, String> {
    let text = match x {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("integerValue is {}", stream::kind_name(other))),
    };
    text.parse::<i64>().map_err(|_| format!("integerValue {text:?} is not a 64-bit integer"))
}

/// A double from a JSON number (`1.0E308`) or a string (`"NaN"`, `"-Infinity"`, `"1.5"`).
fn double(x: &Value) -> std::result::Result<f64, String> {
    let text = match x {
        Value::String(s) => match s.as_str() {
            "NaN" => return Ok(f64::NAN),
            "Infinity" => return Ok(f64::INFINITY),
            "-Infinity" => return Ok(f64::NEG_INFINITY),
            s => s.to_string(),
        },
        Value::Number(n) => n.to_string(),
        other => return Err(format!("doubleValue is {}", stream::kind_name(other))),
    };
    text.parse::<f64>().map_err(|_| format!("doubleValue {text:?} is not a number"))
}

/// RFC 3339 with up to 9 fraction digits (Firestore's form) to seconds and nanoseconds
/// since the Unix epoch, UTC.
pub fn parse_timestamp_nanos(s: &str) -> Option<(i64, u32)> {
    let t = s.find(['T', 't'])?;
    let (whole, nanos) = match s[t..].find('.') {
        Some(dot) => {
            let start = t + dot + 1;
            let digits = s[start..].bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            let mut n: u32 = s[start..start + digits].parse().ok()?;
            for _ in digits..9 {
                n *= 10;
            }
            (format!("{}{}", &s[..start - 1], &s[start + digits..]), n)
        }
        None => (s.to_string(), 0),
    };
    let p = timefmt::parse_timestamp(&whole)?;
    if p.date_only || p.offset.is_none() {
        return None;
    }
    Some((p.utc_micros(0).div_euclid(1_000_000), nanos))
}

/// A read time given by the user, normalized to RFC 3339 UTC.
pub fn normalize_read_time(s: &str) -> Option<String> {
    let (secs, nanos) = parse_timestamp_nanos(s.trim())?;
    Some(timefmt::format_rfc3339_nanos(secs, nanos))
}

// ---------------------------------------------------------------- documents as rows

/// How a document becomes a row (docs/stream.md section 3.1): fs-export writes it, and
/// count-check compares it, so both see the same row.
#[derive(Debug, Clone)]
pub struct RowShape {
    /// The key under which a document's id appears [default: id].
    pub id_field: String,
    /// The parent document's id (null for a top-level collection's documents).
    pub parent_field: Option<String>,
    /// The document's path relative to the database.
    pub path_field: Option<String>,
    /// Only these top-level fields, in this order; empty: every field, sorted by name.
    pub fields: Vec<String>,
    /// Fields left out.
    pub drop: Vec<String>,
    pub values: ValueOptions,
}

impl Default for RowShape {
    fn default() -> Self {
        RowShape {
            id_field: "id".into(),
            parent_field: None,
            path_field: None,
            fields: vec![],
            drop: vec![],
            values: ValueOptions::default(),
        }
    }
}

impl RowShape {
    /// `--id-field`, `--parent-field`, `--path-field` and `--ref-paths` on top of `base`;
    /// the keys must be named, and differently.
    pub fn from_args(args: &mut pico_args::Arguments, base: RowShape) -> Result<RowShape> {
        let mut o = base;
        if let Some(f) = cli::opt(args, "--id-field")? {
            o.id_field = f;
        }
        if let Some(f) = cli::opt(args, "--parent-field")? {
            o.parent_field = Some(f);
        }
        if let Some(f) = cli::opt(args, "--path-field")? {
            o.path_field = Some(f);
        }
        if args.contains("--ref-paths") {
            o.values.ref_paths = true;
        }
        // A document without fields is a row of the id alone, which must not read as a record.
        if [stream::END_KEY, stream::TABLE_KEY].contains(&o.id_field.as_str()) {
            return Err(Error::Usage(format!(
                "--id-field '{}': a row of a document without fields would have this key alone, which makes \
                 it a record of the stream, not a row (docs/stream.md 2.5); choose another name",
                o.id_field
            )));
        }
        let mut keys = vec![("--id-field", &o.id_field)];
        keys.extend(o.parent_field.as_ref().map(|k| ("--parent-field", k)));
        keys.extend(o.path_field.as_ref().map(|k| ("--path-field", k)));
        for (i, (opt, k)) in keys.iter().enumerate() {
            if k.is_empty() {
                return Err(Error::Usage(format!("{opt} needs a name")));
            }
            if let Some((other, _)) = keys[..i].iter().find(|(_, k2)| k2 == k) {
                return Err(Error::Usage(format!("{opt} and {other} both name '{k}'")));
            }
        }
        Ok(o)
    }

    /// The row of `d` into `row` (cleared first): the id, parent and path keys, then the
    /// fields converted. A field named like one of those keys is written once when it holds
    /// the key's value, and is otherwise refused (rule 2): the row never silently loses it.
    pub fn row(&self, d: &Doc, row: &mut Vec<(String, Value)>) -> Result<()> {
        row.clear();
        let segs: Vec<&str> = d.path.split('/').collect();
        row.push((self.id_field.clone(), Value::from(segs[segs.len() - 1])));
        let mut keys = vec!["--id-field"];
        if let Some(k) = &self.parent_field {
            let parent = if segs.len() >= 4 { Value::from(segs[segs.len() - 3]) } else { Value::Null };
            row.push((k.clone(), parent));
            keys.push("--parent-field");
        }
        if let Some(k) = &self.path_field {
            row.push((k.clone(), Value::from(d.path)));
            keys.push("--path-field");
        }
        let meta = row.len();
        let field = |row: &mut Vec<(String, Value)>, k: &String, v: &Value| -> Result<()> {
            if self.drop.contains(k) {
                return Ok(());
            }
            let conv = stream_value(v, self.values)
                .map_err(|e| Error::Data(format!("document '{}', field '{k}': {e}", d.path)))?;
            if let Some(i) = row[..meta].iter().position(|(key, _)| key == k) {
                if conv == row[i].1 {
                    return Ok(());
                }
                let opt = keys[i];
                return Err(Error::Data(format!(
                    "document '{}': its field '{k}' holds {} but the {opt} key '{k}' is {}; name that key \
                     otherwise ({opt} NAME) or leave the field out (--drop {k})",
                    d.path,
                    stream::value_snippet(&conv),
                    stream::value_snippet(&row[i].1)
                )));
            }
            row.push((k.clone(), conv));
            Ok(())
        };
        if self.fields.is_empty() {
            for (k, v) in d.fields {
                field(row, k, v)?;
            }
        } else {
            for k in &self.fields {
                if let Some(v) = d.fields.get(k) {
                    field(row, k, v)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: Value) -> Value {
        stream_value(&v, ValueOptions::default()).unwrap()
    }

    #[test]
    fn every_kind_converts_losslessly() {
        assert_eq!(conv(json!({"nullValue": null})), Value::Null);
        assert_eq!(conv(json!({"booleanValue": true})), json!(true));
        assert_eq!(conv(json!({"integerValue": "-9223372036854775808"})).to_string(), "-9223372036854775808");
        assert_eq!(conv(json!({"integerValue": "9007199254740993"})).to_string(), "9007199254740993");
        assert_eq!(conv(json!({"doubleValue": 3})).to_string(), "3.0");
        assert_eq!(conv(serde_json::from_str(r#"{"doubleValue": -0.0}"#).unwrap()).to_string(), "-0.0");
        let big = conv(serde_json::from_str(r#"{"doubleValue": 1.0E308}"#).unwrap()).to_string();
        assert_eq!(big.parse::<f64>().unwrap(), 1e308);
        assert_eq!(conv(json!({"doubleValue": "NaN"})), json!({"$float": "NaN"}));
        assert_eq!(conv(json!({"doubleValue": "-Infinity"})), json!({"$float": "-Infinity"}));
        assert_eq!(conv(json!({"stringValue": "é\n"})), json!("é\n"));
        assert_eq!(
            conv(json!({"timestampValue": "1960-01-01T00:00:00.123456789Z"})),
            json!("1960-01-01T00:00:00.123456789Z")
        );
        assert_eq!(conv(json!({"timestampValue": "2020-01-01T00:00:00.500Z"})), json!("2020-01-01T00:00:00.5Z"));
        assert_eq!(conv(json!({"timestampValue": "2020-01-01T02:00:00+02:00"})), json!("2020-01-01T00:00:00Z"));
        assert_eq!(conv(json!({"bytesValue": "AP8="})), json!({"$base64": true, "encoded": "AP8="}));
        assert_eq!(conv(json!({"bytesValue": "-_8"})), json!({"$base64": true, "encoded": "+/8="}));
        let r = json!({"referenceValue": "projects/p/databases/(default)/documents/customers/c1/orders/o9"});
        assert_eq!(conv(r.clone()), json!("o9"));
        assert_eq!(stream_value(&r, ValueOptions { ref_paths: true }).unwrap(), json!("customers/c1/orders/o9"));
        assert_eq!(conv(json!({"geoPointValue": {}})).to_string(), r#"{"lat":0.0,"lng":0.0}"#);
        assert_eq!(
            conv(json!({"geoPointValue": {"latitude": -90, "longitude": 180.0}})).to_string(),
            r#"{"lat":-90.0,"lng":180.0}"#
        );
        assert_eq!(conv(json!({"arrayValue": {}})), json!([]));
        assert_eq!(conv(json!({"mapValue": {}})), json!({}));
        assert_eq!(
            conv(
                json!({"mapValue": {"fields": {"a": {"arrayValue": {"values": [{"integerValue": "1"}, {"mapValue": {}}]}}}}})
            ),
            json!({"a": [1, {}]})
        );
        let vector = json!({"mapValue": {"fields": {"__type__": {"stringValue": "__vector__"},
            "value": {"arrayValue": {"values": [{"doubleValue": 1.5}, {"doubleValue": 2}]}}}}});
        assert_eq!(conv(vector).to_string(), "[1.5,2.0]");
        let e = stream_value(&json!({"mapValue": {"fields": {"x": {"fancyValue": 1}}}}), ValueOptions::default());
        assert_eq!(e.unwrap_err(), "x: unknown Firestore value kind 'fancyValue'");
        assert!(stream_value(&json!({"integerValue": "1e3"}), ValueOptions::default()).is_err());
    }

    #[test]
    fn timestamps_keep_nanoseconds_and_old_dates() {
        assert_eq!(parse_timestamp_nanos("1969-12-31T23:59:59.999999999Z"), Some((-1, 999_999_999)));
        assert_eq!(parse_timestamp_nanos("0001-01-01T00:00:00Z"), Some((-62135596800, 0)));
        assert_eq!(parse_timestamp_nanos("2020-01-01T00:00:00.1234567890Z"), None);
        assert_eq!(parse_timestamp_nanos("2020-01-01T00:00:00"), None);
        assert_eq!(normalize_read_time("2026-01-02T03:04:05.120+01:00").as_deref(), Some("2026-01-02T02:04:05.12Z"));
    }

    #[test]
    fn array_reader_splits_and_detects_truncation() {
        let body = b" [\n{\"a\": \"x}]\\\"{\"},\n {\"b\":[1,{\"c\":2}]} ,{}\n]\n";
        let mut r = ArrayReader::new(&body[..]);
        let mut got = vec![];
        while let Some(e) = r.next_element().unwrap() {
            got.push(String::from_utf8(e.to_vec()).unwrap());
        }
        assert_eq!(got, vec!["{\"a\": \"x}]\\\"{\"}", "{\"b\":[1,{\"c\":2}]}", "{}"]);
        for cut in 1..body.len() - 2 {
            let mut r = ArrayReader::new(&body[..cut]);
            let mut res = Ok(Some(&[][..]));
            while let Ok(Some(_)) = res {
                res = r.next_element();
            }
            assert!(res.is_err(), "cut at {cut} not detected");
        }
        let mut r = ArrayReader::new(&b"{\"error\": {\"code\": 503}}"[..]);
        assert!(r.next_element().unwrap().is_some());
        assert!(r.next_element().unwrap().is_none());
        assert_eq!(ArrayReader::new(&b"[]"[..]).next_element().unwrap(), None);
    }

    #[test]
    fn scopes_and_paths() {
        assert_eq!(Scope::from_path("a/b/c").unwrap(), Scope::Collection("a/b/c".into()));
        assert_eq!(Scope::from_path("/settings/console").unwrap(), Scope::Document("settings/console".into()));
        assert!(Scope::from_path("a//b").is_err());
        let c = Scope::Collection("cust/c1/orders".into());
        assert_eq!(c.resume_path("o9").unwrap(), "cust/c1/orders/o9");
        assert!(c.resume_path("cust/c2/orders/o9").is_err());
        let g = Scope::Group("orders".into());
        assert_eq!(g.resume_path("cust/c2/orders/o9").unwrap(), "cust/c2/orders/o9");
        assert!(g.resume_path("o9").is_err());
        assert!(g.resume_path("cust/c2/items/o9").is_err());
        assert_eq!(quote_field_path("name_1"), "name_1");
        assert_eq!(quote_field_path("a b`\\"), "`a b\\`\\\\`");
        assert_eq!(pct("dé #?/(default)"), "d%C3%A9%20%23%3F%2F(default)");
    }

    #[test]
    fn retry_delays_grow_and_are_jittered() {
        let r = Retry { attempts: 5, base: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for n in 1..8 {
            let d = r.delay(n, None);
            let cap = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
            assert!(d >= cap / 2 && d <= cap, "{n}: {d:?}");
        }
        assert!(r.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn jwt_is_signed_with_the_key() {
        use openssl::{hash::MessageDigest, pkey::PKey, rsa::Rsa, sign::Verifier};
        let rsa = Rsa::generate(2048).unwrap();
        let pem = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
        let key = ServiceAccountKey {
            client_email: "x@p.iam.gserviceaccount.com".into(),
            private_key_id: "k1".into(),
            private_key: pem,
            project_id: None,
        };
        let jwt = sign_jwt(&key, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| base64_any_decode(s).unwrap();
        let claims: Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(claims["aud"], json!(JWT_AUDIENCE));
        assert_eq!(claims["exp"].as_u64(), Some(1_700_003_600));
        let header: Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        let pkey = PKey::from_rsa(rsa).unwrap();
        let mut v = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        v.update(format!("{}.{}", parts[0], parts[1]).as_bytes()).unwrap();
        assert!(v.verify(&dec(parts[2])).unwrap());
        let bad = ServiceAccountKey { private_key: "nope".into(), ..key };
        assert!(!sign_jwt(&bad, 0).unwrap_err().message().contains("nope"));
    }

    fn shaped(shape: &RowShape, path: &str, fields: Value) -> Result<Value> {
        let fields = fields.as_object().unwrap().clone();
        let d = Doc { path, fields: &fields, read_time: "" };
        let mut row = vec![];
        shape.row(&d, &mut row)?;
        let keys: Vec<&str> = row.iter().map(|(k, _)| k.as_str()).collect();
        Ok(json!({"keys": keys, "row": Value::Object(row.iter().cloned().collect())}))
    }

    #[test]
    fn a_document_becomes_one_row_keys_first() {
        let s = |v: &str| json!({"stringValue": v});
        let shape = RowShape {
            parent_field: Some("customer_id".into()),
            path_field: Some("path".into()),
            ..RowShape::default()
        };
        let got =
            shaped(&shape, "customers/c1/orders/o9", json!({"z": s("last"), "a": {"integerValue": "7"}})).unwrap();
        assert_eq!(got["keys"], json!(["id", "customer_id", "path", "a", "z"]));
        assert_eq!(
            got["row"],
            json!({"id": "o9", "customer_id": "c1", "path": "customers/c1/orders/o9", "a": 7, "z": "last"})
        );
        // A top-level collection's documents have no parent.
        let got = shaped(&shape, "customers/c1", json!({})).unwrap();
        assert_eq!(got["row"], json!({"id": "c1", "customer_id": null, "path": "customers/c1"}));
        // --fields: only these, in this order; --drop: left out.
        let only = RowShape { fields: vec!["z".into(), "a".into(), "nope".into()], ..RowShape::default() };
        let got = shaped(&only, "t/x", json!({"a": s("1"), "b": s("2"), "z": s("3")})).unwrap();
        assert_eq!(got["keys"], json!(["id", "z", "a"]));
        let drop = RowShape { drop: vec!["b".into()], ..RowShape::default() };
        assert_eq!(shaped(&drop, "t/x", json!({"a": s("1"), "b": s("2")})).unwrap()["keys"], json!(["id", "a"]));
    }

    #[test]
    fn a_field_named_like_a_key_must_agree_with_it() {
        let s = |v: &str| json!({"stringValue": v});
        let shape = RowShape { path_field: Some("p".into()), ..RowShape::default() };
        // Agreeing: written once, as the key.
        let got = shaped(&shape, "t/x", json!({"id": s("x"), "p": s("t/x"), "n": s("1")})).unwrap();
        assert_eq!(got["keys"], json!(["id", "p", "n"]));
        // Disagreeing: refused, naming the way out, whichever key it is.
        for (fields, opt) in [(json!({"id": s("y")}), "--id-field"), (json!({"p": s("elsewhere")}), "--path-field")] {
            let e = shaped(&shape, "t/x", fields).unwrap_err();
            assert_eq!(e.exit_code(), 65);
            assert!(e.message().starts_with("document 't/x': its field '"), "{}", e.message());
            assert!(e.message().contains(&format!("the {opt} key")), "{}", e.message());
            assert!(e.message().contains("or leave the field out (--drop "), "{}", e.message());
        }
        // Dropped, it does not clash.
        let drop = RowShape { drop: vec!["id".into()], ..RowShape::default() };
        assert_eq!(shaped(&drop, "t/x", json!({"id": s("y")})).unwrap()["row"], json!({"id": "x"}));
        // A value that cannot be converted names the document and field.
        let e = shaped(&RowShape::default(), "t/x", json!({"bad": {"what": 1}})).unwrap_err();
        assert!(e.message().starts_with("document 't/x', field 'bad': "), "{}", e.message());
    }

    #[test]
    fn row_shape_options() {
        let mut a = pico_args::Arguments::from_vec(
            ["--id-field", "doc", "--parent-field", "p", "--ref-paths"].iter().map(Into::into).collect(),
        );
        let o = RowShape::from_args(&mut a, RowShape::default()).unwrap();
        assert_eq!((o.id_field.as_str(), o.parent_field.as_deref(), o.values.ref_paths), ("doc", Some("p"), true));
        let mut a = pico_args::Arguments::from_vec(["--path-field", "id"].iter().map(Into::into).collect());
        let e = RowShape::from_args(&mut a, RowShape::default()).unwrap_err();
        assert_eq!(e.message(), "--path-field and --id-field both name 'id'");
        let mut a = pico_args::Arguments::from_vec(["--id-field", ""].iter().map(Into::into).collect());
        assert_eq!(RowShape::from_args(&mut a, RowShape::default()).unwrap_err().message(), "--id-field needs a name");
    }

    #[test]
    fn base64_forms() {
        // JWT parts: URL-safe alphabet, no padding.
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        // The stream's bytes form: standard alphabet, padded; decoding takes either padding.
        assert_eq!(stream::base64_encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(stream::base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(stream::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(stream::base64_decode("aGV$").unwrap_err(), "invalid base64 character '$' at offset 3");
        assert_eq!(stream::base64_decode("aGVsb").unwrap_err(), "truncated base64");
        assert_eq!(stream::base64_decode("-_8").unwrap_err(), "invalid base64 character '-' at offset 0");
        // Firestore's bytesValue in either alphabet.
        let v = stream_value(&json!({"bytesValue": "-_8="}), ValueOptions::default()).unwrap();
        assert_eq!(v, stream::bytes_value(&[0xfb, 0xff]));
    }
}
