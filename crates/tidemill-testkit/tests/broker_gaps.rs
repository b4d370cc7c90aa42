//! A scenario declared a broker gap is skipped; every other one still runs.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill_testkit::{run_scenario, scenarios, Broker, BrokerGap, Features, TestTarget};

/// A broker that cannot even be connected to: any scenario that runs fails.
struct Unreachable;

#[async_trait]
impl TestTarget for Unreachable {
    fn features(&self) -> Features {
        Features {
            consumer_groups: true,
            broker_gaps: vec![BrokerGap::new(
                "publish_subscribe",
                "a broker that is never up",
            )],
            ..Features::default()
        }
    }

    async fn connect(&self) -> tidemill::Result<Arc<dyn Broker>> {
        Err(tidemill::Error::Config("no broker here".into()))
    }
}

#[test]
fn a_declared_gap_is_skipped() {
    run_scenario(|| Arc::new(Unreachable), scenarios::publish_subscribe);
}

#[test]
fn other_scenarios_still_run() {
    let failed = std::panic::catch_unwind(|| {
        run_scenario(|| Arc::new(Unreachable), scenarios::topics_are_isolated);
    });
    assert!(
        failed.is_err(),
        "a scenario outside the gaps ran and failed"
    );
}
