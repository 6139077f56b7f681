//! Hostile callers at the gRPC edge: panics, load, oversized echoes,
//! malformed messages, configuration ranges.
