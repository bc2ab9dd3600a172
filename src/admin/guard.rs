//! Keeps browsers out of the admin API.
//!
//! A web page can make its visitor's browser send requests to a loopback address (cross-site
//! request forgery), and, by pointing its own DNS name at 127.0.0.1, read the answers (DNS
//! rebinding). Operators' scripts and `ctl` are not browsers, so the guard refuses what only a
//! browser sends:
//! - a `Host` that is not an IP literal or `localhost` (a rebound name), or an IP literal that
//!   is neither loopback nor the bound address: `403`;
//! - any request with an `Origin` header (browsers send it with every cross-origin request and
//!   with every POST; scripts do not): `403`;
//! - a POST, PATCH or DELETE whose `Content-Type` is not `application/json` (a page cannot send that
//!   cross-site without a CORS preflight, which this server never grants): `415`.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::Response,
};

/// A refused request: its status and the reason, for the JSON error body.
pub(super) type Refusal = (StatusCode, String);

/// Middleware: runs [`check`] on every request before any route.
pub(super) async fn refuse_browsers(
    State(bound): State<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match check(bound, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err((status, message)) => {
            tracing::debug!(%status, %message, "admin request refused");
            super::server::error(status, message)
        }
    }
}

/// Whether a request to a server bound to `bound` may proceed.
pub(super) fn check(
    bound: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or((
            StatusCode::FORBIDDEN,
            "a Host header is required".to_owned(),
        ))?;
    if !host_is_allowed(host, bound) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} refused: use the bound address ({bound}), a loopback address or \
                 localhost (names that may be rebound to this machine are refused)"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "requests from web pages are refused (Origin {:?})",
                origin.to_str().unwrap_or("<not text>")
            ),
        ));
    }
    if *method != Method::GET && *method != Method::HEAD {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{method} requests need Content-Type: application/json"),
            ));
        }
    }
    Ok(())
}

/// `localhost`, a loopback IP literal, the bound IP, or (bound to all interfaces) any IP literal;
/// with or without a port.
fn host_is_allowed(host: &str, bound: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        },
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse::<header::HeaderName>().unwrap(), v.parse().unwrap()))
            .collect()
    }

    const LOOPBACK: &str = "127.0.0.1:9101";

    fn status(bound: &str, method: Method, pairs: &[(&str, &str)]) -> Option<StatusCode> {
        check(bound.parse().unwrap(), &method, &headers(pairs))
            .err()
            .map(|(s, _)| s)
    }

    #[test]
    fn scripts_on_the_machine_pass() {
        for host in [
            "127.0.0.1:9101",
            "localhost:9101",
            "LOCALHOST",
            "[::1]:9101",
            "127.0.0.2",
        ] {
            assert_eq!(
                status(LOOPBACK, Method::GET, &[("host", host)]),
                None,
                "{host}"
            );
        }
        let post = [
            ("host", "127.0.0.1:9101"),
            ("content-type", "application/json; charset=utf-8"),
        ];
        assert_eq!(status(LOOPBACK, Method::POST, &post), None);
    }

    #[test]
    fn a_rebound_or_foreign_host_is_refused() {
        for host in [
            "evil.example",
            "evil.example:9101",
            "192.0.2.1:9101",
            "[::1",
            "127.0.0.1:x",
        ] {
            assert_eq!(
                status(LOOPBACK, Method::GET, &[("host", host)]),
                Some(StatusCode::FORBIDDEN),
                "{host}"
            );
        }
        assert_eq!(
            status(LOOPBACK, Method::GET, &[]),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn a_public_bind_takes_its_own_and_any_ip_literal_when_unspecified() {
        assert_eq!(
            status("192.0.2.1:9101", Method::GET, &[("host", "192.0.2.1:9101")]),
            None
        );
        assert_eq!(
            status("192.0.2.1:9101", Method::GET, &[("host", "192.0.2.2:9101")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status("0.0.0.0:9101", Method::GET, &[("host", "192.0.2.2:9101")]),
            None
        );
        assert_eq!(
            status(
                "0.0.0.0:9101",
                Method::GET,
                &[("host", "relay.example:9101")]
            ),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn any_browser_origin_is_refused() {
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9101"] {
            let pairs = [
                ("host", LOOPBACK),
                ("origin", origin),
                ("content-type", "application/json"),
            ];
            assert_eq!(
                status(LOOPBACK, Method::POST, &pairs),
                Some(StatusCode::FORBIDDEN)
            );
            assert_eq!(
                status(LOOPBACK, Method::GET, &pairs[..2]),
                Some(StatusCode::FORBIDDEN)
            );
        }
    }

    #[test]
    fn state_changes_need_a_json_content_type() {
        for (method, ct) in [
            (Method::POST, None),
            (Method::POST, Some("text/plain")),
            (Method::POST, Some("application/x-www-form-urlencoded")),
            (Method::DELETE, None),
        ] {
            let mut pairs = vec![("host", LOOPBACK)];
            pairs.extend(ct.map(|c| ("content-type", c)));
            assert_eq!(
                status(LOOPBACK, method.clone(), &pairs),
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "{method} {ct:?}"
            );
        }
        assert_eq!(status(LOOPBACK, Method::GET, &[("host", LOOPBACK)]), None);
    }
}
