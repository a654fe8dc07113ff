//! The route table: for each app and environment, its hosts and which target
//! is live or in preview. A table is immutable; a switch builds a new one and
//! swaps it in whole, so a request sees either the old table or the new one,
//! never half of each. Everything here is pure and synchronous.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hold::Gate;
use crate::target::Target;
use crate::ProxyError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteKey {
    pub app: String,
    pub environment: String,
}

impl RouteKey {
    pub fn new(app: impl Into<String>, environment: impl Into<String>) -> RouteKey {
        RouteKey {
            app: app.into(),
            environment: environment.into(),
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.app, self.environment)
    }
}

/// A target as the control plane names it to the proxy: which one, where
/// it listens, which release it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub id: i64,
    pub addr: SocketAddr,
    pub release: String,
}

impl TargetRef {
    pub fn new(id: i64, addr: SocketAddr, release: impl Into<String>) -> TargetRef {
        TargetRef {
            id,
            addr,
            release: release.into(),
        }
    }
}

/// What the orchestrator asks the proxy to do for one app and environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub key: RouteKey,
    pub hosts: Vec<String>,
    /// Hosts that always reach the preview target (or the live one when no
    /// release is in preview).
    pub preview_hosts: Vec<String>,
    pub live: Option<TargetRef>,
    /// The live release's other instances (`[web] instances`): the live
    /// side's requests are spread over `live` and these.
    #[serde(default)]
    pub live_instances: Vec<TargetRef>,
    pub preview: Option<TargetRef>,
    /// How long a request may wait while the route is held.
    pub hold_timeout: Duration,
    /// Timeouts and sizes for this app's requests.
    pub limits: RouteLimits,
    /// In maintenance: every request is answered 503 with this message,
    /// and the app keeps running.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// HTTPS for the route's hosts (the app's `[tls]`), if it has any.
    #[serde(default)]
    pub tls: Option<RouteTls>,
    /// A canary: a share of the clients reaches this target instead of the
    /// live one.
    #[serde(default)]
    pub canary: Option<CanarySpec>,
    /// The proxy answers `/_baton/events` and `/_baton/live.js` on the
    /// route's hosts: pages learn that a new version is live.
    #[serde(default)]
    pub live_updates: bool,
}

/// A canary step: `percent` of the clients (by their sticky bucket) reach
/// `target`; the others the live one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySpec {
    pub target: TargetRef,
    pub percent: u8,
}

/// How a route's hosts are served over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTls {
    /// Where the certificate comes from (the control plane gets it; the
    /// proxy serves what it is given).
    pub source: TlsSource,
    /// Plain-HTTP requests are redirected (308) to HTTPS once a
    /// certificate is served for the host.
    pub redirect: bool,
    /// `Strict-Transport-Security: max-age` on HTTPS responses, if any.
    pub hsts: Option<Duration>,
}

impl RouteTls {
    pub(crate) fn hsts_header(&self) -> Option<http::HeaderValue> {
        let max_age = self.hsts?;
        http::HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())).ok()
    }
}

/// How the CA checks that Baton serves a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// A token on plain HTTP, port 80 (RFC 8555 §8.3).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate on HTTPS, port 443 (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn from_name(name: &str) -> Option<AcmeChallenge> {
        match name {
            "http-01" => Some(AcmeChallenge::Http01),
            "tls-alpn-01" => Some(AcmeChallenge::TlsAlpn01),
            _ => None,
        }
    }
}

/// Where a route's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TlsSource {
    /// Issued and renewed over ACME, for every host of the route.
    Acme {
        #[serde(default)]
        challenge: AcmeChallenge,
    },
    /// PEM files on the server: the chain (leaf first) and its key.
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

/// How long the proxy waits on an app and how much it takes from a client,
/// per route (the app's `[proxy]` section in baton.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLimits {
    /// To open a connection to a target (502 after).
    pub connect_timeout: Duration,
    /// From the request sent to the response's head (504 after).
    pub response_timeout: Duration,
    /// Largest request body (413 beyond); none by default.
    pub max_body: Option<u64>,
}

impl Default for RouteLimits {
    fn default() -> RouteLimits {
        RouteLimits {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            max_body: None,
        }
    }
}

/// A route as the proxy serves it: its spec, with the targets it names
/// resolved to the proxy's own (counters and connection pools).
#[derive(Debug)]
pub(crate) struct Route {
    pub spec: RouteSpec,
    pub gate: Arc<Gate>,
    pub live: Option<Arc<Target>>,
    pub live_instances: Vec<Arc<Target>>,
    pub preview: Option<Arc<Target>>,
    /// The canary's target and its share, in percent.
    pub canary: Option<(Arc<Target>, u8)>,
}

/// Which side of a canary a client is on: its bucket (0–99, kept in a
/// cookie), or a release it asked for (testers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Bucket(u8),
    Canary,
    Stable,
}

impl Route {
    /// The target a request should reach.
    #[cfg(test)]
    pub fn pick(&self, preview: bool) -> Option<&Arc<Target>> {
        self.pick_for(preview, Side::Stable)
    }

    /// The target a request should reach, for a client on `side` of a
    /// canary: a bucket below the canary's share reaches it, so a client
    /// moves from the old release to the new one only as the share grows.
    pub(crate) fn pick_for(&self, preview: bool, side: Side) -> Option<&Arc<Target>> {
        if preview {
            return self.preview.as_ref().or_else(|| self.live_instance());
        }
        match (&self.canary, side) {
            (Some((canary, _)), Side::Canary) => Some(canary),
            (Some((canary, percent)), Side::Bucket(bucket)) if bucket < *percent => Some(canary),
            _ => self.live_instance(),
        }
    }

    /// One instance of the live release: of two picked at random, the one
    /// with fewer requests in flight (the power of two choices), so that
    /// a slow instance gets fewer and no instance is left idle.
    fn live_instance(&self) -> Option<&Arc<Target>> {
        let live = self.live.as_ref()?;
        let n = self.live_instances.len() + 1;
        if n == 1 {
            return Some(live);
        }
        let nth = |i: usize| match i {
            0 => live,
            i => &self.live_instances[i - 1],
        };
        let r = crate::canary::random();
        let a = (r % n as u64) as usize;
        // A second one, never the first again.
        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
        let (a, b) = (nth(a), nth(b));
        Some(if b.in_flight() < a.in_flight() { b } else { a })
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<RouteKey, Arc<Route>>,
    /// host → (route, whether the host is a preview host)
    hosts: HashMap<String, (Arc<Route>, bool)>,
}

impl RouteTable {
    /// A new table with `spec` added or replacing the route of the same key.
    /// Refuses a host that another app or environment already answers for.
    pub(crate) fn with(&self, route: Route) -> Result<RouteTable, ProxyError> {
        let spec = &route.spec;
        for host in spec.hosts.iter().chain(&spec.preview_hosts) {
            if let Some((other, _)) = self.hosts.get(host) {
                if other.spec.key != spec.key {
                    return Err(ProxyError::HostTaken {
                        host: host.clone(),
                        owner: other.spec.key.clone(),
                    });
                }
            }
        }
        let mut routes = self.routes.clone();
        routes.insert(spec.key.clone(), Arc::new(route));
        Ok(RouteTable::index(routes))
    }

    pub(crate) fn without(&self, key: &RouteKey) -> RouteTable {
        let mut routes = self.routes.clone();
        routes.remove(key);
        RouteTable::index(routes)
    }

    fn index(routes: HashMap<RouteKey, Arc<Route>>) -> RouteTable {
        let mut hosts = HashMap::new();
        for route in routes.values() {
            for host in &route.spec.hosts {
                hosts.insert(host.clone(), (Arc::clone(route), false));
            }
            for host in &route.spec.preview_hosts {
                hosts.insert(host.clone(), (Arc::clone(route), true));
            }
        }
        RouteTable { routes, hosts }
    }

    /// The route answering for `host` (already normalised), and whether the
    /// host is one of its preview hosts.
    pub(crate) fn resolve(&self, host: &str) -> Option<(&Arc<Route>, bool)> {
        self.hosts
            .get(host)
            .map(|(route, preview)| (route, *preview))
    }

    /// Which route answers for `host`, if any.
    pub fn owner(&self, host: &str) -> Option<RouteKey> {
        self.hosts
            .get(host)
            .map(|(route, _)| route.spec.key.clone())
    }

    pub fn get(&self, key: &RouteKey) -> Option<RouteSpec> {
        self.routes.get(key).map(|r| r.spec.clone())
    }

    /// Every route's spec, in key order (what the proxy persists).
    pub fn specs(&self) -> Vec<RouteSpec> {
        let mut specs: Vec<RouteSpec> = self.routes.values().map(|r| r.spec.clone()).collect();
        specs.sort_by(|a, b| a.key.cmp(&b.key));
        specs
    }

    /// The proxy's own targets every route names.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.routes.values().flat_map(|r| {
            r.live
                .iter()
                .chain(r.live_instances.iter())
                .chain(r.preview.iter())
                .chain(r.canary.iter().map(|(t, _)| t))
        })
    }
}

/// Lower-cases a Host header value and strips its port and trailing dot,
/// without allocating when it is already plain.
pub(crate) fn normalise_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        // An IPv6 literal keeps its brackets; only a port after them goes.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(app: &str, hosts: &[&str], live: Option<i64>) -> Route {
        Route {
            spec: RouteSpec {
                key: RouteKey::new(app, "production"),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                preview_hosts: vec![],
                live: None,
                live_instances: Vec::new(),
                preview: None,
                hold_timeout: Duration::from_secs(1),
                limits: RouteLimits::default(),
                maintenance: None,
                tls: None,
                canary: None,
                live_updates: false,
            },
            gate: Arc::new(Gate::new(16)),
            live: live.map(target),
            live_instances: Vec::new(),
            preview: None,
            canary: None,
        }
    }

    fn target(id: i64) -> Arc<Target> {
        Target::new(&TargetRef::new(
            id,
            format!("127.0.0.1:{}", 1000 + id).parse().unwrap(),
            format!("r{id}"),
        ))
    }

    #[test]
    fn hosts_resolve_to_their_route() {
        let t = RouteTable::default()
            .with(spec("a", &["a.test", "www.a.test"], Some(1)))
            .unwrap()
            .with(spec("b", &["b.test"], Some(2)))
            .unwrap();
        assert_eq!(t.resolve("a.test").unwrap().0.pick(false).unwrap().id, 1);
        assert_eq!(
            t.resolve("www.a.test").unwrap().0.pick(false).unwrap().id,
            1
        );
        assert_eq!(t.resolve("b.test").unwrap().0.pick(false).unwrap().id, 2);
        assert!(t.resolve("c.test").is_none());
    }

    #[test]
    fn replacing_a_route_drops_hosts_it_no_longer_has() {
        let t = RouteTable::default()
            .with(spec("a", &["a.test", "old.a.test"], Some(1)))
            .unwrap();
        let t = t.with(spec("a", &["a.test"], Some(2))).unwrap();
        assert_eq!(t.resolve("a.test").unwrap().0.pick(false).unwrap().id, 2);
        assert!(t.resolve("old.a.test").is_none());
    }

    #[test]
    fn a_host_belongs_to_one_route_only() {
        let t = RouteTable::default()
            .with(spec("a", &["shared.test"], Some(1)))
            .unwrap();
        match t.with(spec("b", &["shared.test"], Some(2))) {
            Err(ProxyError::HostTaken { host, owner }) => {
                assert_eq!(host, "shared.test");
                assert_eq!(owner.app, "a");
            }
            other => panic!("expected HostTaken, got {other:?}"),
        }
    }

    #[test]
    fn preview_goes_to_the_preview_target_and_falls_back_to_live() {
        let mut s = spec("a", &["a.test"], Some(1));
        s.spec.preview_hosts = vec!["next.a.test".into()];
        let t = RouteTable::default().with(s).unwrap();
        let (route, is_preview) = t.resolve("next.a.test").unwrap();
        assert!(is_preview);
        assert_eq!(route.pick(true).unwrap().id, 1, "no preview: live answers");
        let mut s = spec("a", &["a.test"], Some(1));
        s.spec.preview_hosts = vec!["next.a.test".into()];
        s.preview = Some(target(2));
        let t = t.with(s).unwrap();
        let (route, _) = t.resolve("a.test").unwrap();
        assert_eq!(route.pick(false).unwrap().id, 1);
        assert_eq!(route.pick(true).unwrap().id, 2);
    }

    #[test]
    fn removing_a_route_frees_its_hosts() {
        let t = RouteTable::default()
            .with(spec("a", &["a.test"], Some(1)))
            .unwrap();
        let t = t.without(&RouteKey::new("a", "production"));
        assert!(t.resolve("a.test").is_none());
        assert!(t.with(spec("b", &["a.test"], None)).is_ok());
    }

    #[test]
    fn host_headers_are_normalised() {
        assert_eq!(normalise_host("Hello.Localhost:8080"), "hello.localhost");
        assert_eq!(normalise_host("example.com."), "example.com");
        assert_eq!(normalise_host("[::1]:80"), "[::1]");
        assert_eq!(normalise_host("plain"), "plain");
    }
    #[test]
    fn the_live_release_s_instances_share_its_requests_and_a_busy_one_gets_fewer() {
        let mut route = spec("a", &["a.test"], Some(1));
        route.live_instances = vec![target(2), target(3)];
        let mut count = std::collections::BTreeMap::new();
        for _ in 0..3000 {
            *count.entry(route.pick(false).unwrap().id).or_insert(0) += 1;
        }
        for id in 1..=3 {
            let n = count[&id];
            assert!(
                (800..=1200).contains(&n),
                "instance {id} got {n}: {count:?}"
            );
        }
        // Target 2 answers ten slow requests: it gets far fewer new ones.
        let busy: Vec<_> = (0..10).map(|_| route.live_instances[0].begin()).collect();
        let mut to_busy = 0;
        for _ in 0..3000 {
            if route.pick(false).unwrap().id == 2 {
                to_busy += 1;
            }
        }
        assert_eq!(to_busy, 0, "two choices never pick the busier one");
        drop(busy);
        // A canary and a preview stay single targets.
        route.preview = Some(target(9));
        assert_eq!(route.pick(true).unwrap().id, 9);
    }
}
