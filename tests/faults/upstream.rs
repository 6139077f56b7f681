//! A vendor's bytes: absurd numbers, loose number shapes, over-deep output.
