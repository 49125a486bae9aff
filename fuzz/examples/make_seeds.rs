//! Writes the seed corpus of every target: real frames, as DhanHQ sends
//! them, produced by the crate's own encoders (`feed_frame`, `depth_frame`);
//! real request heads as browsers, curl and old clients send them
//! (`http_head`); the client protocol's own examples (`client_message`); and
//! rows of the test fixture `tests/data/scrip-master.csv` (`scrip_master`).
//! Deterministic, so re-running it reproduces the committed files byte for
//! byte; it also checks that every seed parses the way it is meant to.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; files go to `OUT_DIR/<target>/`.

use std::path::{Path, PathBuf};

use dhan_relay::domain::{InstrumentKey, Segment};
use dhan_relay::fanout::http::{parse_head, Parsed};
use dhan_relay::fanout::protocol::{self, ClientMessage};
use dhan_relay::instrument::Master;
use dhan_relay::wire::depth::{self, DepthBook, DepthMessage, DepthRow, Side};
use dhan_relay::wire::feed::{
    self, DepthLevel, FeedData, FeedMessage, Full, Oi, PrevClose, Quote, Ticker,
};
use dhan_relay::wire::DisconnectReason;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));

    let reliance = InstrumentKey::new(Segment::NseEq, 2885);
    let nifty = InstrumentKey::new(Segment::IdxI, 13);
    let crude = InstrumentKey::new(Segment::McxComm, 430_000);
    let nifty_fut = InstrumentKey::new(Segment::NseFno, 35_001);

    let quote = Quote {
        ltp: 1443.4,
        ltq: 25,
        ltt: 1_770_109_795,
        avg_price: 1441.95,
        volume: 4_812_337,
        total_sell_qty: 612_450,
        total_buy_qty: 498_120,
        open: 1438.0,
        close: 1436.7,
        high: 1447.9,
        low: 1433.15,
    };
    let full = Full {
        quote: Quote {
            ltp: 5545.0,
            ltq: 1,
            ltt: 1_770_109_794,
            avg_price: 5538.6,
            volume: 18_204,
            total_sell_qty: 1_377,
            total_buy_qty: 1_502,
            open: 5521.0,
            close: 5517.0,
            high: 5561.0,
            low: 5512.0,
        },
        oi: 13_970,
        oi_day_high: 14_402,
        oi_day_low: 13_611,
        depth: std::array::from_fn(|i| DepthLevel {
            bid_qty: 3 + i as u32 * 2,
            ask_qty: 4 + i as u32,
            bid_orders: 2 + i as u16,
            ask_orders: 1 + i as u16,
            bid_price: 5544.0 - i as f32,
            ask_price: 5545.0 + i as f32,
        }),
    };

    let ticker = FeedMessage::Data(
        reliance,
        FeedData::Ticker(Ticker {
            ltp: 1443.4,
            ltt: 1_770_109_795,
        }),
    );
    let index_ticker = FeedMessage::Data(
        nifty,
        FeedData::Ticker(Ticker {
            ltp: 25760.85,
            ltt: 1_770_109_795,
        }),
    );
    let quote = FeedMessage::Data(reliance, FeedData::Quote(quote));
    let full = FeedMessage::Data(crude, FeedData::Full(full));
    let oi = FeedMessage::Data(nifty_fut, FeedData::Oi(Oi { oi: 12_458_700 }));
    let prev_close = FeedMessage::Data(
        nifty,
        FeedData::PrevClose(PrevClose {
            prev_close: 25727.55,
            prev_oi: 0,
        }),
    );
    let market_status = FeedMessage::Data(nifty, FeedData::MarketStatus);
    let disconnect = FeedMessage::Disconnect(DisconnectReason::TokenExpired);

    let feed_seeds: [(&str, &[FeedMessage]); 9] = [
        ("ticker", &[ticker]),
        ("ticker_index", &[index_ticker]),
        ("quote", &[quote]),
        ("full", &[full]),
        ("oi", &[oi]),
        ("prev_close", &[prev_close]),
        ("market_status", &[market_status]),
        ("disconnect_807", &[disconnect]),
        (
            "mixed",
            &[
                prev_close,
                index_ticker,
                ticker,
                quote,
                oi,
                full,
                market_status,
            ],
        ),
    ];
    let dir = out.join("feed_frame");
    std::fs::create_dir_all(&dir)?;
    for (name, messages) in feed_seeds {
        let mut frame = Vec::new();
        messages.iter().for_each(|m| m.encode(&mut frame));
        let decoded = feed::packets(&frame).filter(|p| p.is_ok()).count();
        assert_eq!(decoded, messages.len(), "{name}: every packet decodes");
        std::fs::write(dir.join(format!("{name}.bin")), &frame)?;
    }

    let book = |side, key, sequence, best: f64, step: f64| {
        DepthMessage::Book(DepthBook {
            key,
            side,
            sequence,
            rows: std::array::from_fn(|i| DepthRow {
                price: best + step * i as f64,
                quantity: 150 + 37 * i as u32,
                orders: 1 + (i as u32 % 4),
            }),
        })
    };
    let bid = book(Side::Bid, reliance, 1_204, 1443.3, -0.1);
    let ask = book(Side::Ask, reliance, 1_204, 1443.4, 0.1);
    let fut_bid = book(Side::Bid, nifty_fut, 88, 25_801.5, -0.5);
    let depth_disconnect = DepthMessage::Disconnect(DisconnectReason::TokenExpired);

    let depth_seeds: [(&str, &[DepthMessage]); 4] = [
        ("bid", &[fut_bid]),
        ("bid_ask", &[bid, ask]),
        ("disconnect_807", &[depth_disconnect]),
        ("bid_ask_disconnect", &[bid, ask, depth_disconnect]),
    ];
    let dir = out.join("depth_frame");
    std::fs::create_dir_all(&dir)?;
    for (name, messages) in depth_seeds {
        let mut frame = Vec::new();
        messages.iter().for_each(|m| m.encode(&mut frame));
        let decoded = depth::packets(&frame).filter(|p| p.is_ok()).count();
        assert_eq!(decoded, messages.len(), "{name}: every packet decodes");
        std::fs::write(dir.join(format!("{name}.bin")), &frame)?;
    }

    recordings(&out.join("recording"), &[ticker, quote, full, oi])?;
    http_heads(&out.join("http_head"))?;
    client_messages(&out.join("client_message"))?;
    scrip_masters(&out.join("scrip_master"))?;
    Ok(())
}

/// Request heads as real clients send them to the relay's listener.
fn http_heads(dir: &Path) -> std::io::Result<()> {
    let seeds: [(&str, &[u8], usize); 7] = [
        // (name, bytes, how many complete heads)
        (
            "browser_upgrade",
            b"GET /ws HTTP/1.1\r\n\
             Host: 127.0.0.1:8000\r\n\
             Connection: Upgrade\r\n\
             Pragma: no-cache\r\n\
             Cache-Control: no-cache\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
             Upgrade: websocket\r\n\
             Origin: http://127.0.0.1:8000\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Accept-Encoding: gzip, deflate, br, zstd\r\n\
             Accept-Language: en-IN,en;q=0.9\r\n\
             Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
            1,
        ),
        (
            "firefox_upgrade_prices",
            b"GET /ws/prices HTTP/1.1\r\n\
             Host: localhost:8000\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
             Accept: */*\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: http://localhost:3000\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Connection: keep-alive, Upgrade\r\n\
             Upgrade: websocket\r\n\r\n",
            1,
        ),
        (
            "curl_get",
            b"GET /prices HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            1,
        ),
        (
            "curl_search",
            b"GET /api/instruments?q=nifty%2025000+CE&limit=20 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            1,
        ),
        ("http10", b"GET /health HTTP/1.0\r\n\r\n", 1),
        (
            "pipelined",
            b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n\
             GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n",
            2,
        ),
        (
            "head_then_frame",
            // An upgrade whose first WebSocket frame (text "hi", masked) came in
            // the same read: the bytes after the head stay buffered.
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nSec-WebSocket-Version: 13\r\n\r\n\
             \x81\x82\x01\x02\x03\x04ik",
            1,
        ),
    ];
    std::fs::create_dir_all(dir)?;
    for (name, bytes, heads) in seeds {
        let mut rest = bytes;
        for i in 0..heads {
            let Parsed::Done(head) = parse_head(rest) else {
                panic!("{name}: head {i} does not parse");
            };
            rest = &rest[head.len..];
        }
        let text = bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b" \r\n".contains(b));
        let ext = if text { "txt" } else { "bin" };
        std::fs::write(dir.join(format!("{name}.{ext}")), bytes)?;
    }
    // A TLS ClientHello's first bytes (someone pointing https:// at the
    // plain listener): answered with 400.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x1e, 0x7c, 0x22,
        0x0d, 0x0a, 0x0d, 0x0a,
    ];
    assert!(matches!(parse_head(&hello), Parsed::Bad(400, _)));
    std::fs::write(dir.join("tls_client_hello.bin"), hello)
}

/// The client protocol's examples (README, "The client protocol"), and two
/// mistakes a client makes.
fn client_messages(dir: &Path) -> std::io::Result<()> {
    let seeds: [(&str, &str, bool); 9] = [
        (
            "subscribe_quote",
            r#"{"type": "subscribe",   "instruments": [{"exchangeSegment": "NSE_EQ", "securityId": "2885"}], "mode": "quote"}"#,
            true,
        ),
        (
            "subscribe_symbol",
            r#"{"type": "subscribe",   "instruments": [{"symbol": "NIFTY"}]}"#,
            true,
        ),
        (
            "unsubscribe",
            r#"{"type": "unsubscribe", "instruments": [{"exchangeSegment": "NSE_EQ", "securityId": "2885"}]}"#,
            true,
        ),
        ("ping", r#"{"type": "ping"}"#, true),
        (
            "subscribe_ticker_bse",
            r#"{"type":"subscribe","instruments":[{"exchangeSegment":"BSE_EQ","securityId":"500325"}],"mode":"ticker"}"#,
            true,
        ),
        (
            "subscribe_full_mixed",
            r#"{"type":"subscribe","mode":"full","instruments":[{"exchangeSegment":"IDX_I","securityId":13},{"symbol":"CRUDEOIL"},{"exchangeSegment":"MCX_COMM","securityId":"472808"},{"symbol":"BSE:RELIANCE"}]}"#,
            true,
        ),
        (
            "subscribe_derivatives",
            r#"{"type":"subscribe","mode":"quote","instruments":[{"symbol":"NIFTY FUT"},{"symbol":"NIFTY 25000 CE"},{"exchangeSegment":"NSE_FNO","securityId":"52001"}]}"#,
            true,
        ),
        (
            "unknown_segment",
            r#"{"type":"subscribe","instruments":[{"exchangeSegment":"XYZ","securityId":"1"}]}"#,
            false,
        ),
        (
            "malformed",
            r#"{"type":"subscribe","instruments":[{"symbol":"NIF"#,
            false,
        ),
    ];
    std::fs::create_dir_all(dir)?;
    for (name, text, ok) in seeds {
        let parsed = protocol::parse(text, 1_000);
        assert_eq!(parsed.is_ok(), ok, "{name}: {parsed:?}");
        if let Ok(ClientMessage::Subscribe { instruments, .. }) = &parsed {
            assert!(!instruments.is_empty());
        }
        std::fs::write(dir.join(format!("{name}.json")), text)?;
    }
    Ok(())
}

/// Slices of the scrip-master test fixture: its header (CRLF line ends,
/// DhanHQ's column order) and a few rows each.
fn scrip_masters(dir: &Path) -> std::io::Result<()> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let master = std::fs::read_to_string(fixtures.join("scrip-master.csv"))?;
    let shuffled = std::fs::read_to_string(fixtures.join("scrip-master-shuffled.csv"))?;
    let lines: Vec<&str> = master.split_inclusive('\n').collect();
    let (header, rows) = lines.split_first().expect("fixture has a header");
    let field = |row: &str, i: usize| row.split(',').nth(i).unwrap_or("").to_string();

    // The first row of each exchange, segment and instrument type, bad and
    // unsupported ones included.
    let mut seen = Vec::new();
    let kinds: Vec<&str> = rows
        .iter()
        .copied()
        .filter(|r| {
            let kind = (field(r, 0), field(r, 1), field(r, 3));
            let new = !seen.contains(&kind);
            seen.push(kind);
            new
        })
        .collect();
    // Every crude-oil future, on every exchange (the nearest-MCX-expiry rule).
    let crude: Vec<&str> = rows
        .iter()
        .copied()
        .filter(|r| field(r, 5).starts_with("CRUDEOIL-") && field(r, 3) == "FUTCOM")
        .collect();
    // NIFTY: the index, its futures and three options.
    let nifty: Vec<&str> = rows
        .iter()
        .copied()
        .filter(|r| {
            let ts = field(r, 5);
            ts == "NIFTY" || (ts.starts_with("NIFTY-") && field(r, 3) == "FUTIDX")
        })
        .chain(
            rows.iter()
                .copied()
                .filter(|r| field(r, 5).starts_with("NIFTY-") && field(r, 3) == "OPTIDX")
                .take(3),
        )
        .collect();
    let shuffled: Vec<&str> = shuffled.split_inclusive('\n').take(7).collect();

    let seeds: [(&str, String); 4] = [
        ("kinds", [&[*header], &kinds[..]].concat().concat()),
        ("crudeoil", [&[*header], &crude[..]].concat().concat()),
        ("nifty", [&[*header], &nifty[..]].concat().concat()),
        ("shuffled_columns", shuffled.concat()),
    ];
    std::fs::create_dir_all(dir)?;
    for (name, csv) in seeds {
        let m = Master::parse(csv.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!m.is_empty(), "{name}: no instruments");
        std::fs::write(dir.join(format!("{name}.csv")), csv)?;
    }
    Ok(())
}

/// Recording files (`docs/recording.md`): a whole one with frames of both
/// feeds, the same torn in its last record, and a header alone.
fn recordings(dir: &Path, messages: &[FeedMessage]) -> std::io::Result<()> {
    use dhan_relay::record::format::{self, Header};
    use dhan_relay::record::{FeedKind, Reader};

    let start: u64 = 1_770_109_795_000_000_000;
    let mut file = format::encode_header(&Header {
        version: format::VERSION,
        created_unix_ns: start,
        day: 20_260_203,
    })
    .to_vec();
    let header_only = file.clone();
    for (i, m) in messages.iter().enumerate() {
        let mut payload = Vec::new();
        m.encode(&mut payload);
        let feed = if i == 2 {
            FeedKind::Depth
        } else {
            FeedKind::Main
        };
        let mut head = format::record_header(
            payload.len() as u32,
            start + i as u64 * 1_000_000,
            i as u8,
            feed,
        );
        let crc = format::record_crc(&head, (&payload, &[]));
        format::seal(&mut head, crc);
        file.extend_from_slice(&head);
        file.extend_from_slice(&payload);
    }
    let torn = file[..file.len() - 7].to_vec();
    std::fs::create_dir_all(dir)?;
    for (name, bytes, frames, damaged) in [
        ("whole", &file, messages.len(), false),
        ("torn_tail", &torn, messages.len() - 1, true),
        ("header_only", &header_only, 0, false),
    ] {
        let mut r = Reader::from_read(Path::new(name), std::io::Cursor::new(bytes.clone()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.by_ref().count(), frames, "{name}: frames");
        assert_eq!(r.damage().is_some(), damaged, "{name}: damage");
        std::fs::write(dir.join(format!("{name}.dhr")), bytes)?;
    }
    Ok(())
}
