//! The id check of status lookups, per dialect: the shared rule, then
//! each dialect's [`Dialect::accepts_run_id`].

use flowgate_core::{Deadline, Provider as _, ProviderKind, SecretString};

use super::*;
use crate::{
    HttpClient, ProviderSettings,
    aitutor::AiTutorDialect,
    fetchhive::FetchHiveDialect,
    knouds::{Knouds, KnoudsDialect},
};

const KEY: &str = "knouds_live_7Hq2ZpX9vB4mN8rT1cW6yK3jD5fG0sLaQeU";

#[test]
fn run_ids_are_checked_per_dialect_over_the_shared_rule() {
    let shared_rule_refuses = [".", "..", "a/b", "-x", "a b", ""];
    // Knouds documents executionId as a UUID.
    for good in [
        "3f0c9d1e-0000-4000-8000-000000000000",
        "3F0C9D1E-AB12-4000-8000-00000000ABCD",
    ] {
        assert!(is_run_id::<KnoudsDialect>(good), "{good}");
    }
    for bad in [
        "exec-1",
        "3f0c9d1e000040008000000000000000",
        "3f0c9d1e-0000-4000-8000-00000000000",
        "3f0c9d1e-0000-4000-8000-0000000000000",
        "3f0c9d1e-0000-4000-8000-00000000000g",
        "3f0c9d1e_0000-4000-8000-000000000000",
    ]
    .into_iter()
    .chain(shared_rule_refuses)
    {
        assert!(!is_run_id::<KnoudsDialect>(bad), "{bad}");
    }
    // Fetch Hive: `req_…` request ids, integer run ids and the SDK's
    // unpublished `run_id` shape: the shared rule only.
    for good in ["req_019d52846ea37682b03522fd0695cc43", "12345", "run-7.a"] {
        assert!(is_run_id::<FetchHiveDialect>(good), "{good}");
    }
    // AI Tutor has no status endpoint (its async runs are the
    // gateway's): the shared rule, never used for a request.
    assert!(is_run_id::<AiTutorDialect>("run_1"));
    for bad in shared_rule_refuses {
        assert!(!is_run_id::<FetchHiveDialect>(bad), "{bad}");
        assert!(!is_run_id::<AiTutorDialect>(bad), "{bad}");
    }
}

#[tokio::test]
async fn a_knouds_status_lookup_of_a_non_uuid_is_not_found_without_a_request() {
    // Port 1 on loopback: a request would fail as UNAVAILABLE, not
    // NOT_FOUND.
    let mut settings = ProviderSettings::new("kn", ProviderKind::Knouds, SecretString::new(KEY));
    settings.base_url = "http://127.0.0.1:1".into();
    let provider = Knouds::new(settings, HttpClient::new().unwrap());
    let error = provider
        .run_status("exec-1", Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(error.reason, "EXECUTION_NOT_FOUND");
    let sent = provider
        .run_status("3f0c9d1e-0000-4000-8000-000000000000", Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(
        sent.class,
        flowgate_core::ErrorClass::Unavailable,
        "{sent:?}"
    );
}
