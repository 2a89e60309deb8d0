//! A loopback TCP proxy in front of the test PostgreSQL that injects faults at exact points
//! of the wire protocol: a COMMIT whose reply is lost or cut after N bytes, a COMMIT that never
//! arrives, a connection that stalls without closing, connections refused. The client side is
//! read message by message (the server side is forwarded as bytes), so a fault lands where the
//! test says, not where timing puts it. It answers SSLRequest with 'N': the tools talk plain
//! text to it, the proxy to the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forward the first COMMIT; of the server's reply (to its ReadyForQuery) send the client
    /// only this many bytes (0: none), then close both sides.
    CutCommitReply(usize),
    /// As CutCommitReply, and refuse every connection from then on (the outcome cannot be learnt).
    CutCommitReplyThenRefuse(usize),
    /// Do not forward the first COMMIT; close both sides (the server then aborts).
    DropCommit,
    /// Forward the first COMMIT and its reply, then stop forwarding anything from any client
    /// (every connection stalls; none is closed).
    StallAfterCommit,
    /// Once this many bytes of COPY data went through, stop forwarding in both directions on
    /// that connection, closing nothing.
    StallInCopy(usize),
}

#[derive(Default)]
struct Shared {
    /// The fault happened (COMMIT seen, or the COPY stalled).
    fired: AtomicBool,
    /// StallAfterCommit: the COMMIT's reply reached the client.
    commit_answered: AtomicBool,
    refuse: AtomicBool,
    stall_all: AtomicBool,
}

pub struct PgProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl PgProxy {
    /// A proxy in front of the server of `url` (a postgres:// URL).
    pub fn start(url: &str, fault: Fault) -> PgProxy {
        let upstream = host_port(url);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if s.refuse.load(Ordering::SeqCst) {
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                }
                let (s, up) = (s.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, &up, fault, &s);
                });
            }
        });
        PgProxy { port, shared }
    }

    /// `url` pointed at the proxy.
    pub fn url(&self, url: &str) -> String {
        url.replacen(&host_port(url), &format!("127.0.0.1:{}", self.port), 1)
    }

    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    pub fn commit_answered(&self) -> bool {
        self.shared.commit_answered.load(Ordering::SeqCst)
    }
}

fn host_port(url: &str) -> String {
    let after = url.split_once('@').map(|(_, r)| r).unwrap_or(url.trim_start_matches("postgres://"));
    after.split('/').next().unwrap().to_string()
}

fn read_exact(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// One client connection: startup, then client messages one by one, server bytes as they come.
fn relay(mut client: TcpStream, upstream: &str, fault: Fault, s: &Arc<Shared>) -> std::io::Result<()> {
    // Startup: answer SSLRequest / GSSENCRequest with 'N', forward the real startup packet.
    let startup = loop {
        let len = u32::from_be_bytes(read_exact(&mut client, 4)?.try_into().unwrap()) as usize;
        let body = read_exact(&mut client, len - 4)?;
        let code = u32::from_be_bytes(body[..4].try_into().unwrap());
        if code == 80877103 || code == 80877104 {
            client.write_all(b"N")?;
            continue;
        }
        let mut p = (len as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        break p;
    };
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&startup)?;
    // Per connection: 1 = COMMIT sent (the reply is being watched), 2 = stalled.
    let state = Arc::new(AtomicUsize::new(0));
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let (st, sh) = (state.clone(), s.clone());
    let keep = match fault {
        Fault::CutCommitReply(k) | Fault::CutCommitReplyThenRefuse(k) => Some(k),
        _ => None,
    };
    let refuse_after = matches!(fault, Fault::CutCommitReplyThenRefuse(_));
    let stall_after_commit = fault == Fault::StallAfterCommit;
    let downstream = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        let mut reply: Vec<u8> = vec![];
        loop {
            let n = from_server.read(&mut buf)?;
            if n == 0 {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            while st.load(Ordering::SeqCst) == 2 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if st.load(Ordering::SeqCst) != 1 {
                to_client.write_all(&buf[..n])?;
                continue;
            }
            // The reply to COMMIT: collect it up to ReadyForQuery ('Z', 6 bytes).
            reply.extend_from_slice(&buf[..n]);
            if !ends_with_ready(&reply) {
                continue;
            }
            match keep {
                Some(k) => {
                    if refuse_after {
                        sh.refuse.store(true, Ordering::SeqCst);
                    }
                    to_client.write_all(&reply[..k.min(reply.len())])?;
                    let _ = to_client.shutdown(Shutdown::Both);
                    let _ = from_server.shutdown(Shutdown::Both);
                    return Ok(());
                }
                None => {
                    to_client.write_all(&reply)?;
                    reply.clear();
                    st.store(0, Ordering::SeqCst);
                    if stall_after_commit {
                        sh.stall_all.store(true, Ordering::SeqCst);
                        sh.commit_answered.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    let mut copied = 0usize;
    while let Ok(head) = read_exact(&mut client, 5) {
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let body = read_exact(&mut client, len - 4)?;
        while s.stall_all.load(Ordering::SeqCst) || state.load(Ordering::SeqCst) == 2 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let is_commit = head[0] == b'Q' && body.strip_suffix(b"\0").is_some_and(|q| q.eq_ignore_ascii_case(b"COMMIT"));
        if is_commit && !s.fired.swap(true, Ordering::SeqCst) {
            match fault {
                Fault::DropCommit => {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    break;
                }
                Fault::CutCommitReply(_) | Fault::CutCommitReplyThenRefuse(_) | Fault::StallAfterCommit => {
                    state.store(1, Ordering::SeqCst)
                }
                _ => s.fired.store(false, Ordering::SeqCst),
            }
        }
        if head[0] == b'd' {
            copied += body.len();
            if let Fault::StallInCopy(limit) = fault {
                if copied >= limit && !s.fired.swap(true, Ordering::SeqCst) {
                    state.store(2, Ordering::SeqCst);
                    // Hold both sockets open, forwarding nothing, until the test ends.
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
            }
        }
        server.write_all(&head)?;
        server.write_all(&body)?;
    }
    let _ = server.shutdown(Shutdown::Write);
    let _ = downstream.join();
    Ok(())
}

/// Whether `b` (whole server messages from some point) ends with a ReadyForQuery message.
fn ends_with_ready(b: &[u8]) -> bool {
    let mut i = 0;
    let mut last = 0u8;
    while i + 5 <= b.len() {
        let len = u32::from_be_bytes(b[i + 1..i + 5].try_into().unwrap()) as usize;
        if i + 1 + len > b.len() {
            return false;
        }
        last = b[i];
        i += 1 + len;
    }
    i == b.len() && last == b'Z'
}
