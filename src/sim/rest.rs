//! The REST thread: DhanHQ's two token endpoints, on their own port
//! ([`super::Simulator::rest_url`]), served with `tiny_http` from one
//! thread, which also reads every trading request (any other path under
//! `/v2`) and hands it to `trade_rest.rs`'s workers.
//!
//! * `GET /v2/RenewToken`, headers `access-token` and `dhanClientId`
//!   (DhanHQ's, at `https://api.dhan.co`): a token valid for that client
//!   gets a new one ([`super::SimConfig::token_lifetime`]), and the old one
//!   is revoked at once, 807 to its open connections included.
//! * `POST /app/generateAccessToken?dhanClientId=..&pin=..&totp=..`
//!   (DhanHQ's, at `https://auth.dhan.co`): checked against
//!   [`super::SimConfig::totp_accounts`], accepting the TOTP code of the
//!   current 30-second step and of the steps either side (clock skew, as
//!   servers allow); a new token revokes the client's previous one.
//!
//! Answers are JSON. Success: `dhanClientId`, `dhanClientName`,
//! `dhanClientUcc`, `givenPowerOfAttorney`, `accessToken`, `expiryTime`
//! (India time, `YYYY-MM-DDTHH:MM:SS`, no offset), and for RenewToken also
//! `token` (the same value: clients have been seen reading either name).
//! Failure: DhanHQ's error object, `{"errorType","errorCode",
//! "errorMessage"}` — 400 `Input_Exception` / `DH-905` for a missing
//! parameter or header, 401 `Invalid_Authentication` / `DH-901` for a token
//! or PIN/TOTP that does not check out, 404 for any other path and 405 for
//! another method on these two.
//!
//! Nothing here logs a token, PIN or TOTP code, or a query string (which
//! holds PIN and TOTP); the debug log names method, path and status only.
//! Request bodies are bounded: up to [`MAX_BODY`] is read (and dropped
//! by the token endpoints, which need none); a chunked body beyond that is answered 413 and the
//! connection closed. A request that declares a `Content-Length` over
//! [`MAX_BODY`] is abandoned unanswered and unread (tiny_http would
//! otherwise read the whole declared length when the request is dropped,
//! into a buffer of that size); its socket stays open until the process
//! ends — a cost only a misbehaving client causes, on a test server. A
//! client that declares a small body and never sends it holds this thread
//! (and so the other REST clients, not the feed) until it closes.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use super::shared::{bump, unix_now, NewToken, Shared};
use super::trade_rest::{is_trading, Job};
use crate::percent::query_param;
use crate::token::totp;

/// Largest request body read (and thrown away).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How long the thread waits for a request before looking at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Binds the REST listener on `ip`, any free port.
pub(crate) fn bind(ip: IpAddr) -> io::Result<(Server, SocketAddr)> {
    let server = Server::http(SocketAddr::new(ip, 0)).map_err(io::Error::other)?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("REST listener has no IP address"))?;
    Ok((server, addr))
}

/// Serves until [`Shared::stop`] is set; dropping `server` then closes the
/// listener. Trading requests go to `trading` (the workers of
/// `trade_rest.rs`).
pub(crate) fn run(shared: &Shared, server: Server, trading: &Sender<Job>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => serve(shared, request, trading),
            Ok(None) => {}
            // A failed accept: try again (after a pause, in case it repeats).
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// An answer: status and JSON body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
    pub(crate) close: bool,
}

impl Answer {
    pub(crate) fn ok(body: serde_json::Value) -> Answer {
        Answer {
            status: 200,
            body,
            close: false,
        }
    }

    pub(crate) fn error(status: u16, kind: &str, code: &str, message: &str) -> Answer {
        Answer {
            status,
            body: json!({ "errorType": kind, "errorCode": code, "errorMessage": message }),
            close: false,
        }
    }

    fn bad_input() -> Answer {
        Answer::error(
            400,
            "Input_Exception",
            "DH-905",
            "Missing required fields, bad values for parameters etc.",
        )
    }

    fn unauthorized(message: &str) -> Answer {
        Answer::error(401, "Invalid_Authentication", "DH-901", message)
    }
}

fn serve(shared: &Shared, mut request: Request, trading: &Sender<Job>) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        // Dropping (or answering, which drops) the request would make
        // tiny_http read the whole declared body, into a buffer of that
        // size. Abandon the connection unread and unanswered instead.
        log::debug!(
            "sim REST: {} {path}: body over {MAX_BODY} B, abandoned",
            request.method()
        );
        std::mem::forget(request);
        return;
    }
    // Bodies up to MAX_BODY are read (the token endpoints drop theirs),
    // bigger (chunked) ones refused.
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    let trade = is_trading(path);
    if trade {
        bump(&shared.stats.trading_requests);
    }
    let answer = match read {
        Err(_) => return, // the client went away
        Ok(n) if n > MAX_BODY => Answer {
            close: true,
            ..Answer::error(413, "Input_Exception", "DH-905", "request body too large")
        },
        Ok(_) if trade => {
            let job = Job {
                request,
                path: path.to_owned(),
                body,
            };
            match trading.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    let busy = Answer::error(
                        429,
                        "Rate_Limit",
                        "DH-904",
                        "too many trading requests in progress",
                    );
                    return respond(job.request, &job.path, busy);
                }
            }
        }
        Ok(_) => route(shared, &request, path, query),
    };
    respond(request, path, answer);
}

/// Writes `answer` (JSON) to `request`'s client; the debug log names method,
/// path and status only.
pub(crate) fn respond(request: Request, path: &str, answer: Answer) {
    log::debug!("sim REST: {} {path} -> {}", request.method(), answer.status);
    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
    let mut response = Response::from_data(body).with_status_code(answer.status);
    let mut headers = vec![("Content-Type", "application/json")];
    if answer.close {
        headers.push(("Connection", "close"));
    }
    for (name, value) in headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    let _ = request.respond(response);
}

fn route(shared: &Shared, request: &Request, path: &str, query: &str) -> Answer {
    let method = request.method();
    let answer = match path {
        "/v2/RenewToken" if *method == Method::Get => renew(shared, request),
        "/app/generateAccessToken" if *method == Method::Post => generate(shared, query),
        "/v2/RenewToken" | "/app/generateAccessToken" => {
            return Answer::error(405, "Input_Exception", "DH-905", "method not allowed")
        }
        _ => return Answer::error(404, "Not_Found", "404", "no such endpoint"),
    };
    if answer.status != 200 {
        bump(&shared.stats.auth_refusals_rest);
    }
    answer
}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str().trim())
        .filter(|v| !v.is_empty())
}

/// `GET /v2/RenewToken`.
fn renew(shared: &Shared, request: &Request) -> Answer {
    let (Some(token), Some(client_id)) = (
        header(request, "access-token"),
        header(request, "dhanClientId"),
    ) else {
        return Answer::bad_input();
    };
    match shared.renew(token, client_id) {
        Some(new) => {
            let mut body = token_body(client_id, &new);
            body["token"] = json!(new.token);
            Answer::ok(body)
        }
        None => {
            Answer::unauthorized("Client ID or user generated access token is invalid or expired.")
        }
    }
}

/// `POST /app/generateAccessToken`.
fn generate(shared: &Shared, query: &str) -> Answer {
    let param = |name| query_param(query, name).filter(|v| !v.is_empty());
    let (Some(client_id), Some(pin), Some(code)) =
        (param("dhanClientId"), param("pin"), param("totp"))
    else {
        return Answer::bad_input();
    };
    let step = unix_now() / totp::STEP_SECS;
    let accepted = shared
        .settings
        .totp_accounts
        .iter()
        .find(|a| a.client_id == client_id)
        .is_some_and(|a| {
            a.pin == pin
                && [step.wrapping_sub(1), step, step + 1]
                    .iter()
                    .any(|s| totp::code_at_step(&a.secret, *s) == code)
        });
    if !accepted {
        return Answer::unauthorized("Invalid client ID, PIN or TOTP.");
    }
    let new = shared.issue(&client_id, shared.settings.token_lifetime);
    bump(&shared.stats.generations);
    Answer::ok(token_body(&client_id, &new))
}

/// The fields DhanHQ answers a new token with.
fn token_body(client_id: &str, new: &NewToken) -> serde_json::Value {
    json!({
        "dhanClientId": client_id,
        "dhanClientName": format!("SIMULATED CLIENT {client_id}"),
        "dhanClientUcc": format!("SIM{client_id}"),
        "givenPowerOfAttorney": false,
        "accessToken": new.token,
        "expiryTime": india_time(new.exp),
    })
}

/// Unix seconds as India Standard Time (UTC+05:30, no daylight saving),
/// `YYYY-MM-DDTHH:MM:SS`, the way DhanHQ writes `expiryTime`.
pub(crate) fn india_time(unix_secs: u64) -> String {
    let t = unix_secs.saturating_add(5 * 3600 + 30 * 60);
    let (days, secs) = (t / 86_400, t % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn india_time_matches_known_instants() {
        for (unix, ist) in [
            (0, "1970-01-01T05:30:00"),
            (951_782_400, "2000-02-29T05:30:00"),
            (1_766_035_810, "2025-12-18T11:00:10"),
            (4_102_444_800, "2100-01-01T05:30:00"),
            (1_709_236_799, "2024-03-01T01:29:59"),
        ] {
            assert_eq!(india_time(unix), ist, "{unix}");
        }
    }
}
