//! The edge: who the client is and what the app is told about it. A
//! client's own `X-Forwarded-*` and `Forwarded` headers are believed only
//! from a configured trusted proxy (and then appended to); from anyone
//! else they are replaced by what this proxy saw. A request with two `Host`
//! headers, or an HTTP/1.1 request without one, is refused. Every request
//! carries an `X-Request-Id`: the client's, if it is a sane one, else a new
//! one. Pure functions over headers; the connection's facts come in
//! [`Client`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The edge's settings, for the whole proxy.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Peers (load balancers, CDNs) whose forwarded headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Peers that open each connection with a PROXY protocol v2 header
    /// naming the real client.
    pub proxy_protocol: Vec<ipnet::IpNet>,
    /// For a client to send a request's headers (or the next request on an
    /// idle keep-alive connection, or a PROXY header).
    pub header_timeout: std::time::Duration,
    /// The longest pause between two pieces of a request body.
    pub body_timeout: std::time::Duration,
    /// Client connections open at once; beyond, new ones wait in the
    /// kernel's queue until one closes.
    pub max_connections: usize,
}

impl Default for EdgeConfig {
    fn default() -> EdgeConfig {
        EdgeConfig {
            trusted_proxies: Vec::new(),
            proxy_protocol: Vec::new(),
            header_timeout: std::time::Duration::from_secs(30),
            body_timeout: std::time::Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

impl EdgeConfig {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        contains(&self.trusted_proxies, ip)
    }

    pub(crate) fn speaks_proxy_protocol(&self, ip: IpAddr) -> bool {
        contains(&self.proxy_protocol, ip)
    }
}

fn contains(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|net| net.contains(&ip))
}

/// What one client connection is, as far as the edge knows.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The address the app is told about: the peer's, or the one a PROXY
    /// protocol header named.
    pub ip: IpAddr,
    /// Formatted once per connection, not per request.
    pub ip_header: HeaderValue,
    /// Whether the peer's forwarded headers are believed.
    pub trusted: bool,
    /// `http` or `https`, as this proxy was reached.
    pub scheme: &'static str,
}

impl Client {
    pub fn new(ip: IpAddr, trusted: bool, scheme: &'static str) -> Client {
        let ip = ip.to_canonical();
        Client {
            ip,
            ip_header: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            trusted,
            scheme,
        }
    }
}

/// Why a request is refused before anything else looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    TwoHosts,
    NoHost,
}

impl Malformed {
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::TwoHosts => "the request has more than one Host header",
            Malformed::NoHost => "an HTTP/1.1 request needs a Host header",
        }
    }
}

/// Refuses what no app should see: two `Host` headers (which one routes?),
/// or HTTP/1.1 without one. (A body framed two ways, Content-Length and
/// Transfer-Encoding, never gets here as such: hyper drops the length,
/// reads the chunks and closes the connection afterwards, as RFC 9112
/// §6.3 asks of an intermediary.)
pub(crate) fn check(version: Version, headers: &HeaderMap) -> Result<(), Malformed> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(Malformed::TwoHosts),
        (None, _) if version == Version::HTTP_11 => Err(Malformed::NoHost),
        _ => Ok(()),
    }
}

/// The request id: the client's when it is short visible ASCII (so it can
/// be logged and passed on as it is), else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(&X_REQUEST_ID) {
        let bytes = given.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return given.clone();
        }
    }
    new_request_id()
}

/// Unique for this process's life and across restarts: the start time and
/// a counter, hex. Not a secret; only an id to find a request by.
fn new_request_id() -> HeaderValue {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{started:013x}-{n:08x}"))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Sets the forwarded headers the app sees. From a trusted peer, what it
/// says is kept and this hop is appended; from anyone else, the client's
/// own values are replaced by what this proxy saw.
pub(crate) fn forwarded_headers(
    headers: &mut HeaderMap,
    client: &Client,
    host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    let for_value = if client.trusted {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            client.ip_header.clone()
        } else {
            let ip = client.ip_header.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
                .unwrap_or_else(|_| client.ip_header.clone())
        }
    } else {
        client.ip_header.clone()
    };
    headers.insert(X_FORWARDED_FOR, for_value);
    let proto = HeaderValue::from_static(client.scheme);
    if client.trusted {
        headers.entry(X_FORWARDED_PROTO).or_insert(proto);
    } else {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    if let Some(host) = host {
        if client.trusted {
            headers
                .entry(X_FORWARDED_HOST)
                .or_insert_with(|| host.clone());
        } else {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    // RFC 7239: the same facts in one header; IPv6 addresses quoted.
    let node = match client.ip {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    };
    let mut element = format!("for={node};proto={}", client.scheme);
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        if host.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            element.push_str(&format!(";host=\"{host}\""));
        }
    }
    let forwarded = match headers.get(&FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if client.trusted => format!("{prior}, {element}"),
        _ => element,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(FORWARDED, value);
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Reads a PROXY protocol v2 header from the start of a connection and
/// returns the client address it names (None for a `LOCAL` connection,
/// such as a load balancer's health check). Reads exactly the header.
pub(crate) async fn read_proxy_header<S>(stream: &mut S) -> std::io::Result<Option<IpAddr>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    // 12-byte signature, version/command, family, 2-byte length.
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    let length = u16::from_be_bytes([head[14], head[15]]) as usize;
    // At most a few addresses and TLVs; refuse anything larger.
    if length > 4096 {
        return Err(bad(format!("a PROXY header of {length} bytes is too long")));
    }
    let mut header = head.to_vec();
    header.resize(16 + length, 0);
    stream.read_exact(&mut header[16..]).await?;
    let parsed = ppp::v2::Header::try_from(&header[..])
        .map_err(|e| bad(format!("not a PROXY protocol v2 header: {e}")))?;
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(IpAddr::V4(a.source_address)),
        ppp::v2::Addresses::IPv6(a) => Some(IpAddr::V6(a.source_address)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn an_untrusted_clients_forwarded_headers_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("forwarded", "for=6.6.6.6;proto=https"),
        ]);
        let client = Client::new("203.0.113.9".parse().unwrap(), false, "http");
        let host = HeaderValue::from_static("shop.example");
        forwarded_headers(
            &mut h,
            &client,
            Some(&host),
            &HeaderValue::from_static("id1"),
        );
        assert_eq!(get(&h, "x-forwarded-for"), "203.0.113.9");
        assert_eq!(get(&h, "x-forwarded-proto"), "http");
        assert_eq!(get(&h, "x-forwarded-host"), "shop.example");
        assert_eq!(
            get(&h, "forwarded"),
            "for=203.0.113.9;proto=http;host=\"shop.example\""
        );
        assert_eq!(get(&h, "x-request-id"), "id1");
    }

    #[test]
    fn a_trusted_proxys_forwarded_headers_are_kept_and_appended_to() {
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ]);
        let client = Client::new("10.0.0.2".parse().unwrap(), true, "http");
        forwarded_headers(&mut h, &client, None, &HeaderValue::from_static("id"));
        assert_eq!(get(&h, "x-forwarded-for"), "198.51.100.7, 10.0.0.2");
        assert_eq!(get(&h, "x-forwarded-proto"), "https");
        assert_eq!(get(&h, "x-forwarded-host"), "shop.example");
        assert_eq!(
            get(&h, "forwarded"),
            "for=198.51.100.7;proto=https, for=10.0.0.2;proto=http"
        );
        let v6 = Client::new("2001:db8::1".parse().unwrap(), false, "https");
        let mut h = HeaderMap::new();
        forwarded_headers(&mut h, &v6, None, &HeaderValue::from_static("id"));
        assert_eq!(get(&h, "forwarded"), "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn two_hosts_or_none_in_http_1_1_are_refused() {
        let two = headers(&[("host", "a.example"), ("host", "b.example")]);
        assert_eq!(check(Version::HTTP_11, &two), Err(Malformed::TwoHosts));
        assert_eq!(
            check(Version::HTTP_11, &HeaderMap::new()),
            Err(Malformed::NoHost)
        );
        assert_eq!(check(Version::HTTP_10, &HeaderMap::new()), Ok(()));
        assert_eq!(check(Version::HTTP_11, &headers(&[("host", "a")])), Ok(()));
    }

    #[test]
    fn a_sane_request_id_is_kept_and_anything_else_replaced() {
        let kept = request_id(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
        let long = "x".repeat(200);
        let replaced = request_id(&headers(&[("x-request-id", &long)]));
        assert_ne!(replaced, long.as_str());
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_proxy_protocol_v2_header_names_the_client() {
        // Signature, v2 PROXY, TCP over IPv4, 12 bytes of addresses.
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        bytes.extend_from_slice(&[203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x00, 0x50]);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut stream = &bytes[..];
        let client = read_proxy_header(&mut stream).await.unwrap();
        assert_eq!(client, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(stream, b"GET / HTTP/1.1\r\n", "exactly the header was read");
        let mut junk = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(read_proxy_header(&mut junk).await.is_err());
    }
}
