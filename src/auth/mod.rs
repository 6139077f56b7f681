//! Who is calling.

pub mod peer;
