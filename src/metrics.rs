//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//! Plain atomics: the hot path (one event relayed) costs a relaxed add.

mod process;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;

use parking_lot::Mutex;

/// A Prometheus histogram with fixed bucket bounds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration, in seconds.
    pub fn observe_secs(&self, secs: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((secs * 1_000_000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_samples(out, name, labels);
    }

    fn render_samples(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// A counter family keyed by one or two label values.
#[derive(Default)]
pub struct LabeledCounter {
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl LabeledCounter {
    /// Adds one to the counter for these label values.
    pub fn inc(&self, labels: &[&str]) {
        let mut map = self.values.lock();
        *map.entry(labels.iter().map(|s| s.to_string()).collect())
            .or_insert(0) += 1;
    }

    /// Every label set with its current count.
    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.values
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (values, count) in self.snapshot() {
            let labels: Vec<String> = label_names
                .iter()
                .zip(&values)
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {count}", labels.join(","));
        }
    }
}

/// A histogram family keyed by one label value, created on first use.
pub struct LabeledHistogram {
    bounds: &'static [f64],
    values: Mutex<BTreeMap<String, Histogram>>,
}

impl LabeledHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one duration, in seconds, under `label`.
    pub fn observe_secs(&self, label: &str, secs: f64) {
        let mut map = self.values.lock();
        map.entry(label.to_string())
            .or_insert_with(|| Histogram::new(self.bounds))
            .observe_secs(secs);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_name: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let map = self.values.lock();
        for (value, histogram) in map.iter() {
            let labels = format!("{label_name}=\"{}\"", escape(value));
            histogram.render_samples(out, name, &labels);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric the relay exports.
pub struct Metrics {
    /// Open WebSocket connections.
    pub sockets_open: AtomicI64,
    /// Connections that have authenticated.
    pub sessions_authenticated: AtomicI64,
    /// Job events sent to sockets.
    pub events_relayed: AtomicU64,
    /// Connections dropped because their outbound queue overflowed.
    pub outbound_overflow_disconnects: AtomicU64,
    /// Messages refused by rate limits, by kind.
    pub rate_limited: LabeledCounter,
    /// Failed authentications, by reason.
    pub auth_failures: LabeledCounter,
    /// Labels: state, backend.
    pub jobs_running: Mutex<BTreeMap<(String, String), i64>>,
    /// Labels: outcome (completed/failed/cancelled), backend.
    pub jobs_finished: LabeledCounter,
    /// Labels: code.
    pub upstream_failures: LabeledCounter,
    /// Jobs this instance failed because their lease expired (their instance stopped renewing).
    pub jobs_lease_swept: AtomicU64,
    /// How long jobs take.
    pub job_duration: Histogram,
    /// Backend event received → frame queued to every subscriber.
    pub relay_latency: Histogram,
    /// Labels: endpoint (the Modal function name, e.g. `get_file`).
    pub modal_calls: LabeledCounter,
    /// Labels: endpoint. Transport errors, timeouts and unexpected statuses.
    pub modal_call_failures: LabeledCounter,
    /// By endpoint: request sent → response status received (or the call failed).
    pub modal_call_duration: LabeledHistogram,
    /// Open TCP connections of the HTTP front door, WebSockets included.
    pub http_connections_open: AtomicI64,
    /// Labels: reason (capacity, client, header_timeout, keepalive_timeout, evicted, descriptors).
    pub http_connections_shed: LabeledCounter,
    /// Local CLI questions of the pre-job pipeline. Labels: purpose, outcome.
    pub pipeline_cli_calls: LabeledCounter,
    /// Pipeline steps that fell back (intent → edit, chat → generation, ...). Labels: step.
    pub pipeline_fallbacks: LabeledCounter,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    sockets_open: AtomicI64::new(0),
    sessions_authenticated: AtomicI64::new(0),
    events_relayed: AtomicU64::new(0),
    outbound_overflow_disconnects: AtomicU64::new(0),
    rate_limited: LabeledCounter::default(),
    auth_failures: LabeledCounter::default(),
    jobs_running: Mutex::new(BTreeMap::new()),
    jobs_finished: LabeledCounter::default(),
    upstream_failures: LabeledCounter::default(),
    jobs_lease_swept: AtomicU64::new(0),
    job_duration: Histogram::new(&[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0]),
    relay_latency: Histogram::new(&[
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1,
    ]),
    modal_calls: LabeledCounter::default(),
    modal_call_failures: LabeledCounter::default(),
    modal_call_duration: LabeledHistogram::new(&[
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]),
    http_connections_open: AtomicI64::new(0),
    http_connections_shed: LabeledCounter::default(),
    pipeline_cli_calls: LabeledCounter::default(),
    pipeline_fallbacks: LabeledCounter::default(),
});

/// Adds one to a counter.
pub fn counter_inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Moves a gauge up or down by `delta`.
pub fn gauge_add(gauge: &AtomicI64, delta: i64) {
    gauge.fetch_add(delta, Ordering::Relaxed);
}

impl Metrics {
    /// Moves the running-jobs gauge for this state and backend by `delta`.
    pub fn job_state(&self, state: &str, backend: &str, delta: i64) {
        let mut map = self.jobs_running.lock();
        *map.entry((state.to_string(), backend.to_string()))
            .or_insert(0) += delta;
    }

    /// One finished call to a Modal endpoint other than `generate_game`.
    pub fn modal_call(&self, endpoint: &str, ok: bool, secs: f64) {
        self.modal_calls.inc(&[endpoint]);
        if !ok {
            self.modal_call_failures.inc(&[endpoint]);
        }
        self.modal_call_duration.observe_secs(endpoint, secs);
    }

    /// All metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "relay_websockets_open",
            "Open WebSocket connections.",
            self.sockets_open.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "relay_sessions_authenticated",
            "WebSocket connections with a verified token.",
            self.sessions_authenticated.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "relay_events_relayed_total",
            "Job events delivered to subscribed sockets (one per socket).",
            self.events_relayed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "relay_jobs_lease_swept_total",
            "Jobs failed here because their instance stopped renewing their lease.",
            self.jobs_lease_swept.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "relay_outbound_overflow_disconnects_total",
            "Connections closed because the client did not read its queue.",
            self.outbound_overflow_disconnects.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "relay_http_connections_open",
            "Open TCP connections, WebSockets included.",
            self.http_connections_open.load(Ordering::Relaxed),
        );
        self.http_connections_shed.render(
            &mut out,
            "relay_http_connections_shed_total",
            "Connections refused or closed by the front door, by reason.",
            &["reason"],
        );
        let _ = writeln!(out, "# HELP relay_jobs Jobs currently unfinished, by state and backend.\n# TYPE relay_jobs gauge");
        let map = self.jobs_running.lock();
        for ((state, backend), v) in map.iter() {
            let _ = writeln!(
                out,
                "relay_jobs{{state=\"{state}\",backend=\"{backend}\"}} {v}"
            );
        }
        drop(map);
        self.jobs_finished.render(
            &mut out,
            "relay_jobs_finished_total",
            "Jobs that reached a terminal status.",
            &["outcome", "backend"],
        );
        self.upstream_failures.render(
            &mut out,
            "relay_job_failures_total",
            "Failed jobs by failure code.",
            &["code"],
        );
        self.auth_failures.render(
            &mut out,
            "relay_auth_failures_total",
            "Refused access tokens by reason.",
            &["reason"],
        );
        self.rate_limited.render(
            &mut out,
            "relay_rate_limited_total",
            "Messages refused by a rate limit.",
            &["limit"],
        );
        self.job_duration.render(
            &mut out,
            "relay_job_duration_seconds",
            "Job wall time from start to terminal event.",
            "",
        );
        self.relay_latency.render(
            &mut out,
            "relay_event_latency_seconds",
            "Time from a backend event arriving to its frame being queued to subscribers.",
            "",
        );
        self.modal_calls.render(
            &mut out,
            "relay_modal_calls_total",
            "Calls to Modal endpoints other than generate_game.",
            &["endpoint"],
        );
        self.modal_call_failures.render(
            &mut out,
            "relay_modal_call_failures_total",
            "Modal calls that failed: transport error, timeout or unexpected status.",
            &["endpoint"],
        );
        self.modal_call_duration.render(
            &mut out,
            "relay_modal_call_duration_seconds",
            "Modal call time, request sent to response status received.",
            "endpoint",
        );
        if let Some(sample) = process::ProcessSample::read() {
            sample.render(&mut out);
        }
        self.pipeline_cli_calls.render(
            &mut out,
            "relay_pipeline_cli_calls_total",
            "Local Claude CLI questions of the pre-job pipeline by purpose and outcome.",
            &["purpose", "outcome"],
        );
        self.pipeline_fallbacks.render(
            &mut out,
            "relay_pipeline_fallbacks_total",
            "Pipeline steps that fell back after a failed call (intent: edit, chat: generation, skills: keyword rules).",
            &["step"],
        );
        out
    }
}
