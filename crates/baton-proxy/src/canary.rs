//! Which side of a canary a client is on. Every client gets a bucket,
//! 0 to 99, kept in a cookie (`baton-bucket`) so that a person does not
//! flip between releases; a canary at N % takes the buckets below N, so a
//! client only ever moves from the old release to the new one as the share
//! grows. Testers force a side with the `X-Baton-Canary: always|never`
//! header or the `baton-canary` cookie. Pure over headers.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderValue};

use crate::route::Side;

pub(crate) const BUCKET_COOKIE: &str = "baton-bucket";
const FORCE_COOKIE: &str = "baton-canary";
pub(crate) const FORCE_HEADER: &str = "x-baton-canary";

/// The client's side, and whether its bucket is new (to be kept in a
/// cookie with the response).
pub(crate) fn side(headers: &HeaderMap) -> (Side, bool) {
    if let Some(forced) = headers
        .get(FORCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(forced)
    {
        return (forced, false);
    }
    let mut bucket = None;
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            match name {
                FORCE_COOKIE => {
                    if let Some(side) = forced(value) {
                        return (side, false);
                    }
                }
                BUCKET_COOKIE => bucket = value.parse::<u8>().ok().filter(|b| *b < 100),
                _ => {}
            }
        }
    }
    match bucket {
        Some(bucket) => (Side::Bucket(bucket), false),
        None => (Side::Bucket(new_bucket()), true),
    }
}

fn forced(value: &str) -> Option<Side> {
    match value.trim() {
        "always" => Some(Side::Canary),
        "never" => Some(Side::Stable),
        _ => None,
    }
}

/// A bucket for a new client: spread evenly over the hundred.
fn new_bucket() -> u8 {
    ((random() >> 32) % 100) as u8
}

/// A pseudo-random number for spreading clients and requests (not for
/// secrets): a xorshift generator per thread, a few instructions, nothing
/// shared between the proxy's workers.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A different nonzero start for each thread.
fn seed() -> u64 {
    static THREADS: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos
        ^ THREADS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        | 1
}

/// The cookie that keeps a client in its bucket (a day; every page).
pub(crate) fn cookie(side: Side) -> Option<HeaderValue> {
    let Side::Bucket(bucket) = side else {
        return None;
    };
    HeaderValue::from_str(&format!(
        "{BUCKET_COOKIE}={bucket}; Path=/; Max-Age=86400; SameSite=Lax; HttpOnly"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_kept_bucket_is_used_and_a_new_one_said_to_be_new() {
        assert_eq!(
            side(&headers(&[("cookie", "a=1; baton-bucket=42")])),
            (Side::Bucket(42), false)
        );
        let (fresh, new) = side(&headers(&[]));
        assert!(new && matches!(fresh, Side::Bucket(b) if b < 100));
        // A bucket out of range is a new client.
        assert!(side(&headers(&[("cookie", "baton-bucket=100")])).1);
    }

    #[test]
    fn testers_force_a_side() {
        assert_eq!(
            side(&headers(&[("x-baton-canary", "always")])).0,
            Side::Canary
        );
        assert_eq!(
            side(&headers(&[(
                "cookie",
                "baton-bucket=3; baton-canary=never"
            )]))
            .0,
            Side::Stable
        );
    }

    #[test]
    fn new_buckets_spread_over_the_hundred() {
        let mut seen = [0u32; 100];
        for _ in 0..10_000 {
            seen[new_bucket() as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 40), "{seen:?}");
    }
}
