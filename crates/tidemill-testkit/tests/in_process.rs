//! The conformance suite against tidemill's in-process pub/sub, in three configurations: the
//! default one (one delivery in flight: ordered, exactly once, with groups), a persistent one
//! with 64 deliveries in flight, and the default one used without consumer groups.

mod common;

mod default_config {
    tidemill_testkit::conformance_tests!(crate::common::Target::default_config());
}

mod persistent {
    tidemill_testkit::conformance_tests!(crate::common::Target::persistent());
}

mod without_groups {
    tidemill_testkit::conformance_tests!(crate::common::Target::without_groups());
}
