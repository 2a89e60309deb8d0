//! TLS for PostgreSQL connections: OpenSSL set up as libpq sets it up, on the postgres crate's
//! stream.
//!
//! Not native-tls: its connector loads the system's CA bundle for every process, twice
//! (OpenSSL's default paths, then openssl-probe's file), 0.08 s of CPU measured with OpenSSL 3, and
//! then throws it away when the roots are our own. libpq reads only the root certificate file it
//! is given (the system's roots only for `sslrootcert=system`), and so does this.

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslVerifyMode, SslVersion};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509VerifyResult, X509};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream as PgTlsStream};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// What is checked of the server's certificate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verify {
    /// Nothing (sslmode prefer or require without a root certificate): encrypted only.
    Nothing,
    /// Its chain, against the roots (verify-ca; require with a root certificate, as libpq).
    Chain,
    /// Its chain and that it names the host connected to (verify-full).
    ChainAndHost,
}

/// Where the trusted roots come from.
pub enum Roots {
    None,
    /// The system's trusted CAs (`sslrootcert=system`).
    System,
    Certificates(Vec<X509>),
}

/// A client certificate (its chain after it) and its key.
pub struct Identity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Makes the TLS session of each connection; cheap to clone (the context is shared).
#[derive(Clone)]
pub struct MakeTls {
    ctx: SslContext,
    verify: Verify,
    sni: bool,
    /// Said after a certificate that does not verify (what to do about it).
    hint: Option<String>,
}

impl MakeTls {
    pub fn new(
        roots: Roots,
        verify: Verify,
        sni: bool,
        identity: Option<Identity>,
        hint: Option<String>,
    ) -> Result<MakeTls, ErrorStack> {
        let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
        // libpq's defaults: ssl_min_protocol_version TLSv1.2, no compression, no renegotiation.
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        b.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
        match roots {
            Roots::None => {}
            Roots::System => b.set_default_verify_paths()?,
            Roots::Certificates(certs) => {
                for cert in certs {
                    b.cert_store_mut().add_cert(cert)?;
                }
            }
        }
        b.set_verify(if verify == Verify::Nothing { SslVerifyMode::NONE } else { SslVerifyMode::PEER });
        if let Some(id) = identity {
            let mut chain = id.chain.into_iter();
            if let Some(leaf) = chain.next() {
                b.set_certificate(&leaf)?;
            }
            for cert in chain {
                b.add_extra_chain_cert(cert)?;
            }
            b.set_private_key(&id.key)?;
            b.check_private_key()?;
        }
        Ok(MakeTls { ctx: b.build(), verify, sni, hint })
    }
}

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = ErrorStack;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        let ip = host.parse::<std::net::IpAddr>().ok();
        // libpq sends SNI (sslsni=1) for host names, never for addresses.
        if self.sni && ip.is_none() && !host.is_empty() {
            ssl.set_hostname(host)?;
        }
        if self.verify == Verify::ChainAndHost {
            let p = ssl.param_mut();
            p.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match ip {
                Some(ip) => p.set_ip(ip)?,
                None => p.set_host(host)?,
            }
        }
        Ok(Connect { ssl, verifies: self.verify != Verify::Nothing, hint: self.hint.clone() })
    }
}

/// One connection's TLS session, before its handshake.
pub struct Connect {
    ssl: Ssl,
    /// The server's certificate is checked (else OpenSSL records a verdict it does not act on).
    verifies: bool,
    hint: Option<String>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // Reads through a buffer: a TLS record's header and body are then one read.
            let mut s = tokio_openssl::SslStream::new(self.ssl, BufReader::with_capacity(8192, stream))?;
            if let Err(e) = Pin::new(&mut s).connect().await {
                // The verification's own reason ("hostname mismatch") says more than the
                // handshake's error stack.
                let why = s.ssl().verify_result();
                if !self.verifies || why == X509VerifyResult::OK {
                    return Err(e.into());
                }
                let hint = self.hint.map(|h| format!(" ({h})")).unwrap_or_default();
                return Err(format!("server certificate: {}{hint}", why.error_string()).into());
            }
            Ok(TlsStream(s))
        })
    }
}

/// An encrypted connection.
pub struct TlsStream<S>(tokio_openssl::SslStream<BufReader<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PgTlsStream for TlsStream<S> {
    /// SCRAM's channel binding (`tls-server-end-point`, RFC 5929): a hash of the server's
    /// certificate by its signature's digest, SHA-256 for MD5 and SHA-1.
    fn channel_binding(&self) -> ChannelBinding {
        match server_end_point(self.0.ssl()) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

fn server_end_point(ssl: &SslRef) -> Option<Vec<u8>> {
    let cert = ssl.peer_certificate()?;
    let algorithms = cert.signature_algorithm().object().nid().signature_algorithms()?;
    let digest = match algorithms.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        nid => MessageDigest::from_nid(nid)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}
