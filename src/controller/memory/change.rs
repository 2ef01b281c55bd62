//! A change to one remembered value: kept, cleared or set.

/// A change to one remembered value.
#[derive(Clone, Debug, Default)]
pub enum Change<T> {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Set it to nothing.
    Clear,
    /// Set it.
    Set(T),
}

impl<T> Change<T> {
    pub(super) fn apply(self, field: &mut Option<T>) {
        match self {
            Change::Keep => {}
            Change::Clear => *field = None,
            Change::Set(value) => *field = Some(value),
        }
    }

    /// `self`, unless it keeps: then `other`.
    pub fn or(self, other: Change<T>) -> Change<T> {
        match self {
            Change::Keep => other,
            decided => decided,
        }
    }
}
