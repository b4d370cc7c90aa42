//! The suite fails pub/subs that break the contract: each test runs one scenario against the
//! in-process pub/sub with one fault injected, and expects the failure the scenario must report.

mod common;

use std::sync::Arc;

use common::{Fault, Target};
use tidemill::in_process::InProcessConfig;
use tidemill_testkit::{helpers, run_scenario, scenarios, TestTarget};

fn target(t: Target) -> impl FnOnce() -> Arc<dyn TestTarget> {
    // Short deadlines: these scenarios are expected to fail, and should do so quickly.
    helpers::set_deadline_scale(0.1);
    move || Arc::new(t)
}

#[test]
#[should_panic(expected = "messages acked; never acked: #5 (")]
fn lost_messages_are_named() {
    let t = Target::default_config().with_fault(Fault::Loses);
    run_scenario(target(t), scenarios::publish_subscribe);
}

#[test]
#[should_panic(expected = "duplicated although exactly-once is claimed: #7")]
fn duplicates_fail_an_exactly_once_claim() {
    let t = Target::default_config().with_fault(Fault::Duplicates);
    run_scenario(target(t), scenarios::publish_subscribe);
}

#[test]
#[should_panic(expected = "foreign messages arrived")]
fn messages_leaking_between_topics_are_caught() {
    let t = Target::default_config().with_fault(Fault::Leaks);
    run_scenario(target(t), scenarios::topics_are_isolated);
}

#[test]
#[should_panic(expected = "messages acked; never acked: #3 (")]
fn nacks_that_do_not_come_back_are_caught() {
    let t = Target::default_config().with_fault(Fault::NackIsAck);
    run_scenario(target(t), scenarios::settlement_ends_a_message_lifetime);
}

#[test]
#[should_panic(expected = "acked messages were delivered again")]
fn redelivered_acks_are_caught() {
    let t = Target::persistent().with_fault(Fault::RedeliversAcked);
    run_scenario(target(t), scenarios::every_delivery_settled_once);
}

#[test]
#[should_panic(expected = "arrived while #0 was held unacked")]
fn a_false_order_claim_is_caught() {
    let t = Target::default_config().with_config(InProcessConfig::default().max_in_flight(64));
    run_scenario(target(t), scenarios::no_next_message_while_one_is_unacked);
}

#[test]
#[should_panic(expected = "closing a publisher hung")]
fn a_hanging_close_is_named() {
    let t = Target::default_config().with_fault(Fault::CloseHangs);
    run_scenario(target(t), scenarios::publish_subscribe);
}
