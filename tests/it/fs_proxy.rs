//! A loopback HTTP proxy in front of the Firestore emulator that injects faults: error
//! statuses (503, 429, 403...) and response bodies cut off mid-way. One request per
//! connection (`Connection: close`), so every request the tool makes is seen and planned.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does with request number n (0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Pass,
    /// Answer with this HTTP status and gRPC status, never reaching the emulator.
    Status(u16, &'static str),
    /// Forward, then send only this many bytes of the response body and close.
    Cut(usize),
}

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub authorization: String,
    pub user_project: String,
    pub body: String,
}

pub struct Proxy {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

type Plan = dyn Fn(usize) -> Fault + Send + Sync;
/// Checks the Authorization header; returns the one to forward, or None to answer 401.
type AuthRewrite = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Proxy {
    pub fn start(plan: impl Fn(usize) -> Fault + Send + Sync + 'static) -> Proxy {
        Proxy::with_auth(plan, |h| Some(h.to_string()))
    }

    pub fn with_auth(
        plan: impl Fn(usize) -> Fault + Send + Sync + 'static,
        auth: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Proxy {
        let upstream = std::env::var("FIRESTORE_EMULATOR_HOST")
            .expect("FIRESTORE_EMULATOR_HOST is not set: run the tests with tests/run, which starts the emulator");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan: Arc<Plan> = Arc::new(plan);
        let auth: Arc<AuthRewrite> = Arc::new(auth);
        let counter = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (plan, auth, seen, counter, upstream) =
                    (plan.clone(), auth.clone(), seen2.clone(), counter.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &upstream, &*plan, &*auth, &seen, &counter);
                });
            }
        });
        Proxy { addr, seen }
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = l.trim_end_matches(['\r', '\n']).to_string();
        if l.is_empty() {
            return Ok(lines);
        }
        lines.push(l);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn handle(
    conn: TcpStream,
    upstream: &str,
    plan: &Plan,
    auth: &AuthRewrite,
    seen: &Mutex<Vec<Seen>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let head = read_head(&mut r)?;
    let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let authorization = header(&head, "authorization").unwrap_or("").to_string();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let user_project = header(&head, "x-goog-user-project").unwrap_or("").to_string();
    seen.lock().unwrap().push(Seen {
        line: head[0].clone(),
        authorization: authorization.clone(),
        user_project,
        body: body_text,
    });
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let fault = plan(n);
    if let Fault::Status(code, grpc) = fault {
        return respond(&mut w, code, grpc, "injected by the test proxy");
    }
    let Some(forward_auth) = auth(&authorization) else {
        return respond(&mut w, 401, "UNAUTHENTICATED", "the test proxy refused the credentials");
    };
    // Forward with the (possibly rewritten) Authorization and Connection: close.
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{}\r\n", head[0]);
    for l in &head[1..] {
        let k = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if k != "authorization" && k != "connection" && k != "host" {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    req.push_str(&format!("Host: {upstream}\r\nAuthorization: {forward_auth}\r\nConnection: close\r\n\r\n"));
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let rhead = read_head(&mut ur)?;
    let mut rbody = Vec::new();
    if header(&rhead, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            ur.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            ur.read_exact(&mut chunk)?;
            rbody.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = header(&rhead, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        rbody = vec![0; len];
        ur.read_exact(&mut rbody)?;
    } else {
        ur.read_to_end(&mut rbody)?;
    }
    let mut out = format!("{}\r\n", rhead[0]);
    for l in &rhead[1..] {
        let k = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if !matches!(k.as_str(), "transfer-encoding" | "content-length" | "connection") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", rbody.len()));
    w.write_all(out.as_bytes())?;
    match fault {
        Fault::Cut(k) => w.write_all(&rbody[..k.min(rbody.len().saturating_sub(1))])?,
        _ => w.write_all(&rbody)?,
    }
    w.flush()?;
    let _ = w.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn respond(w: &mut TcpStream, code: u16, grpc: &str, message: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"error":{{"code":{code},"message":"{message}","status":"{grpc}"}}}}"#);
    let reason = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()?;
    let _ = w.shutdown(std::net::Shutdown::Both);
    Ok(())
}
