//! `sweep health`: the coordinator's gRPC health service
//! (`grpc.health.v1`), for container probes. Health needs no token; TLS is
//! verified as for every command (`--tls-ca`), which the kubelet's own
//! `grpc:` probe cannot do, hence this exec probe.

use std::time::Duration;

use anyhow::anyhow;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::commands::{channel, rpc};
use crate::Failure;

pub(crate) async fn command(service: &str, timeout: Duration, url: &str) -> Result<(), Failure> {
    let asked = async {
        let mut client = HealthClient::new(channel(url).await?);
        let resp = client.check(HealthCheckRequest { service: service.to_owned() }).await.map_err(rpc)?;
        Ok::<i32, anyhow::Error>(resp.into_inner().status)
    };
    let status = tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| anyhow!("no answer from {url} within {} s", timeout.as_secs_f64()))??;
    let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(anyhow!("the coordinator at {url} answers {} for {:?}", status.as_str_name(), service).into())
    }
}
