//! The bad fields of one request, bounded: a request may hold any number of
//! bad fields (60,000 unknown inputs fit in under 1 MB), but an error lists
//! at most [`MAX_LISTED_VIOLATIONS`] of them and only counts the rest, so
//! neither the work of describing them nor the answer grows with the
//! request.

use crate::FieldViolation;

/// Most field violations one error lists; the rest are counted.
pub const MAX_LISTED_VIOLATIONS: usize = 20;

/// Field violations as they are found: the first
/// [`MAX_LISTED_VIOLATIONS`] kept, later ones counted without being built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    unlisted: usize,
}

impl Violations {
    /// No violations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation; `make` runs only while the list has room.
    pub fn push_with(&mut self, make: impl FnOnce() -> FieldViolation) {
        if self.listed.len() < MAX_LISTED_VIOLATIONS {
            self.listed.push(make());
        } else {
            self.unlisted = self.unlisted.saturating_add(1);
        }
    }

    /// Records a built violation.
    pub fn push(&mut self, violation: FieldViolation) {
        self.push_with(|| violation);
    }

    /// Records every violation of `other`, listed ones first.
    pub fn append(&mut self, other: Violations) {
        for violation in other.listed {
            self.push(violation);
        }
        self.unlisted = self.unlisted.saturating_add(other.unlisted);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.unlisted == 0
    }

    /// How many violations were recorded, listed or not.
    pub fn len(&self) -> usize {
        self.listed.len().saturating_add(self.unlisted)
    }

    /// The listed violations, in the order found.
    pub fn listed(&self) -> &[FieldViolation] {
        &self.listed
    }

    /// How many violations were counted but not listed.
    pub fn unlisted(&self) -> usize {
        self.unlisted
    }

    /// The listed violations and the count of the others.
    pub fn into_parts(self) -> (Vec<FieldViolation>, usize) {
        (self.listed, self.unlisted)
    }
}

impl Extend<FieldViolation> for Violations {
    fn extend<I: IntoIterator<Item = FieldViolation>>(&mut self, violations: I) {
        for violation in violations {
            self.push(violation);
        }
    }
}

impl From<Vec<FieldViolation>> for Violations {
    fn from(violations: Vec<FieldViolation>) -> Self {
        let mut bounded = Self::new();
        bounded.extend(violations);
        bounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_violations_are_listed_and_the_rest_counted_unbuilt() {
        let mut violations = Violations::new();
        let mut built = 0;
        for index in 0..1000 {
            violations.push_with(|| {
                built += 1;
                FieldViolation::new(format!("inputs.f{index}"), "unknown input")
            });
        }
        assert_eq!(built, MAX_LISTED_VIOLATIONS);
        assert_eq!(violations.listed().len(), MAX_LISTED_VIOLATIONS);
        assert_eq!(violations.listed()[0].field, "inputs.f0");
        assert_eq!(violations.unlisted(), 1000 - MAX_LISTED_VIOLATIONS);
        assert_eq!(violations.len(), 1000);

        let mut joined = Violations::from(vec![FieldViolation::new("target", "required")]);
        joined.append(violations);
        assert_eq!(joined.len(), 1001);
        assert_eq!(joined.listed()[0].field, "target");
        assert_eq!(joined.listed().len(), MAX_LISTED_VIOLATIONS);
    }
}
