//! Google Application Default Credentials, found in the order Google's client libraries find
//! them: `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known file
//! (`gcloud auth application-default login`), then the metadata server (GCE, Cloud Run, GKE).
//! A user's login is an `authorized_user` file whose refresh token is exchanged for access
//! tokens at its `token_uri`; the metadata server hands out its service account's tokens.
//! No token, refresh token or client secret is ever put in a message.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Google's OAuth 2.0 token endpoint (an `authorized_user` file's default `token_uri`).
pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server's fixed address, which Google's libraries ping first.
pub const METADATA_IP: &str = "169.254.169.254";

/// What a credentials file holds.
pub enum FileKind {
    /// A service account's key (the caller signs its own tokens with it).
    ServiceAccount,
    /// A user's login.
    User(UserLogin),
}

/// An `authorized_user` file: what the refresh-token exchange needs.
pub struct UserLogin {
    pub file: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: String,
    /// The project billed for the user's API calls (`x-goog-user-project`).
    pub quota_project: Option<String>,
}

/// gcloud's well-known ADC file: `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
/// `~/.config/gcloud/application_default_credentials.json`.
pub fn well_known_file() -> Option<PathBuf> {
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let dir = env("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config").join("gcloud")))?;
    Some(dir.join("application_default_credentials.json"))
}

/// Reads a credentials file's type (and, for a user's login, its fields).
pub fn read_file(path: &str) -> Result<FileKind> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read credentials '{path}'"), e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|_| Error::Data(format!("credentials '{path}': not a JSON key file")))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty());
    match field("type").as_deref() {
        Some("service_account") => Ok(FileKind::ServiceAccount),
        Some("authorized_user") => {
            let need = |k: &str| field(k).ok_or_else(|| Error::Data(format!("credentials '{path}': no \"{k}\"")));
            let token_uri = field("token_uri").unwrap_or_else(|| TOKEN_URI.into());
            check_https(&token_uri).map_err(|e| e.context(format!("credentials '{path}'")))?;
            Ok(FileKind::User(UserLogin {
                file: path.to_string(),
                client_id: need("client_id")?,
                client_secret: need("client_secret")?,
                refresh_token: need("refresh_token")?,
                token_uri,
                quota_project: field("quota_project_id"),
            }))
        }
        other => Err(Error::Data(format!(
            "credentials '{path}': type is {}, expected \"service_account\" or \"authorized_user\"",
            other.map(|t| format!("\"{t}\"")).unwrap_or("missing".into())
        ))),
    }
}

/// A refresh token travels only over https, or plain http to this machine (tests, proxies).
fn check_https(uri: &str) -> Result<()> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| uri.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with([':', '/'])));
    if uri.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(Error::Usage(format!("token_uri '{uri}': tokens are requested over https only")))
    }
}

/// Where access tokens come from.
pub enum Source {
    User(UserLogin),
    /// The metadata server at this host (`host[:port]`).
    Metadata(String),
}

/// An access token and how long it is good for.
pub struct Token {
    pub token: String,
    pub lifetime: Duration,
}

fn http(timeout: Duration) -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("pgferry/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| Error::Unavailable(format!("start the HTTP client: {e}")))
}

/// The metadata server's host: `GCE_METADATA_HOST` (Google's libraries honour it; the
/// emulators and tests use it), else the fixed address.
pub fn metadata_host() -> String {
    std::env::var("GCE_METADATA_HOST").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| METADATA_IP.into())
}

/// Whether a metadata server answers (as Google's libraries check: `Metadata-Flavor: Google`
/// on its reply), within a second; off Google Cloud nothing answers.
pub fn metadata_available(host: &str) -> bool {
    let Ok(c) = http(Duration::from_secs(1)) else { return false };
    match c.get(format!("http://{host}/computeMetadata/v1/")).header("Metadata-Flavor", "Google").send() {
        Ok(r) => r.headers().get("metadata-flavor").is_some_and(|v| v == "Google"),
        Err(_) => false,
    }
}

/// The project the metadata server's machine belongs to.
pub fn metadata_project(host: &str) -> Option<String> {
    let c = http(Duration::from_secs(5)).ok()?;
    let r = c
        .get(format!("http://{host}/computeMetadata/v1/project/project-id"))
        .header("Metadata-Flavor", "Google")
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

impl Source {
    /// Fetches a fresh access token.
    pub fn token(&self) -> Result<Token> {
        let c = http(Duration::from_secs(30))?;
        let (what, resp) = match self {
            Source::User(u) => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", u.client_id.as_str()),
                    ("client_secret", u.client_secret.as_str()),
                    ("refresh_token", u.refresh_token.as_str()),
                ];
                let body: String =
                    form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
                let what = format!("refresh the user login in '{}' at {}", u.file, u.token_uri);
                let r =
                    c.post(&u.token_uri).header("Content-Type", "application/x-www-form-urlencoded").body(body).send();
                (what, r)
            }
            Source::Metadata(host) => {
                let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
                let r = c.get(url).header("Metadata-Flavor", "Google").send();
                (format!("get a token from the metadata server at {host}"), r)
            }
        };
        let resp = resp.map_err(|e| Error::Unavailable(format!("{what}: {}", cause(&e))))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            // OAuth errors are codes and descriptions, never the secrets sent.
            let code = v.get("error").and_then(Value::as_str).unwrap_or("");
            let desc = v.get("error_description").and_then(Value::as_str).unwrap_or("");
            let hint =
                if code == "invalid_grant" { " (run 'gcloud auth application-default login' again)" } else { "" };
            return Err(Error::Unavailable(format!("{what}: {status} {code} {desc}{hint}").replace("  ", " ")));
        }
        let token = v.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(Error::Unavailable(format!("{what}: the answer holds no access_token")));
        };
        let secs = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        // Renewed five minutes early (at least halfway), so no request carries a dying token.
        let lifetime = Duration::from_secs(secs.saturating_sub(300).max(secs / 2));
        Ok(Token { token: token.to_string(), lifetime })
    }

    pub fn describe(&self) -> String {
        match self {
            Source::User(u) => format!("the user login in '{}' (Application Default Credentials)", u.file),
            Source::Metadata(host) => format!("the metadata server's service account ({host})"),
        }
    }

    /// The project billed for user credentials: `GOOGLE_CLOUD_QUOTA_PROJECT`, else the file's.
    pub fn quota_project(&self) -> Option<String> {
        let env = std::env::var("GOOGLE_CLOUD_QUOTA_PROJECT").ok().filter(|s| !s.is_empty());
        match self {
            Source::User(u) => env.or_else(|| u.quota_project.clone()),
            Source::Metadata(_) => env,
        }
    }
}

/// reqwest's error with its causes in one line (the URLs it quotes hold no secret).
fn cause(e: &reqwest::Error) -> String {
    crate::error::chain(e)
}

/// application/x-www-form-urlencoded value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_and_https() {
        assert_eq!(form_encode("1//0a+b/c="), "1%2F%2F0a%2Bb%2Fc%3D");
        assert!(check_https("https://oauth2.googleapis.com/token").is_ok());
        assert!(check_https("http://127.0.0.1:8080/token").is_ok());
        assert!(check_https("http://localhost/token").is_ok());
        assert!(check_https("http://localhost.evil.com/token").is_err());
        assert!(check_https("http://oauth2.example.com/token").is_err());
    }
}
