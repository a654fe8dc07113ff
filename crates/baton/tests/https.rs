//! HTTPS: certificates from files and over ACME (against Debian's pebble, a
//! real ACME test server), checked by real clients (curl, Python's ssl,
//! h2load) against the issuing root; SNI, HTTP/2 by ALPN, the redirect
//! and HSTS, renewal swapped in under load, a refused challenge.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// A certificate authority of the test's own.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` named `cn`: (chain PEM, key PEM).
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// curl over HTTPS to `host` at `https`, trusting only `ca`. Returns
/// (exit code, stdout, stderr).
fn curl(
    https: SocketAddr,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", https.port(), https.ip()))
        .args(extra)
        .arg(format!("https://{host}:{}{path}", https.port()))
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subject CN of the certificate served for `host`.
fn served_subject(https: SocketAddr, host: &str, ca: &Path) -> String {
    let (code, _, err) = curl(https, host, "/", ca, &["-v", "-o", "/dev/null"]);
    assert_eq!(code, 0, "{err}");
    err.lines()
        .find_map(|l| l.trim().strip_prefix("*  subject: ").map(str::to_string))
        .unwrap_or_else(|| panic!("curl shows no subject: {err}"))
}

fn https_server(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("BATON_HTTPS_LISTEN", "127.0.0.1:0")];
    all.extend_from_slice(env);
    let server = Server::start_with(&all);
    assert!(
        server.https.is_some(),
        "the server says where it serves HTTPS"
    );
    server
}

fn cert_of<'a>(certs: &'a Value, app: &str) -> &'a Value {
    certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["app"] == app)
        .unwrap_or_else(|| panic!("no certificate for {app}: {certs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_files_are_served_by_sni_with_http2_redirect_and_hsts() {
    let server = https_server(&[]);
    let https = server.https.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let ca = Ca::new("Baton Test Root");
    let ca_file = write(keys.path(), "ca.pem", &ca.pem());
    let (chain, key) = ca.leaf("first", &["hello.localhost", "next.hello.localhost"]);
    let cert_file = write(keys.path(), "hello.pem", &chain);
    let key_file = write(keys.path(), "hello.key", &key);

    let app = AppCopy::new("Hello over TLS");
    std::fs::write(
        app.path().join("baton.toml"),
        std::fs::read_to_string(app.path().join("baton.toml")).unwrap()
            + &format!(
                "\n[tls]\ncert = {:?}\nkey = {:?}\nhsts = \"1d\"\n",
                cert_file.display().to_string(),
                key_file.display().to_string()
            ),
    )
    .unwrap();
    server.deploy(app.path());
    let certs = eventually(
        std::time::Duration::from_secs(30),
        "the certificate is served",
        || {
            let certs = server.json(&["certs"]);
            (cert_of(&certs, "hello")["served"] == true).then_some(certs)
        },
    )
    .await;
    let c = cert_of(&certs, "hello");
    assert_eq!(c["source"], "files");
    assert!(
        c["issuer"].as_str().unwrap().contains("Baton Test Root"),
        "{c}"
    );
    assert!(c["not_after"].as_i64().unwrap() > now_ms());
    assert!(c["last_error"].is_null(), "{c}");
    assert!(
        c.get("key_pem").is_none() && c.get("chain_pem").is_none(),
        "no key shown: {c}"
    );
    let text = server.baton_ok(&["certs"]);
    assert!(
        text.contains("hello.localhost") && text.contains("served"),
        "{text}"
    );

    // A real client, trusting only our root: HTTP/2 by ALPN, the app's
    // answer, HSTS.
    let (code, out, err) = curl(
        https,
        HOST,
        "/",
        &ca_file,
        &["--http2", "-D", "-", "-w", "\nversion=%{http_version}"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Hello over TLS"), "{out}");
    assert!(out.contains("version=2"), "HTTP/2 by ALPN: {out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=86400"),
        "{out}"
    );
    // HTTP/1.1 over TLS too.
    let (code, out, err) = curl(
        https,
        HOST,
        "/",
        &ca_file,
        &["--http1.1", "-w", "\nversion=%{http_version}"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version=1.1"), "{out}");
    // SNI picks the certificate: a host with none gets no handshake.
    let (code, _, _) = curl(https, "other.localhost", "/", &ca_file, &[]);
    assert_ne!(code, 0, "no certificate for other.localhost");

    // Plain HTTP is redirected, path and query kept; no HSTS there.
    let response = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/some/path?q=1", server.proxy))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://hello.localhost:{}/some/path?q=1", https.port()).as_str()
    );
    assert!(response
        .headers()
        .get("strict-transport-security")
        .is_none());

    // A new certificate in the files is swapped in without a restart.
    assert_eq!(served_subject(https, HOST, &ca_file), "CN=first");
    let (chain, key) = ca.leaf("second", &["hello.localhost", "next.hello.localhost"]);
    std::fs::write(&cert_file, chain).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let renewed = server.baton_ok(&["certs", "renew", "hello"]);
    assert!(renewed.contains("served now"), "{renewed}");
    assert_eq!(served_subject(https, HOST, &ca_file), "CN=second");

    // A key that is not the certificate's: said, and the previous one is
    // still served.
    let (_, other_key) = ca.leaf("third", &["hello.localhost"]);
    std::fs::write(&key_file, other_key).unwrap();
    let refused = server.baton(&["certs", "renew", "hello"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("does not belong") && said.contains("previous certificate"),
        "{said}"
    );
    assert_eq!(served_subject(https, HOST, &ca_file), "CN=second");
    let events = server.baton_ok(&["events", "hello"]);
    assert!(events.contains("certificate_failed"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_certificate_files_leave_the_app_served_over_http() {
    let server = https_server(&[]);
    let app = AppCopy::new("Hello, no certificate yet");
    std::fs::write(
        app.path().join("baton.toml"),
        std::fs::read_to_string(app.path().join("baton.toml")).unwrap()
            + "\n[tls]\ncert = \"/nonexistent/hello.pem\"\nkey = \"/nonexistent/hello.key\"\n",
    )
    .unwrap();
    server.deploy(app.path());
    let certs = eventually(
        std::time::Duration::from_secs(30),
        "the failure is recorded",
        || {
            let certs = server.json(&["certs"]);
            (!cert_of(&certs, "hello")["last_error"].is_null()).then_some(certs)
        },
    )
    .await;
    let c = cert_of(&certs, "hello");
    assert_eq!(c["served"], false);
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot read /nonexistent/hello.pem"),
        "{c}"
    );
    let text = server.baton_ok(&["certs"]);
    assert!(
        text.contains("plain HTTP only") && text.contains("/nonexistent/hello.pem"),
        "{text}"
    );
    // No certificate: no redirect; the app answers over plain HTTP.
    let (status, body) = get_fresh(server.proxy, HOST, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("Hello, no certificate yet"), "{body}");

    // A relative path or a half-given pair is refused at deploy, by name.
    let bad = AppCopy::new("bad");
    std::fs::write(
        bad.path().join("baton.toml"),
        std::fs::read_to_string(bad.path().join("baton.toml")).unwrap()
            + "\n[tls]\ncert = \"hello.pem\"\n",
    )
    .unwrap();
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("tls.cert") && said.contains("needs `key`"),
        "{said}"
    );
}
