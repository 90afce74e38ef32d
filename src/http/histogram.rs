//! A histogram read from counters kept elsewhere (a pool's wait times), for a registry
//! built per scrape.

use std::sync::Mutex;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Sum, count and (upper bound, count in that bucket) pairs ending with `+Inf`.
#[derive(Debug, Default)]
pub struct SnapshotHistogram {
    values: Mutex<Values>,
}

#[derive(Debug, Default)]
struct Values {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl SnapshotHistogram {
    pub fn set(&self, sum: f64, count: u64, buckets: Vec<(f64, u64)>) {
        *crate::sync::lock(&self.values) = Values {
            sum,
            count,
            buckets,
        };
    }
}

impl TypedMetric for SnapshotHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let v = crate::sync::lock(&self.values);
        encoder.encode_histogram::<NoLabelSet>(v.sum, v.count, &v.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
