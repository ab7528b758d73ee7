//! The signatures on webhooks, in and out: Zammad's `X-Hub-Signature`
//! (`sha1=` HMAC-SHA1 of the raw body), Chatwoot's `X-Chatwoot-Signature`
//! (`sha256=` HMAC-SHA256 of `{timestamp}.{body}`), and ours,
//! `Triage-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">` (Stripe's
//! scheme). Verification compares in constant time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// How far a signed timestamp may be from our clock (Chatwoot's, ours).
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 300;

/// Whether `header` (`sha1=<hex>`) is the HMAC-SHA1 of `body` under `secret`.
pub fn verify_zammad(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Zammad's signature of `body` (`sha1=<hex>`), as its webhook sends it (for tests and docs).
pub fn sign_zammad(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

fn hmac_sha256(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Whether a Chatwoot delivery is authentic: `signature` (`sha256=<hex>`)
/// is the HMAC-SHA256 of `{timestamp}.{body}` and `timestamp` is within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now`.
pub fn verify_chatwoot(
    secret: &str,
    body: &[u8],
    timestamp: &str,
    signature: &str,
    now: u64,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<u64>() else {
        return false;
    };
    if ts.abs_diff(now) > TIMESTAMP_TOLERANCE_SECS {
        return false;
    }
    let Some(sig) = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    hmac_sha256(secret, timestamp.trim(), body)
        .verify_slice(&sig)
        .is_ok()
}

/// Chatwoot's signature of `body` at `timestamp` (for tests).
pub fn sign_chatwoot(secret: &str, body: &[u8], timestamp: u64) -> String {
    let mac = hmac_sha256(secret, &timestamp.to_string(), body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Our `Triage-Signature` header for `body` sent at `timestamp`.
pub fn sign_event(secret: &str, body: &[u8], timestamp: u64) -> String {
    let mac = hmac_sha256(secret, &timestamp.to_string(), body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `header` (`t=…,v1=…`) signs `body` under `secret` within the
/// tolerance of `now`: what a receiver of our events does (docs/INTEGRATIONS.md).
pub fn verify_event(secret: &str, body: &[u8], header: &str, now: u64) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if t.parse::<u64>()
        .map_or(true, |ts| ts.abs_diff(now) > TIMESTAMP_TOLERANCE_SECS)
    {
        return false;
    }
    v1.iter().any(|sig| {
        hex::decode(sig).is_ok_and(|sig| hmac_sha256(secret, &t, body).verify_slice(&sig).is_ok())
    })
}

/// Constant-time equality of two tokens (a URL token).
pub fn same_token(a: &str, b: &str) -> bool {
    let key = b"token comparison";
    let tag = |s: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(s.as_bytes());
        mac
    };
    tag(a).verify_slice(&tag(b).finalize().into_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zammad_signatures_verify_and_forgeries_do_not() {
        let body = br#"{"ticket":{"id":1}}"#;
        let sig = sign_zammad("s3cret", body);
        assert!(sig.starts_with("sha1=") && sig.len() == 45);
        assert!(verify_zammad("s3cret", body, &sig));
        assert!(!verify_zammad("other", body, &sig));
        assert!(!verify_zammad("s3cret", br#"{"ticket":{"id":2}}"#, &sig));
        assert!(!verify_zammad(
            "s3cret",
            body,
            &sig.replace("sha1=", "sha256=")
        ));
        assert!(!verify_zammad("s3cret", body, "sha1=zz"));
        assert!(!verify_zammad("s3cret", body, ""));
    }

    #[test]
    fn a_known_hmac_sha1_vector() {
        // RFC 2202, test case 2.
        let sig = sign_zammad("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn timestamped_signatures_expire_and_bind_the_time() {
        let body = b"{}";
        let sig = sign_chatwoot("k", body, 1_000_000);
        assert!(verify_chatwoot("k", body, "1000000", &sig, 1_000_100));
        assert!(!verify_chatwoot(
            "k",
            body,
            "1000000",
            &sig,
            1_000_000 + 301
        ));
        assert!(!verify_chatwoot("k", body, "1000001", &sig, 1_000_000));
        let ours = sign_event("w", body, 1_000_000);
        assert!(verify_event("w", body, &ours, 1_000_000));
        assert!(!verify_event("w", b"{ }", &ours, 1_000_000));
        assert!(!verify_event("w", body, &ours, 2_000_000));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
    }
}
