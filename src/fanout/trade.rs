//! Which requests are trading calls ([`crate::trading`]): the paths, the
//! methods each takes, and which carry a body. The front door answers
//! `GET /api/trading` and the kill switch itself and hands the rest to the
//! broker threads.

use crate::trading::broker::Call;

/// A trading request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/trading`: on or off, paper, guards, whether this caller
    /// may trade.
    Status,
    /// `POST /api/admin/trading {"enabled": bool}`.
    KillSwitch,
    /// A call for the broker.
    Call(Call),
    /// A trading path with a method it does not take: 405 with `Allow`.
    Method(&'static str),
}

/// The methods of each trading path, for `Allow` and CORS preflights.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/api/trading" => "GET, HEAD, OPTIONS",
        "/api/funds" | "/api/positions" => "GET, OPTIONS",
        "/api/orders" => "GET, POST, OPTIONS",
        "/api/admin/trading" | "/api/admin/cancel-all" => "POST, OPTIONS",
        _ if order_id(path).is_some() => "PUT, DELETE, OPTIONS",
        _ => return None,
    })
}

/// `/api/orders/{id}` → `id`.
fn order_id(path: &str) -> Option<&str> {
    path.strip_prefix("/api/orders/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Whether `method path` takes a request body.
pub fn takes_body(method: &str, path: &str) -> bool {
    match method {
        "POST" => matches!(
            path,
            "/api/orders" | "/api/admin/trading" | "/api/admin/cancel-all"
        ),
        "PUT" => order_id(path).is_some(),
        _ => false,
    }
}

/// The trading route of `method path`, if it is one (`OPTIONS` is not:
/// preflights are answered like any other).
pub fn route(method: &str, path: &str, body: &[u8]) -> Option<Route> {
    let allow = allowed_methods(path)?;
    if method == "OPTIONS" {
        return None;
    }
    let call = match (method, path) {
        ("GET" | "HEAD", "/api/trading") => return Some(Route::Status),
        ("POST", "/api/admin/trading") => return Some(Route::KillSwitch),
        ("GET", "/api/funds") => Call::Funds,
        ("GET", "/api/orders") => Call::Orders,
        ("GET", "/api/positions") => Call::Positions,
        ("POST", "/api/orders") => Call::Place(body.to_vec()),
        ("POST", "/api/admin/cancel-all") => Call::CancelAll,
        ("PUT", p) if order_id(p).is_some() => {
            Call::Modify(order_id(p).unwrap_or_default().to_string(), body.to_vec())
        }
        ("DELETE", p) if order_id(p).is_some() => {
            Call::Cancel(order_id(p).unwrap_or_default().to_string())
        }
        _ => return Some(Route::Method(allow)),
    };
    Some(Route::Call(call))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/api/trading", b""), Some(Route::Status));
        assert_eq!(
            route("GET", "/api/funds", b""),
            Some(Route::Call(Call::Funds))
        );
        assert_eq!(
            route("POST", "/api/orders", b"{}"),
            Some(Route::Call(Call::Place(b"{}".to_vec())))
        );
        assert_eq!(
            route("PUT", "/api/orders/123", b"{}"),
            Some(Route::Call(Call::Modify("123".into(), b"{}".to_vec())))
        );
        assert_eq!(
            route("DELETE", "/api/orders/123", b""),
            Some(Route::Call(Call::Cancel("123".into())))
        );
        assert_eq!(
            route("DELETE", "/api/orders", b""),
            Some(Route::Method("GET, POST, OPTIONS"))
        );
        assert_eq!(route("GET", "/api/orders/1/2", b""), None);
        assert_eq!(route("OPTIONS", "/api/orders", b""), None);
        assert_eq!(route("GET", "/prices", b""), None);
        assert_eq!(
            route("POST", "/api/admin/trading", b""),
            Some(Route::KillSwitch)
        );
        assert!(takes_body("PUT", "/api/orders/9"));
        assert!(!takes_body("DELETE", "/api/orders/9"));
        assert!(!takes_body("POST", "/api/funds"));
    }
}
