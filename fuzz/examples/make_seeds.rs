//! Writes the seed corpus for `feed_frame` and `depth_frame`: real frames, as
//! DhanHQ sends them, produced by the crate's own encoders. Deterministic, so
//! re-running it reproduces the committed files byte for byte.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; files go to `OUT_DIR/feed_frame/` and
//! `OUT_DIR/depth_frame/`.

use std::path::PathBuf;

use dhan_relay::domain::{InstrumentKey, Segment};
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
    Ok(())
}
