//! `GET /api/chains` and `GET /api/chains/{underlying}?expiry=…`, answered
//! by the front door from what the chain thread last published (nothing
//! is computed here beyond choosing the chain).

use serde_json::{json, Value};

use super::service::Board;
use crate::percent::query_param;

/// `GET /api/chains`: every chain, configured or asked for by a client.
pub fn list(board: &Board) -> String {
    json!({ "chains": board.chains }).to_string()
}

/// `GET /api/chains/{underlying}?expiry=nearest|next|monthly|YYYY-MM-DD`:
/// the chain's latest message (without `type`), or 404 naming what exists.
pub fn one(board: &Board, underlying: &str, query: &str) -> (u16, String) {
    let pick = query_param(query, "expiry").unwrap_or_else(|| "nearest".into());
    let same: Vec<&Value> = board
        .chains
        .iter()
        .filter(|c| {
            c["underlying"]
                .as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(underlying))
        })
        .collect();
    let error = |status: u16, message: String| (status, json!({ "error": message }).to_string());
    let Some(first) = same.first() else {
        let active: Vec<&str> = board
            .chains
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        return error(
            404,
            format!(
                "no chain of '{}' is running (running: {}); configure [[chains]] or subscribe_chain on /ws",
                underlying.chars().take(40).collect::<String>(),
                if active.is_empty() { "none".to_string() } else { active.join(", ") }
            ),
        );
    };
    let expiries: Vec<&str> = first["expiries"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let date = match pick.as_str() {
        "nearest" => expiries.first().copied(),
        "next" => expiries.get(1).copied(),
        "monthly" => monthly(&expiries),
        d => expiries.iter().copied().find(|e| *e == d),
    };
    let chain = date.and_then(|d| same.iter().find(|c| c["expiry"] == d));
    let body = chain
        .and_then(|c| c["id"].as_str())
        .and_then(|id| board.bodies.get(id));
    match body {
        Some(b) => {
            let mut v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.remove("type");
            }
            (200, v.to_string())
        }
        None => {
            let running: Vec<&str> = same.iter().filter_map(|c| c["expiry"].as_str()).collect();
            error(
                404,
                format!(
                    "no running chain of {} for expiry '{}' (listed expiries: {}; running: {}); subscribe_chain on /ws starts one",
                    first["underlying"].as_str().unwrap_or(underlying),
                    pick.chars().take(20).collect::<String>(),
                    expiries.join(", "),
                    running.join(", ")
                ),
            )
        }
    }
}

/// The last listed expiry of the nearest month that has one.
fn monthly<'a>(expiries: &[&'a str]) -> Option<&'a str> {
    let month = expiries.first()?.get(..7)?;
    expiries.iter().copied().rfind(|e| e.starts_with(month))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn board() -> Board {
        let mut b = Board::default();
        b.chains.push(
            json!({"id":"NIFTY:2026-12-08","underlying":"NIFTY","expiry":"2026-12-08",
            "expiries":["2026-12-08","2026-12-15","2026-12-29","2027-01-26"]}),
        );
        b.chains.push(
            json!({"id":"NIFTY:2026-12-29","underlying":"NIFTY","expiry":"2026-12-29",
            "expiries":["2026-12-08","2026-12-15","2026-12-29","2027-01-26"]}),
        );
        b.bodies.insert(
            "NIFTY:2026-12-08".into(),
            Bytes::from(r#"{"type":"chain","id":"NIFTY:2026-12-08"}"#),
        );
        b.bodies.insert(
            "NIFTY:2026-12-29".into(),
            Bytes::from(r#"{"type":"chain","id":"NIFTY:2026-12-29"}"#),
        );
        b
    }

    #[test]
    fn picks_by_rule_or_date_and_names_what_exists() {
        let b = board();
        assert_eq!(
            one(&b, "nifty", ""),
            (200, r#"{"id":"NIFTY:2026-12-08"}"#.to_string())
        );
        assert_eq!(
            one(&b, "NIFTY", "expiry=monthly").1,
            r#"{"id":"NIFTY:2026-12-29"}"#
        );
        assert_eq!(one(&b, "NIFTY", "expiry=2026-12-29").0, 200);
        let (status, body) = one(&b, "NIFTY", "expiry=next");
        assert_eq!(status, 404);
        assert!(
            body.contains("2026-12-15") && body.contains("running: 2026-12-08, 2026-12-29"),
            "{body}"
        );
        let (status, body) = one(&b, "SENSEX", "");
        assert_eq!(status, 404);
        assert!(body.contains("NIFTY:2026-12-08"), "{body}");
        assert!(list(&b).contains("\"chains\""));
    }
}
