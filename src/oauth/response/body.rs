//! A zero-copy view of a response body: the top-level fields that reading needs.
//!
//! A body of up to 1 MiB costs little beyond itself: it is never parsed into a tree. Top-level
//! values that are not asked for are only checked for syntax (`IgnoredAny`); the ones asked for
//! stay slices of the body (`RawValue`) until read, nested values are found by walking those
//! slices, and strings without escapes are borrowed, not copied. Of the names, only the twelve
//! smallest are kept (for messages), so a body of many tiny fields costs no more than one big
//! one.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// How many top-level names are kept for messages (the smallest, in order).
const NAMES_KEPT: usize = 12;

/// Longest value parsed into a [`Value`] (numbers, short strings: `expires_in` and the like).
const SMALL_VALUE: usize = 256;

/// The parsed body: the wanted top-level fields and the smallest names.
pub(super) struct Body<'b> {
    fields: Vec<(String, Stored<'b>)>,
    names: BTreeSet<Cow<'b, str>>,
}

/// A top-level value as kept: a slice of a JSON body, or a decoded form value.
enum Stored<'b> {
    Json(&'b RawValue),
    Text(Cow<'b, str>),
}

/// A value in the body, borrowed from it (or from the [`Body`] for decoded form values).
#[derive(Clone, Copy)]
pub(super) enum Field<'x> {
    Json(&'x RawValue),
    Text(&'x str),
}

impl<'b> Body<'b> {
    /// Parses a body as a JSON object, or else as a form-encoded set of fields, keeping the
    /// top-level fields named in `wanted` (the last of duplicates, as JSON parsers do).
    pub(super) fn parse(body: &'b [u8], wanted: &[&str]) -> Option<Body<'b>> {
        let text = std::str::from_utf8(body).ok()?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(text);
            let body = de.deserialize_map(TopLevel { wanted }).ok()?;
            de.end().ok()?;
            return Some(body);
        }
        parse_form(text, wanted)
    }

    fn empty() -> Self {
        Body {
            fields: Vec::new(),
            names: BTreeSet::new(),
        }
    }

    fn set(&mut self, name: &str, value: Stored<'b>) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }

    fn note_name(&mut self, name: Cow<'b, str>) {
        self.names.insert(name);
        if self.names.len() > NAMES_KEPT {
            self.names.pop_last();
        }
    }

    /// A top-level field (it must have been wanted).
    pub(super) fn get(&self, name: &str) -> Option<Field<'_>> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| match value {
                Stored::Json(raw) => Field::Json(raw),
                Stored::Text(text) => Field::Text(text),
            })
    }

    /// Finds a value by top-level name, else by dotted path (numeric segments index arrays).
    /// The name and the path's first segment must have been wanted.
    pub(super) fn lookup(&self, path: &str) -> Option<Field<'_>> {
        if let Some(field) = self.get(path) {
            return Some(field);
        }
        let mut segments = path.split('.');
        let mut current = self.get(segments.next()?)?;
        for segment in segments {
            current = current.child(segment)?;
        }
        Some(current)
    }

    /// The smallest top-level names, in order (at most twelve).
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| n.as_ref())
    }
}

impl<'x> Field<'x> {
    /// Whether this is JSON `null`.
    pub(super) fn is_null(self) -> bool {
        matches!(self, Field::Json(raw) if raw.get() == "null")
    }

    /// The value as a string, if it is one (borrowed unless it had escapes).
    pub(super) fn str(self) -> Option<Cow<'x, str>> {
        match self {
            Field::Json(raw) => serde_json::from_str::<Text<'x>>(raw.get())
                .ok()
                .map(|t| t.0),
            Field::Text(text) => Some(Cow::Borrowed(text)),
        }
    }

    /// The value as a [`Value`], if it is small (a number or a short string).
    pub(super) fn small_value(self) -> Option<Value> {
        match self {
            Field::Json(raw) if raw.get().len() <= SMALL_VALUE => {
                serde_json::from_str(raw.get()).ok()
            }
            Field::Text(text) if text.len() <= SMALL_VALUE => Some(Value::String(text.to_owned())),
            _ => None,
        }
    }

    /// The value as written: JSON text, or the decoded form value.
    pub(super) fn as_written(self) -> &'x str {
        match self {
            Field::Json(raw) => raw.get(),
            Field::Text(text) => text,
        }
    }

    /// A member of an object by name (the last of duplicates), or an element of an array by
    /// index.
    pub(super) fn child(self, segment: &str) -> Option<Field<'x>> {
        let Field::Json(raw) = self else {
            return None;
        };
        let text = raw.get();
        if !text.starts_with(['{', '[']) {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_any(Child(segment))
            .ok()
            .flatten()
            .map(Field::Json)
    }

    /// Calls `f` with each element of an array until it returns false. False when this is not
    /// an array.
    pub(super) fn each_element(self, f: impl FnMut(Field<'x>) -> bool) -> bool {
        let Field::Json(raw) = self else {
            return false;
        };
        if !raw.get().starts_with('[') {
            return false;
        }
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de.deserialize_seq(Elements(f)).is_ok()
    }

    /// Whether this is a JSON object.
    pub(super) fn is_object(self) -> bool {
        matches!(self, Field::Json(raw) if raw.get().starts_with('{'))
    }
}

fn parse_form<'b>(text: &'b str, wanted: &[&str]) -> Option<Body<'b>> {
    if text.is_empty() || !text.contains('=') {
        return None;
    }
    for pair in text.split('&') {
        let (key, _) = pair.split_once('=')?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.%+".contains(&b));
        if !key_ok {
            return None;
        }
    }
    let mut body = Body::empty();
    for (key, value) in form_urlencoded::parse(text.as_bytes()) {
        if wanted.contains(&key.as_ref()) {
            body.set(&key, Stored::Text(value));
        }
        body.note_name(key);
    }
    Some(body)
}

// === serde visitors ===

/// A string, borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

/// The top-level object: wanted values kept as slices, the rest only checked.
struct TopLevel<'w> {
    wanted: &'w [&'w str],
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = Body::empty();
        while let Some(Text(name)) = map.next_key()? {
            if self.wanted.contains(&name.as_ref()) {
                let raw: &'de RawValue = map.next_value()?;
                body.set(&name, Stored::Json(raw));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            body.note_name(name);
        }
        Ok(body)
    }
}

/// One member of an object or element of an array.
struct Child<'s>(&'s str);

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Text(name)) = map.next_key()? {
            if name == self.0 {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.0.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0usize;
        loop {
            if Some(i) == index {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => found = Some(raw),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// Each element of an array, to a callback.
struct Elements<F>(F);

impl<'de, F: FnMut(Field<'de>) -> bool> Visitor<'de> for Elements<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if !(self.0)(Field::Json(raw)) {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
        }
        Ok(())
    }
}
