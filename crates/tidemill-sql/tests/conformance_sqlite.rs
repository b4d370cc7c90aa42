//! The tidemill conformance suite against Sqlite.

mod common;

use common::target::SqlTarget;
use tidemill_sql::Backend;

tidemill_testkit::conformance_tests!(SqlTarget::new(Backend::Sqlite));
