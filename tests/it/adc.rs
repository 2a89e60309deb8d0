//! Google Application Default Credentials (src/gauth.rs) against a fake OAuth token endpoint
//! and a fake metadata server on loopback; Firestore itself is the real emulator, behind the
//! test proxy that checks the bearer token and records `x-goog-user-project`.

use crate::fs_export::Fs;
use crate::fs_proxy::{Fault, Proxy};
use crate::harness::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A request the fake server saw: method and path, headers (lowercased names), body.
#[derive(Debug, Clone)]
struct Req {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A one-request-per-connection HTTP server answering with `answer(request)` = (status,
/// extra headers, body).
struct Fake {
    addr: String,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn start(
        answer: impl Fn(&Req) -> (u16, Vec<(&'static str, &'static str)>, String) + Send + Sync + 'static,
    ) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, answer) = (seen.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut headers = vec![];
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
                let mut body = vec![0; len.unwrap_or(0)];
                let _ = r.read_exact(&mut body);
                let req = Req { line: line.trim().to_string(), headers, body: String::from_utf8_lossy(&body).into() };
                let (status, extra, text) = answer(&req);
                seen2.lock().unwrap().push(req);
                let mut w = conn;
                let mut head =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", text.len());
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = w.write_all(format!("{head}\r\n{text}").as_bytes());
            }
        });
        Fake { addr, seen }
    }

    fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

/// The proxy in front of the emulator lets through only this bearer token.
fn firestore_accepting(token: &'static str) -> Proxy {
    Proxy::with_auth(|_| Fault::Pass, move |h| (h == format!("Bearer {token}")).then(|| "Bearer owner".into()))
}

fn user_file(path: &std::path::Path, token_uri: &str, quota: Option<&str>) {
    let mut v = json!({
        "type": "authorized_user",
        "client_id": "123-abc.apps.googleusercontent.com",
        "client_secret": "cl1ent-s3cret",
        "refresh_token": "1//refr3sh-s3cret",
        "token_uri": token_uri,
    });
    if let Some(q) = quota {
        v["quota_project_id"] = json!(q);
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v.to_string()).unwrap();
}

fn no_secrets(r: &Run) {
    for s in ["cl1ent-s3cret", "refr3sh-s3cret", "acc3ss-tok"] {
        assert!(!r.stderr().contains(s) && !r.stdout().contains(s), "{s} shown\n{}", r.describe());
    }
}

#[test]
fn an_authorized_user_file_is_refreshed_at_its_token_endpoint_with_the_quota_project() {
    let fs = Fs::new();
    fs.put1("c/d", json!({"v": {"integerValue": "1"}}));
    let oauth = Fake::start(|r| {
        let ok = r.line.starts_with("POST /token ")
            && r.header("content-type") == Some("application/x-www-form-urlencoded")
            && r.body.contains("grant_type=refresh_token")
            && r.body.contains("refresh_token=1%2F%2Frefr3sh-s3cret")
            && r.body.contains("client_id=123-abc.apps.googleusercontent.com")
            && r.body.contains("client_secret=cl1ent-s3cret");
        if ok {
            (
                200,
                vec![("Content-Type", "application/json")],
                json!({"access_token": "acc3ss-tok-1", "expires_in": 3599, "token_type": "Bearer"}).to_string(),
            )
        } else {
            (400, vec![], json!({"error": "invalid_request"}).to_string())
        }
    });
    let proxy = firestore_accepting("acc3ss-tok-1");
    let endpoint = format!("http://{}", proxy.addr);
    let home = TempDir::new();
    // gcloud's well-known file, found through HOME, as after `gcloud auth application-default login`.
    user_file(
        &home.path(".config/gcloud/application_default_credentials.json"),
        &format!("http://{}/token", oauth.addr),
        Some("billing-proj"),
    );
    let r = fs.export().args(["c", "--endpoint", &endpoint]).env("HOME", &home.0).ok();
    assert_eq!(r.json_lines()[0], json!({"id": "d", "v": 1}));
    no_secrets(&r);
    assert_eq!(oauth.requests().len(), 1, "one exchange, then the token is reused");
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|s| s.user_project == "billing-proj"), "{seen:?}");
    // GOOGLE_APPLICATION_CREDENTIALS names the file; GOOGLE_CLOUD_QUOTA_PROJECT overrides its quota project.
    let other = TempDir::new();
    user_file(&other.path("adc.json"), &format!("http://{}/token", oauth.addr), Some("billing-proj"));
    let before = proxy.requests();
    let r = fs
        .export()
        .args(["c", "--endpoint", &endpoint])
        .env("GOOGLE_APPLICATION_CREDENTIALS", other.path("adc.json"))
        .env("GOOGLE_CLOUD_QUOTA_PROJECT", "other-billing")
        .ok();
    no_secrets(&r);
    assert!(proxy.seen.lock().unwrap()[before..].iter().all(|s| s.user_project == "other-billing"));
    // A refused refresh token: unavailable (69), the file named, nothing secret shown.
    user_file(&other.path("bad.json"), &format!("http://{}/wrong", oauth.addr), None);
    let r = fs.export().args(["c", "--endpoint", &endpoint, "--credentials", &other.str("bad.json")]).expect(69);
    r.stderr_has(&["refresh the user login in", "bad.json", "400", "invalid_request"]);
    no_secrets(&r);
    // A refresh token never goes over plain http to another machine.
    user_file(&other.path("far.json"), "http://oauth.example.com/token", None);
    let r = fs.export().args(["c", "--endpoint", &endpoint, "--credentials", &other.str("far.json")]).expect(64);
    r.stderr_has(&["https only"]);
}

#[test]
fn the_metadata_server_when_nothing_else_is_set() {
    let fs = Fs::new();
    fs.put1("c/d", json!({"v": {"integerValue": "2"}}));
    let project = fs.project.clone();
    let meta = Fake::start(move |r| {
        let flavor = [("Metadata-Flavor", "Google")];
        if r.header("metadata-flavor") != Some("Google") {
            return (403, vec![], "missing Metadata-Flavor".into());
        }
        match r.line.split(' ').nth(1).unwrap_or("") {
            "/computeMetadata/v1/" => (200, flavor.to_vec(), "instance/\nproject/\n".into()),
            "/computeMetadata/v1/project/project-id" => (200, flavor.to_vec(), project.clone()),
            "/computeMetadata/v1/instance/service-accounts/default/token" => (
                200,
                vec![("Metadata-Flavor", "Google"), ("Content-Type", "application/json")],
                json!({"access_token": "acc3ss-tok-meta", "expires_in": 3599, "token_type": "Bearer"}).to_string(),
            ),
            _ => (404, flavor.to_vec(), "not found".into()),
        }
    });
    let proxy = firestore_accepting("acc3ss-tok-meta");
    let endpoint = format!("http://{}", proxy.addr);
    // No --project: the metadata server says which project this machine is in.
    let r = cmd("fs-export").args(["c", "--endpoint", &endpoint]).env("GCE_METADATA_HOST", &meta.addr).ok();
    assert_eq!(r.json_lines()[0], json!({"id": "d", "v": 2}));
    no_secrets(&r);
    let paths: Vec<String> = meta.requests().iter().map(|q| q.line.clone()).collect();
    assert!(paths.iter().any(|p| p.contains("/service-accounts/default/token")), "{paths:?}");
    assert!(proxy.seen.lock().unwrap().iter().all(|s| s.user_project.is_empty()));
    // Without any credentials and no metadata server: the error says what was looked for.
    let r = fs.export().args(["c", "--endpoint", &endpoint]).env("GCE_METADATA_HOST", "127.0.0.1:1").expect(64);
    r.stderr_has(&[
        "no Firestore credentials",
        "application_default_credentials.json",
        "no metadata server at 127.0.0.1:1",
    ]);
}
