//! `--json`: the report structs serialized as-is (schema ids in
//! [`RUN_SCHEMA`](super::RUN_SCHEMA) / [`COMPARE_SCHEMA`](super::COMPARE_SCHEMA)).

use super::{CompareReport, RunReport};

/// Pretty JSON of one run.
pub fn run_json(r: &RunReport) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(r)
}

/// Pretty JSON of a compare.
pub fn compare_json(c: &CompareReport) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(c)
}
