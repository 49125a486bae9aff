//! The fanout's counters (shared by its shards), each named for `/metrics`
//! and `/stats`.

use crate::metrics::Counter;

/// Counters kept by the fanout and front-door threads; readable from any
/// thread.
#[derive(Debug)]
pub struct FanoutStats {
    /// WebSocket clients connected now.
    pub clients: Counter,
    /// `/ws/prices` clients connected now (the front door renders the
    /// prices object only while there is one).
    pub prices_clients: Counter,
    /// Instrument subscriptions held by clients now.
    pub subscriptions: Counter,
    /// Instruments held upstream now (watchlist included).
    pub upstream_held: Counter,
    /// Instruments wanted but waiting for upstream capacity.
    pub upstream_queued: Counter,
    /// The account's upstream capacity in instruments.
    pub upstream_capacity: Counter,
    /// WebSocket clients accepted since start.
    pub clients_total: Counter,
    /// Connections refused at the client or connection limit.
    pub clients_rejected: Counter,
    /// Updates taken from the book ring.
    pub updates: Counter,
    /// Messages queued to clients (updates, snapshots, replies).
    pub messages: Counter,
    /// Payload bytes queued to clients.
    pub bytes: Counter,
    /// Messages replaced by a newer one for a client that was behind.
    pub conflated: Counter,
    /// Clients closed for staying behind too long.
    pub slow_closes: Counter,
    /// Error messages sent for bad client input.
    pub client_errors: Counter,
    /// Client frames ignored for the rate limit.
    pub rate_limited: Counter,
    /// Clients closed for oversized frames, binary frames, protocol errors
    /// or sustained rate-limit abuse.
    pub protocol_closes: Counter,
    /// Client messages whose symbols were resolved off the fanout thread.
    pub resolutions: Counter,
    /// Plain HTTP requests answered.
    pub http_requests: Counter,
    /// Plain HTTP connections accepted.
    pub http_connections_total: Counter,
}

impl Default for FanoutStats {
    fn default() -> Self {
        FanoutStats {
            clients: Counter::new("fanout_clients", "WebSocket clients connected"),
            prices_clients: Counter::new("fanout_prices_clients", "/ws/prices clients connected"),
            subscriptions: Counter::new("fanout_subscriptions", "Client subscriptions held"),
            upstream_held: Counter::new(
                "upstream_instruments",
                "Instruments subscribed upstream (watchlist included)",
            ),
            upstream_queued: Counter::new(
                "upstream_queued_instruments",
                "Instruments waiting for upstream capacity",
            ),
            upstream_capacity: Counter::new(
                "upstream_capacity_instruments",
                "Instruments the account may hold upstream (connections x per connection)",
            ),
            clients_total: Counter::new("fanout_clients_total", "WebSocket clients accepted"),
            clients_rejected: Counter::new(
                "fanout_clients_rejected_total",
                "Connections refused at the client limit",
            ),
            updates: Counter::new("fanout_updates_total", "Updates taken from the book"),
            messages: Counter::new("fanout_messages_total", "Messages queued to clients"),
            bytes: Counter::new("fanout_bytes_total", "Payload bytes queued to clients"),
            conflated: Counter::new(
                "fanout_conflated_total",
                "Messages replaced by newer ones for lagging clients",
            ),
            slow_closes: Counter::new(
                "fanout_slow_closes_total",
                "Clients closed for staying behind",
            ),
            client_errors: Counter::new(
                "fanout_client_errors_total",
                "Error replies to bad client messages",
            ),
            rate_limited: Counter::new(
                "fanout_rate_limited_total",
                "Client frames ignored for the rate limit",
            ),
            protocol_closes: Counter::new(
                "fanout_protocol_closes_total",
                "Clients closed for protocol violations or abuse",
            ),
            resolutions: Counter::new(
                "fanout_symbol_resolutions_total",
                "Client messages whose symbols were resolved off the fanout thread",
            ),
            http_requests: Counter::new("http_requests_total", "Plain HTTP requests answered"),
            http_connections_total: Counter::new(
                "http_connections_total",
                "Plain HTTP connections accepted",
            ),
        }
    }
}

impl FanoutStats {
    /// Every counter, in `/metrics` order.
    pub fn all(&self) -> [&Counter; 19] {
        [
            &self.clients,
            &self.prices_clients,
            &self.subscriptions,
            &self.upstream_held,
            &self.upstream_queued,
            &self.upstream_capacity,
            &self.clients_total,
            &self.clients_rejected,
            &self.updates,
            &self.messages,
            &self.bytes,
            &self.conflated,
            &self.slow_closes,
            &self.client_errors,
            &self.rate_limited,
            &self.protocol_closes,
            &self.resolutions,
            &self.http_requests,
            &self.http_connections_total,
        ]
    }

    /// One message of `len` payload bytes queued.
    pub fn count_message(&self, len: usize) {
        self.messages.inc();
        self.bytes.add(len as u64);
    }
}
