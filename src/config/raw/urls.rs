//! The URLs a config may name (`discord.api_base`, `discord.gateway_url`, `tencent.endpoint`):
//! encrypted, or plain only to a loopback address.

use std::net::IpAddr;

use reqwest::Url;

use super::Collector;

/// 127.0.0.0/8, ::1 and `localhost`: the only hosts a plain-text scheme may reach. Anything else
/// would carry the signed request, the session token or the bot token over the network in clear.
fn is_loopback(u: &Url) -> bool {
    match u.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `scheme://host[:port]` and nothing else: a path here would be silently dropped or mis-signed.
/// `https`, or `http` to a loopback address (tests, a local fake).
pub(super) fn parse_base_url(p: &mut Collector, key: &str, s: &str, example: &str) -> Option<Url> {
    let hint = format!(
        "use a scheme, host and optional port only, like {example} or http://127.0.0.1:8080"
    );
    match Url::parse(s) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() && !is_loopback(&u) => {
            p.push(
                key,
                format!(
                    "{s:?} uses http:// to a host that is not loopback: use https:// \
                     (http:// is accepted only for 127.0.0.1, ::1 or localhost)"
                ),
            );
            None
        }
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Some(u)
        }
        Ok(_) => {
            p.push(
                key,
                format!("{s:?} has a path, query or credentials, or is not http(s): {hint}"),
            );
            None
        }
        Err(e) => {
            p.push(key, format!("{s:?} is not a URL ({e}): {hint}"));
            None
        }
    }
}

/// `wss://`, or `ws://` to a loopback address.
pub(super) fn parse_gateway_url(p: &mut Collector, key: &str, s: &str) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if u.scheme() == "ws" && u.host_str().is_some() && !is_loopback(&u) => {
            p.push(
                key,
                format!(
                    "{s:?} uses ws:// to a host that is not loopback: use wss:// \
                     (ws:// is accepted only for 127.0.0.1, ::1 or localhost)"
                ),
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some() => Some(u),
        _ => {
            p.push(
                key,
                format!(
                    "{s:?} is not a ws:// or wss:// URL (for example wss://gateway.discord.gg)"
                ),
            );
            None
        }
    }
}
