//! Orchestration tests against the stage mocks.
