use super::*;

// ---------------------------------------------------------------------------
// Telemetry: one trace per request across the mesh, no identity in spans or
// logs.

/// What an OTLP receiver got: each span with its service.
#[derive(Clone, Default)]
pub(crate) struct Collector {
    pub(crate) spans: std::sync::Arc<std::sync::Mutex<Vec<SeenSpan>>>,
    pub(crate) metrics: std::sync::Arc<std::sync::Mutex<Vec<SeenMetric>>>,
}

#[derive(Clone, Debug)]
pub(crate) struct SeenSpan {
    pub(crate) service: String,
    pub(crate) trace_id: String,
    pub(crate) name: String,
    /// The OTLP span kind (2 server, 3 client).
    pub(crate) kind: i32,
    pub(crate) attributes: BTreeMap<String, String>,
    /// Everything the span carries (name, attributes, events), for the
    /// check that no identity value is among it.
    pub(crate) text: String,
}

#[derive(Clone, Debug)]
pub(crate) struct SeenMetric {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) attributes: Vec<BTreeMap<String, String>>,
}

pub(crate) fn any_value(v: &Option<otlp::common::v1::AnyValue>) -> String {
    use otlp::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub(crate) fn attributes(kvs: &[otlp::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(&kv.value)))
        .collect()
}

pub(crate) fn service_of(r: Option<&otlp::resource::v1::Resource>) -> String {
    r.map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl otlp::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<otlp::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<otlp::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let mut seen = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = service_of(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    seen.push(SeenSpan {
                        service: service.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        attributes: attributes(&s.attributes),
                        text: format!("{s:?}"),
                    });
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl otlp::collector::metrics::v1::metrics_service_server::MetricsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<otlp::collector::metrics::v1::ExportMetricsServiceRequest>,
    ) -> Result<
        tonic::Response<otlp::collector::metrics::v1::ExportMetricsServiceResponse>,
        tonic::Status,
    > {
        use otlp::metrics::v1::metric::Data;
        let mut seen = self.metrics.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            let service = service_of(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let attrs = match &m.data {
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        _ => Vec::new(),
                    };
                    seen.push(SeenMetric {
                        service: service.clone(),
                        name: m.name.clone(),
                        attributes: attrs,
                    });
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free port; returns its endpoint.
    pub(crate) async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    otlp::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                        me.clone(),
                    ),
                )
                .add_service(
                    otlp::collector::metrics::v1::metrics_service_server::MetricsServiceServer::new(
                        me,
                    ),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }
}
