//! Runs that cannot make progress, shared schema fetches, and shutdown.
