//! Request counters, kept once and shown twice: as Prometheus text on
//! `/metrics` and as JSON on `/v1/stats`.

use cache_proto::body::{NamespaceStats, ProtocolStats, Stats, StoredStats};
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The protocol a request arrived through.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Protocol {
    /// Native v1 content-addressed blobs.
    Cas,
    /// Native v1 action cache.
    Ac,
    /// Bazel HTTP remote cache.
    Bazel,
    /// Turborepo remote cache.
    Turbo,
    /// ccache HTTP remote storage.
    Ccache,
    /// Gradle HTTP build cache.
    Gradle,
    /// Nx self-hosted remote cache.
    Nx,
    /// The Remote Execution API cache over gRPC.
    Reapi,
}

impl Protocol {
    const ALL: [Protocol; 8] = [
        Protocol::Cas,
        Protocol::Ac,
        Protocol::Bazel,
        Protocol::Turbo,
        Protocol::Ccache,
        Protocol::Gradle,
        Protocol::Nx,
        Protocol::Reapi,
    ];

    /// Its place in [`Protocol::ALL`], which lists them in declaration
    /// order.
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cas => "cas",
            Self::Ac => "ac",
            Self::Bazel => "bazel",
            Self::Turbo => "turbo",
            Self::Ccache => "ccache",
            Self::Gradle => "gradle",
            Self::Nx => "nx",
            Self::Reapi => "reapi",
        }
    }
}

impl ReadResult {
    fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

impl WriteResult {
    fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Rejected => "rejected",
        }
    }
}

macro_rules! lowercase_label_value {
    ($($kind:ty),*) => {$(
        impl EncodeLabelValue for $kind {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.name())
            }
        }
    )*};
}

lowercase_label_value!(Protocol, ReadResult, WriteResult);

/// Outcome of a read.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReadResult {
    /// Found.
    Hit,
    /// Not found.
    Miss,
}

/// Outcome of a write.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum WriteResult {
    /// Stored (or already present).
    Stored,
    /// Refused: wrong digest, too large, malformed body, failed precondition.
    Rejected,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    protocol: Protocol,
    result: ReadResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// The HTTP methods counted by name, the last for any other.
const HTTP_METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "other"];

/// The gRPC methods counted by name; any other path counts as `other`.
const GRPC_METHODS: [&str; 11] = [
    "Capabilities/GetCapabilities",
    "ContentAddressableStorage/FindMissingBlobs",
    "ContentAddressableStorage/BatchUpdateBlobs",
    "ContentAddressableStorage/BatchReadBlobs",
    "ContentAddressableStorage/GetTree",
    "ActionCache/GetActionResult",
    "ActionCache/UpdateActionResult",
    "ByteStream/Read",
    "ByteStream/Write",
    "ByteStream/QueryWriteStatus",
    "other",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    protocol: Protocol,
    result: WriteResult,
}

/// All counters of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reads: Family<ReadLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    received: Family<ProtocolLabels, Counter>,
    served: Family<ProtocolLabels, Counter>,
    redirected: Family<ProtocolLabels, Counter>,
    grpc_calls: Family<MethodLabels, Counter>,
    /// GET, HEAD, PUT, POST, other: members of one family, kept at hand.
    http_requests: [Counter; 5],
    /// Members of `reads` by protocol (in [`Protocol::ALL`]'s order), hit
    /// then miss, kept at hand: a read counts without a label lookup.
    reads_by_protocol: [[Counter; 2]; 8],
    /// Members of `served` by protocol, kept at hand.
    served_by_protocol: [Counter; 8],
    stored_objects: Family<ProtocolLabels, Gauge>,
    stored_bytes: Gauge,
    stored_compressed_bytes: Gauge,
    quota_bytes: Gauge,
    evicted_objects: Counter,
    evicted_bytes: Counter,
    namespace_stored_bytes: Family<NamespaceLabels, Gauge>,
    namespace_quota_bytes: Family<NamespaceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cache");
        let http_requests: Family<MethodLabels, Counter> = Family::default();
        // Handles on the family's members (a counter's clones share its
        // value): a request counts without a label lookup.
        let http_counters = HTTP_METHODS.map(|method| {
            (*http_requests.get_or_create(&MethodLabels {
                method: method.to_owned(),
            }))
            .clone()
        });
        let reads: Family<ReadLabels, Counter> = Family::default();
        let served: Family<ProtocolLabels, Counter> = Family::default();
        let reads_by_protocol = Protocol::ALL.map(|protocol| {
            [ReadResult::Hit, ReadResult::Miss]
                .map(|result| (*reads.get_or_create(&ReadLabels { protocol, result })).clone())
        });
        let served_by_protocol = Protocol::ALL
            .map(|protocol| (*served.get_or_create(&ProtocolLabels { protocol })).clone());
        let metrics = Self {
            reads,
            reads_by_protocol,
            served_by_protocol,
            writes: Family::default(),
            received: Family::default(),
            served,
            redirected: Family::default(),
            grpc_calls: Family::default(),
            http_requests: http_counters,
            stored_objects: Family::default(),
            stored_bytes: Gauge::default(),
            stored_compressed_bytes: Gauge::default(),
            quota_bytes: Gauge::default(),
            evicted_objects: Counter::default(),
            evicted_bytes: Counter::default(),
            namespace_stored_bytes: Family::default(),
            namespace_quota_bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "namespace_stored_bytes",
            "Bytes as stored charged to each namespace (its entries and the blobs it stored first)",
            metrics.namespace_stored_bytes.clone(),
        );
        registry.register(
            "namespace_quota_bytes",
            "The --namespace-quota of each namespace that has one and holds objects",
            metrics.namespace_quota_bytes.clone(),
        );
        registry.register(
            "reads",
            "Reads by protocol and result",
            metrics.reads.clone(),
        );
        registry.register(
            "writes",
            "Writes by protocol and result",
            metrics.writes.clone(),
        );
        registry.register(
            "received_bytes",
            "Request body bytes accepted, as sent on the wire",
            metrics.received.clone(),
        );
        registry.register(
            "served_bytes",
            "Response body bytes sent, as sent on the wire",
            metrics.served.clone(),
        );
        registry.register(
            "redirected_bytes",
            "Bytes of reads redirected to the object store (presigned URLs)",
            metrics.redirected.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests received, by method",
            http_requests,
        );
        registry.register(
            "grpc_calls",
            "gRPC calls received, by service/method",
            metrics.grpc_calls.clone(),
        );
        registry.register(
            "stored_objects",
            "Objects in the store, from the index",
            metrics.stored_objects.clone(),
        );
        registry.register(
            "stored_bytes",
            "Uncompressed bytes in the store, from the index",
            metrics.stored_bytes.clone(),
        );
        registry.register(
            "stored_compressed_bytes",
            "Bytes in the store as stored, from the index",
            metrics.stored_compressed_bytes.clone(),
        );
        registry.register(
            "quota_bytes",
            "The --max-size quota on stored bytes (0: none)",
            metrics.quota_bytes.clone(),
        );
        registry.register(
            "evicted_objects",
            "Objects evicted to keep the store under its quota",
            metrics.evicted_objects.clone(),
        );
        registry.register(
            "evicted_bytes",
            "Bytes (as stored) evicted to keep the store under its quota",
            metrics.evicted_bytes.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts a read.
    pub fn read(&self, protocol: Protocol, result: ReadResult) {
        // Hit, then miss: declaration order, as the table was built.
        self.reads_by_protocol[protocol.index()][result as usize].inc();
    }

    /// Counts a write.
    pub fn write(&self, protocol: Protocol, result: WriteResult) {
        self.writes
            .get_or_create(&WriteLabels { protocol, result })
            .inc();
    }

    /// Counts request body bytes of an accepted write.
    pub fn received(&self, protocol: Protocol, bytes: u64) {
        self.received
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(bytes);
    }

    /// Counts response body bytes.
    pub fn served(&self, protocol: Protocol, bytes: u64) {
        self.served_by_protocol[protocol.index()].inc_by(bytes);
    }

    /// Counts a read of `bytes` redirected to the object store.
    pub fn redirected(&self, protocol: Protocol, bytes: u64) {
        self.redirected
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(bytes);
    }

    /// Counts an HTTP request.
    pub fn http_request(&self, method: &axum::http::Method) {
        use axum::http::Method;
        let index = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::PUT => 2,
            Method::POST => 3,
            _ => 4,
        };
        self.http_requests[index].inc();
    }

    /// Counts a gRPC call to `path` (`/package.Service/Method`).
    pub fn grpc_call(&self, path: &str) {
        let method = path
            .rsplit_once('/')
            .and_then(|(service, method)| {
                let service = service.rsplit('.').next()?;
                GRPC_METHODS
                    .iter()
                    .find(|known| known.split_once('/') == Some((service, method)))
            })
            .unwrap_or(&"other");
        self.grpc_calls
            .get_or_create(&MethodLabels {
                method: (*method).to_owned(),
            })
            .inc();
    }

    /// Counts an evicted object of `bytes` (as stored).
    pub fn evicted(&self, bytes: u64) {
        self.evicted_objects.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// Completes index totals with the quota and the eviction counters.
    pub fn with_eviction(&self, mut stored: StoredStats, quota: Option<u64>) -> StoredStats {
        stored.quota_bytes = quota;
        stored.evicted_objects = self.evicted_objects.get();
        stored.evicted_bytes = self.evicted_bytes.get();
        stored
    }

    fn set_stored(&self, stored: &StoredStats) {
        let set = |protocol, value: u64| {
            self.stored_objects
                .get_or_create(&ProtocolLabels { protocol })
                .set(value as i64);
        };
        set(Protocol::Cas, stored.blobs);
        set(Protocol::Ac, stored.action_entries);
        self.stored_bytes.set(stored.bytes as i64);
        self.stored_compressed_bytes.set(stored.stored_bytes as i64);
        self.quota_bytes
            .set(stored.quota_bytes.unwrap_or(0).min(i64::MAX as u64) as i64);
    }

    /// Prometheus text exposition, with the stored totals and the
    /// namespaces' usage given (namespaces that hold nothing any more
    /// leave the exposition).
    pub fn render(&self, stored: &StoredStats, namespaces: &[NamespaceStats]) -> String {
        self.set_stored(stored);
        self.namespace_stored_bytes.clear();
        self.namespace_quota_bytes.clear();
        for usage in namespaces {
            let labels = NamespaceLabels {
                namespace: usage.namespace.clone(),
            };
            let bytes = usage.stored_bytes.min(i64::MAX as u64) as i64;
            self.namespace_stored_bytes
                .get_or_create(&labels)
                .set(bytes);
            if let Some(quota) = usage.quota_bytes {
                let quota = quota.min(i64::MAX as u64) as i64;
                self.namespace_quota_bytes.get_or_create(&labels).set(quota);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// JSON statistics, with the stored totals given.
    pub fn stats(&self, stored: StoredStats) -> Stats {
        let count = |family: &Family<ReadLabels, Counter>, protocol, result| {
            family.get_or_create(&ReadLabels { protocol, result }).get()
        };
        let protocols = Protocol::ALL
            .into_iter()
            .map(|protocol| {
                let writes = |result| {
                    self.writes
                        .get_or_create(&WriteLabels { protocol, result })
                        .get()
                };
                let bytes = |family: &Family<ProtocolLabels, Counter>| {
                    family.get_or_create(&ProtocolLabels { protocol }).get()
                };
                let stats = ProtocolStats {
                    hits: count(&self.reads, protocol, ReadResult::Hit),
                    misses: count(&self.reads, protocol, ReadResult::Miss),
                    writes: writes(WriteResult::Stored),
                    rejected: writes(WriteResult::Rejected),
                    bytes_received: bytes(&self.received),
                    bytes_served: bytes(&self.served),
                };
                (protocol.name().to_owned(), stats)
            })
            .collect();
        Stats {
            stored,
            protocols,
            namespaces: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_calls_are_counted_by_method() {
        let metrics = Metrics::default();
        metrics.http_request(&axum::http::Method::GET);
        metrics.http_request(&axum::http::Method::GET);
        metrics.http_request(&axum::http::Method::PATCH);
        metrics.grpc_call("/google.bytestream.ByteStream/Write");
        metrics.grpc_call("/not.a.Service/Method");
        let text = metrics.render(&StoredStats::default(), &[]);
        for line in [
            "cache_http_requests_total{method=\"GET\"} 2",
            "cache_http_requests_total{method=\"PUT\"} 0",
            "cache_http_requests_total{method=\"other\"} 1",
            "cache_grpc_calls_total{method=\"ByteStream/Write\"} 1",
            "cache_grpc_calls_total{method=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn every_protocol_counts_in_its_own_series() {
        let metrics = Metrics::default();
        for (n, protocol) in Protocol::ALL.into_iter().enumerate() {
            assert_eq!(protocol.index(), n);
            metrics.read(protocol, ReadResult::Hit);
            metrics.served(protocol, n as u64 + 1);
        }
        metrics.read(Protocol::Nx, ReadResult::Miss);
        let text = metrics.render(&StoredStats::default(), &[]);
        for (n, protocol) in Protocol::ALL.into_iter().enumerate() {
            let name = protocol.name();
            let misses = u64::from(protocol == Protocol::Nx);
            for line in [
                format!("cache_reads_total{{protocol=\"{name}\",result=\"hit\"}} 1"),
                format!("cache_reads_total{{protocol=\"{name}\",result=\"miss\"}} {misses}"),
                format!("cache_served_bytes_total{{protocol=\"{name}\"}} {}", n + 1),
            ] {
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
    }

    #[test]
    fn counters_show_in_both_views() {
        let metrics = Metrics::default();
        metrics.read(Protocol::Cas, ReadResult::Hit);
        metrics.read(Protocol::Cas, ReadResult::Miss);
        metrics.served(Protocol::Cas, 42);
        let stored = StoredStats {
            blobs: 3,
            ..StoredStats::default()
        };
        let text = metrics.render(&stored, &[]);
        assert!(
            text.contains("cache_reads_total{protocol=\"cas\",result=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cache_served_bytes_total{protocol=\"cas\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("cache_stored_objects{protocol=\"cas\"} 3"),
            "{text}"
        );
        let stats = metrics.stats(stored);
        assert_eq!(stats.protocols["cas"].hits, 1);
        assert_eq!(stats.protocols["cas"].misses, 1);
        assert_eq!(stats.protocols["cas"].bytes_served, 42);
        assert_eq!(stats.stored.blobs, 3);
    }
}
