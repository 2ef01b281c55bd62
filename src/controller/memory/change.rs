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

    /// [`Change::apply`] to a value kept boxed (a part most clients do not have, so that an
    /// empty one costs a pointer in every client's memory).
    pub(super) fn apply_boxed(self, field: &mut Option<Box<T>>) {
        match self {
            Change::Keep => {}
            Change::Clear => *field = None,
            Change::Set(value) => *field = Some(Box::new(value)),
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
