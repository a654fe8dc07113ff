//! What a certificate says of itself (issuer, validity, names), read from
//! its PEM; when it is due for renewal; dates for people.

use std::path::Path;
use std::time::Duration;

/// A certificate chain's leaf, as `baton certs` shows it.
#[derive(Debug, Clone)]
pub struct Described {
    pub issuer: String,
    /// Milliseconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Its DNS names (subject alternative names).
    pub names: Vec<String>,
}

impl Described {
    /// Reads the leaf of `chain_pem`, and checks that `key_pem` is its key
    /// and that TLS can serve the pair.
    pub fn of(chain_pem: &str, key_pem: &str) -> Result<Described, String> {
        baton_proxy::certified_key("the certificate", chain_pem, key_pem)
            .map_err(|e| e.to_string())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        let leaf = pem
            .parse_x509()
            .map_err(|e| format!("the certificate is not X.509: {e}"))?;
        let validity = leaf.validity();
        let mut names = Vec::new();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        Ok(Described {
            issuer: leaf.issuer().to_string(),
            not_before: validity.not_before.timestamp() * 1000,
            not_after: validity.not_after.timestamp() * 1000,
            names,
        })
    }
}

/// Whether a certificate naming `names` is valid for `host` (a wildcard
/// covers one label).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|name| {
        name == &host
            || name.strip_prefix("*.").is_some_and(|parent| {
                host.split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
            })
    })
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// once a third of its life is left (30 days of Let's Encrypt's 90).
pub fn renew_at(not_before: Option<i64>, not_after: Option<i64>) -> Option<i64> {
    let (from, until) = (not_before?, not_after?);
    Some(until - (until - from).max(0) / 3)
}

/// The chain and key files, read; a clear reason when one cannot be.
pub async fn read_files(cert: &Path, key: &Path) -> Result<(String, String), String> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::read_to_string(&path).await.map_err(|e| {
                format!(
                    "cannot read {} ({e}); the server's user must be able to read it",
                    path.display()
                )
            })
        }
    };
    Ok((read(cert).await?, read(key).await?))
}

/// A date as `2026-11-27 21:51 UTC`.
pub fn date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil(days);
    let rest = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// A span as people say it: `90s`, `16m`, `6h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_string(), "example.com".to_string()];
        assert!(covers(&names, "example.com"));
        assert!(covers(&names, "www.example.com"));
        assert!(covers(&names, "WWW.Example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "example.org"));
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        let day = 86_400_000;
        assert_eq!(renew_at(Some(0), Some(90 * day)), Some(60 * day));
        assert_eq!(renew_at(None, Some(90 * day)), None);
    }

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_795_816_260_000), "2026-11-27 21:51 UTC");
        assert_eq!(date(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn a_certificate_describes_itself() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["a.test".into(), "b.test".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        let described = Described::of(&cert.pem(), &key.serialize_pem()).unwrap();
        assert_eq!(described.names, vec!["a.test", "b.test"]);
        assert!(described.not_after > described.not_before);
        let other = rcgen::KeyPair::generate().unwrap();
        let wrong = Described::of(&cert.pem(), &other.serialize_pem()).unwrap_err();
        assert!(wrong.contains("does not belong"), "{wrong}");
        let garbage = Described::of("not a certificate", &key.serialize_pem()).unwrap_err();
        assert!(garbage.contains("no PEM certificate"), "{garbage}");
    }
}
