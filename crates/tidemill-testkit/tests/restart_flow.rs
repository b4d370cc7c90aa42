//! The flow of `broker_restart_loses_nothing` (publishing paused at a third, the restart, the
//! rest, the check) against the persistent in-process pub/sub, whose "restart" only pauses: no
//! broker is stopped here.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Target;
use tidemill_testkit::{run_scenario, scenarios, Features, RestartFn, TestTarget};

#[test]
fn restart_flow_completes() {
    let restart: RestartFn = Arc::new(|| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        })
    });
    let target = Target::persistent();
    let target = Target {
        features: Features {
            restart_broker: Some(restart),
            ..target.features.clone()
        },
        ..target
    };
    run_scenario(
        move || Arc::new(target) as Arc<dyn TestTarget>,
        scenarios::broker_restart_loses_nothing,
    );
}
