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

/// The app's certificate in `baton certs --json` (null until recorded).
fn cert_of<'a>(certs: &'a Value, app: &str) -> &'a Value {
    certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["app"] == app)
        .unwrap_or(&Value::Null)
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
    app.append(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nhsts = \"1d\"",
        cert_file.display().to_string(),
        key_file.display().to_string()
    ));
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
    // h2load (nghttp2): HTTP/2 over TLS, every request answered. It sends
    // no SNI to an address: it gets the first certificate, as from nginx.
    let out = Command::new("h2load")
        .args([
            "-n",
            "400",
            "-c",
            "4",
            "-m",
            "8",
            "-H",
            ":authority: hello.localhost",
        ])
        .arg(format!("https://{https}/"))
        .output()
        .expect("h2load runs (Debian's nghttp2-client; scripts/test installs it)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Application protocol: h2"), "{said}");
    assert!(
        said.contains("requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed"),
        "{said}"
    );
    assert!(said.contains("status codes: 400 2xx"), "{said}");
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

    // The proxy killed: the server starts another on the same sockets,
    // with the certificates; HTTPS clients are served again.
    let killed = server.proxy_info()["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(std::time::Duration::from_secs(30), "a new proxy", || {
        let (code, out, _) = curl(https, HOST, "/", &ca_file, &[]);
        (code == 0 && out.contains("Hello over TLS")).then_some(())
    })
    .await;
    assert_ne!(server.proxy_info()["pid"].as_i64().unwrap(), killed);
    assert_eq!(server.proxy_info()["https"], https.to_string());
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
    app.append("[tls]\ncert = \"/nonexistent/hello.pem\"\nkey = \"/nonexistent/hello.key\"");
    server.deploy(app.path());
    let certs = eventually(
        std::time::Duration::from_secs(30),
        "the failure is recorded",
        || {
            let certs = server.json(&["certs"]);
            cert_of(&certs, "hello")["last_error"]
                .is_string()
                .then_some(certs)
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
    bad.append("[tls]\ncert = \"hello.pem\"");
    let out = server.baton(&["deploy", bad.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("tls.cert") && said.contains("needs `key`"),
        "{said}"
    );
}

/// Debian's pebble (an ACME CA for tests) and its DNS server, which
/// answers every name with 127.0.0.1 unless told otherwise; started for
/// one Baton proxy, whose ports it validates challenges on.
struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
    dns_management: u16,
}

impl Pebble {
    fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Pebble's listener CA");
        let (chain, key) = ca.leaf("localhost", &["localhost", "127.0.0.1"]);
        write(dir.path(), "listener-ca.pem", &ca.pem());
        let cert = write(dir.path(), "listener.pem", &chain);
        let key = write(dir.path(), "listener.key", &key);
        let (port, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_file = write(dir.path(), "pebble.json", &config.to_string());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv runs (Debian's pebble package; scripts/test installs it)");
        let mut children = vec![dns_server];
        wait_for_line(&mut children[0], "Starting management server");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random waits or refused nonces; every order validated
            // afresh (a renewal proves the host again).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs");
        children.push(pebble);
        wait_for_line(&mut children[1], "Listening on");
        Pebble {
            children,
            directory: format!("https://127.0.0.1:{port}/dir"),
            management,
            dns_management,
            dir,
        }
    }

    /// The root pebble's CA trusts for its own listener (what Baton is
    /// told with --acme-ca).
    fn listener_ca(&self) -> PathBuf {
        self.dir.path().join("listener-ca.pem")
    }

    /// The root pebble issues under (generated at its start), in a file.
    fn issuing_root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--cacert"])
            .arg(self.listener_ca())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        write(
            self.dir.path(),
            "issuing-root.pem",
            &String::from_utf8_lossy(&out.stdout),
        )
    }

    /// Makes `host` resolve to `ip` for the CA.
    fn resolve(&self, host: &str, ip: &str) {
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "-d"])
            .arg(serde_json::json!({"host": host, "addresses": [ip]}).to_string())
            .arg(format!("http://127.0.0.1:{}/add-a", self.dns_management))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a child's output until a line containing `marker` (its
/// readiness), then lets the rest drain on a thread.
fn wait_for_line(child: &mut Child, marker: &str) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => break,
            Some(Ok(_)) => {}
            other => panic!("exited before saying {marker:?}: {other:?}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

/// An app copy named `name` answering for `hosts`, with `[tls]` lines.
fn tls_app(name: &str, hosts: &[&str], message: &str, tls: &str) -> AppCopy {
    let app = AppCopy::new(message);
    app.edit(
        "baton.toml",
        "name = \"hello\"",
        &format!("name = {name:?}"),
    );
    app.edit(
        "baton.toml",
        "hosts = [\"hello.localhost\"]",
        &format!("hosts = {hosts:?}"),
    );
    app.edit(
        "baton.toml",
        "preview_hosts = [\"next.hello.localhost\"]",
        &format!("preview_hosts = [\"next.{}\"]", hosts[0]),
    );
    app.append(&format!("[tls]\n{tls}"));
    app
}

/// The app's certificate once it is served or has failed (which the
/// caller's assertions tell apart, with the record in the message).
async fn settled_cert(server: &Server, app: &str, what: &str) -> Value {
    eventually(std::time::Duration::from_secs(60), what, || {
        let c = served_cert(server, app);
        (c["served"] == true || c["last_error"].is_string()).then_some(c)
    })
    .await
}

fn served_cert(server: &Server, app: &str) -> Value {
    let certs = server.json(&["certs"]);
    cert_of(&certs, app).clone()
}

/// HTTPS clients on keep-alive connections (Python's ssl, trusting only
/// `root`), each opening a new connection every few requests, until
/// `stop` exists; returns their JSON report.
fn https_load(https: SocketAddr, host: &str, root: &Path, clients: usize, stop: &Path) -> Child {
    Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/https_load.py"))
        .args([
            https.ip().to_string(),
            https.port().to_string(),
            host.to_string(),
            root.display().to_string(),
            clients.to_string(),
            stop.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_by_http01_and_tls_alpn01_renews_under_load_and_reports_a_refused_challenge() {
    // Baton first: pebble validates on its ports.
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let placeholder = format!("https://127.0.0.1:{port}/dir");
    let mut server = https_server(&[("BATON_ACME_DIRECTORY", &placeholder)]);
    let https = server.https.unwrap();
    let pebble = Pebble::start(server.proxy.port(), https.port());
    // The CA's address is known now: the server is pointed at it.
    server.terminate();
    server.set_env(&[
        ("BATON_HTTPS_LISTEN", &https.to_string()),
        ("BATON_ACME_DIRECTORY", &pebble.directory),
        ("BATON_ACME_CA", pebble.listener_ca().to_str().unwrap()),
        ("BATON_ACME_EMAIL", "ops@example.test"),
    ]);
    server.restart();

    // HTTP-01.
    let app = tls_app("shop", &["shop.test"], "Shop over ACME", "acme = true");
    server.deploy(app.path());
    let cert = settled_cert(&server, "shop", "the HTTP-01 certificate").await;
    assert_eq!(cert["served"], true, "{cert}");
    assert_eq!(cert["source"], "acme");
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{cert}"
    );
    assert_eq!(
        cert["hosts"],
        serde_json::json!(["next.shop.test", "shop.test"])
    );
    let root = pebble.issuing_root();
    let (code, out, err) = curl(https, "shop.test", "/", &root, &[]);
    assert_eq!(code, 0, "curl trusts the chain under pebble's root: {err}");
    assert!(out.contains("Shop over ACME"), "{out}");
    let events = server.baton_ok(&["events", "shop"]);
    assert!(events.contains("certificate_issued"), "{events}");

    // TLS-ALPN-01.
    let alpn = tls_app(
        "chat",
        &["chat.test"],
        "Chat over ACME",
        "acme = true\nchallenge = \"tls-alpn-01\"",
    );
    server.deploy(alpn.path());
    let cert = settled_cert(&server, "chat", "the TLS-ALPN-01 certificate").await;
    assert_eq!(cert["served"], true, "{cert}");
    let (code, out, err) = curl(https, "chat.test", "/", &root, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Chat over ACME"), "{out}");

    // A renewal swapped in while 16 HTTPS clients keep going.
    let before = served_subject_serial(https, "shop.test", &root);
    let stop = scratch.path().join("stop");
    let load = https_load(https, "shop.test", &root, 16, &stop);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let renewed = server.baton_ok(&["certs", "renew", "shop"]);
    assert!(renewed.contains("served now"), "{renewed}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::write(&stop, "").unwrap();
    let report = load.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&report.stdout).expect("the load reports JSON");
    assert_eq!(report["failed"], 0, "no HTTPS request failed: {report}");
    assert!(report["ok"].as_u64().unwrap() > 200, "{report}");
    let serials = report["serials"].as_array().unwrap();
    assert!(
        serials.len() >= 2,
        "clients saw the old and the new certificate: {report}"
    );
    let after = served_subject_serial(https, "shop.test", &root);
    assert_ne!(before, after, "a new certificate is served");

    // A challenge the CA cannot complete: said, and the app still served.
    pebble.resolve("lost.test.", "127.0.0.2");
    let lost = tls_app("lost", &["lost.test"], "Lost, over HTTP", "acme = true");
    pebble.resolve("next.lost.test.", "127.0.0.2");
    server.deploy(lost.path());
    let failed = eventually(
        std::time::Duration::from_secs(60),
        "the refused challenge",
        || {
            let c = served_cert(&server, "lost");
            c["last_error"].is_string().then_some(c)
        },
    )
    .await;
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("lost.test") && error.contains("trying again in"),
        "{error}"
    );
    assert_eq!(failed["served"], false);
    assert!(failed["next_attempt"].as_i64().unwrap() > now_ms());
    let events = server.baton_ok(&["events", "lost"]);
    assert!(events.contains("certificate_failed"), "{events}");
    let (status, body) = get_fresh(server.proxy, "lost.test", "/").await.unwrap();
    assert_eq!(status, 200, "served over plain HTTP meanwhile");
    assert!(body.contains("Lost, over HTTP"), "{body}");
    let said = server.baton(&["certs", "renew", "lost"]);
    assert!(!said.status.success());
    let said = String::from_utf8_lossy(&said.stderr);
    assert!(said.contains("plain HTTP only"), "{said}");
}

/// The serial of the certificate served for `host`, as Python's ssl sees it.
fn served_subject_serial(https: SocketAddr, host: &str, root: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import socket,ssl,sys\n\
             ctx=ssl.create_default_context(cafile=sys.argv[4])\n\
             s=ctx.wrap_socket(socket.create_connection((sys.argv[1],int(sys.argv[2]))),server_hostname=sys.argv[3])\n\
             print(s.getpeercert()['serialNumber'])",
        )
        .args([
            https.ip().to_string(),
            https.port().to_string(),
            host.to_string(),
            root.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
