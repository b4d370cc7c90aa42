//! The tidemill conformance suite against MariaDB (MySQL), including a restart of the server (`broker_restart_loses_nothing`).

mod common;

use common::target::SqlTarget;
use tidemill_sql::Backend;

tidemill_testkit::conformance_tests!(SqlTarget::new(Backend::MySql));
