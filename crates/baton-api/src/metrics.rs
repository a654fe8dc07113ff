//! `GET /metrics`: Prometheus' text format. The data plane's figures per
//! app, environment, release and target, as the proxy counts them
//! (requests, responses by status class, time to the response's head,
//! open connections, bytes), and the control plane's (deployments by
//! kind and outcome, and the time they took). Encoded by prometheus-client
//! from a snapshot taken at each scrape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use baton_orchestrator::{Orchestrator, TargetFigures};
use baton_store::DeploymentCount;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{ApiError, ApiResult};

/// Where Prometheus looks by default; behind a token like the API.
pub(crate) const PATH: &str = "/metrics";

/// Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(o): State<Arc<Orchestrator>>) -> ApiResult<impl IntoResponse> {
    let (builds, notifications) = o.store().pipeline_counts().await?;
    let snapshot = Snapshot {
        targets: o.target_metrics().await,
        deployments: o.store().deployment_counts().await?,
        builds,
        notifications,
    };
    let mut registry = Registry::with_prefix("baton");
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
}

#[derive(Debug)]
struct Snapshot {
    targets: Vec<TargetFigures>,
    deployments: Vec<DeploymentCount>,
    /// (app, state, count)
    builds: Vec<(String, String, u64)>,
    /// (channel, event kind, state, count)
    notifications: Vec<(String, String, String, u64)>,
}

fn target_labels(f: &TargetFigures) -> [(&'static str, String); 5] {
    [
        ("app", f.key.app.clone()),
        ("environment", f.key.environment.clone()),
        ("release", f.release[..f.release.len().min(12)].to_string()),
        ("target", f.target.to_string()),
        ("state", f.state.to_string()),
    ]
}

/// A target's figure: its metric's name, its help, and how it is read.
type Figure<T> = (&'static str, &'static str, fn(&TargetFigures) -> T);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters: [Figure<u64>; 4] = [
            ("proxy_requests", "Requests the proxy sent to the target", |f| f.stats.requests),
            ("proxy_failures", "Requests the proxy answered itself with 502 or 504 (the target refused or did not answer)", |f| f.stats.failures),
            ("proxy_timeouts", "Requests the target did not answer within the app's response timeout", |f| f.stats.timeouts),
            ("proxy_response_bytes", "Response body bytes sent to clients", |f| f.stats.metrics.bytes),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in &self.targets {
                let labels = target_labels(f);
                ConstCounter::new(value(f)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "proxy_responses",
            "The target's responses, by status class (2xx, 5xx, …)",
            None,
            MetricType::Counter,
        )?;
        for f in &self.targets {
            for (i, n) in f.stats.metrics.by_class.iter().enumerate() {
                let mut labels = target_labels(f).to_vec();
                labels.push(("code", format!("{}xx", i + 1)));
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [Figure<i64>; 2] = [
            (
                "proxy_in_flight",
                "Requests in flight on the target (open WebSockets and streams included)",
                |f| f.stats.in_flight as i64,
            ),
            (
                "proxy_long_lived",
                "Open WebSockets and event streams on the target",
                |f| f.stats.long_lived as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for f in &self.targets {
                let labels = target_labels(f);
                ConstGauge::new(value(f)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "proxy_response_seconds",
            "Time from the request to the target's response head",
            None,
            MetricType::Histogram,
        )?;
        for f in &self.targets {
            let m = &f.stats.metrics;
            let mut buckets: Vec<(f64, u64)> = baton_proxy::LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(m.latency_buckets.iter().copied())
                .collect();
            let finite: u64 = m.latency_buckets.iter().sum();
            buckets.push((f64::MAX, m.latency_count.saturating_sub(finite)));
            let labels = target_labels(f);
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    m.latency_sum_us as f64 / 1e6,
                    m.latency_count,
                    &buckets,
                    None,
                )?;
        }
        let mut family = encoder.encode_descriptor(
            "deployments",
            "Deployments, by kind and state (succeeded, failed, running, …)",
            None,
            MetricType::Counter,
        )?;
        for d in &self.deployments {
            let labels = deployment_labels(d);
            ConstCounter::new(d.count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "deployment_seconds",
            "Time the finished deployments took, in all",
            None,
            MetricType::Counter,
        )?;
        for d in &self.deployments {
            let labels = deployment_labels(d);
            ConstCounter::new(d.seconds).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "builds",
            "Pipeline builds, by app and state (passed, failed, running, …)",
            None,
            MetricType::Counter,
        )?;
        for (app, state, n) in &self.builds {
            let labels = [("app", app.clone()), ("state", state.clone())];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "notifications",
            "Notifications, by channel, event and state (delivered, pending, failed)",
            None,
            MetricType::Counter,
        )?;
        for (channel, event, state, n) in &self.notifications {
            let labels = [
                ("channel", channel.clone()),
                ("event", event.clone()),
                ("state", state.clone()),
            ];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn deployment_labels(d: &DeploymentCount) -> [(&'static str, String); 4] {
    [
        ("app", d.app.clone()),
        ("environment", d.environment.clone()),
        ("kind", d.kind.clone()),
        ("state", d.state.clone()),
    ]
}
