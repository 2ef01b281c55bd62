//! Keeping secrets and tokens out of everything the operator prints: the [`Scrubber`] removes a
//! credential or token from outside text (an endpoint's error description, a body excerpt)
//! before it enters a message, in every form an endpoint that echoes the request may have
//! written it. Messages become conditions and events, which anyone with the default `view` role
//! reads: they are public. (The values themselves travel as [`super::Sensitive`].) The scrubber
//! of an exchange's credentials is built where the Basic header is
//! (`Scrubber::for_credentials`, in [`crate::oauth::request`]).
//!
//! ## What the scrubber looks for
//!
//! The *needles* are the client secret (as sent and trimmed), `base64(id:secret)` of both Basic
//! encodings (padded and not), the base64 of the secret alone (standard and URL-safe, padded and
//! not), a private key (its PEM text and the base64 of its DER), a client assertion (the JWT
//! built for the request, a ServiceAccount token) and its signature, the access token once one
//! is found in a body, and each of those as the message pipeline would normalise it
//! ([`normalise`]: control characters, tags, whitespace).
//!
//! A needle matches wherever the text spells it with each character either literally or in one
//! of the encodings below, nested up to two deep (a JSON-escaped body echoed into an HTML page:
//! `\&quot;`), each character on its own (so every mix of the encoders' choices is covered):
//!
//! * form-urlencoding and percent-encoding: `%XX` per UTF-8 byte, upper- or lower-case hex,
//!   `+` or `%20` for a space, and any set of characters left unencoded;
//! * JSON: `\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t`, `\uXXXX` (either case; surrogate pairs);
//! * HTML: `&amp; &lt; &gt; &quot; &apos; &nbsp;` and the HTML5 names of ASCII punctuation
//!   (`&plus; &sol; &equals;` ...), numeric references `&#N;` / `&#xH;` with either case and
//!   any number of leading zeros;
//! * JavaScript / Python: `\xHH` (either case).
//!
//! Letters and digits are only ever matched literally: no encoder escapes them.
//!
//! Matching is bounded: a text that would take more than [`BUDGET`] steps to scrub is not
//! scrubbed but refused ([`Scrubber::scrub`] returns `None`), and its caller shows none of it.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::sensitive::REDACTED;

/// A client secret (or access token) shorter than this, in characters and without surrounding
/// whitespace, cannot be scrubbed reliably: scrubbing it would shred ordinary words, and a cut
/// could leave most of it. With one, no excerpt of an endpoint's body enters a message at all.
pub const MIN_SCRUBBABLE_LEN: usize = 8;

/// A text that ends with at least this many bytes of a needle's encoded form is taken to hold
/// part of it (see [`Scrubber::partial_at_end`]).
pub const MIN_PARTIAL: usize = 4;

/// Matching steps allowed for one [`Scrubber::scrub`] or [`Scrubber::partial_at_end`] call. An
/// ordinary 4 KiB text takes well under 1% of it; only texts built to be slow to match (long
/// runs of one character against a needle of the same character) run out.
pub const BUDGET: usize = 1 << 21;

/// How deep encodings may nest (JSON inside HTML, say).
const DEPTH: u8 = 2;

// === impl Scrubber ===

/// Removes credentials and tokens, in every form, from outside text. See the module docs.
///
/// Built from the credentials of an exchange (`Scrubber::for_credentials`) and extended with
/// the access token found in a body ([`Scrubber::with_token`]). Its `Debug` shows only how many
/// needles it holds.
#[derive(Clone)]
pub struct Scrubber<'a> {
    /// Longest first, no duplicates, none empty.
    needles: Vec<Cow<'a, str>>,
    /// Whether every value is long enough for body excerpts to be shown at all.
    excerpts: bool,
}

impl fmt::Debug for Scrubber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles.len())
            .field("excerpts", &self.excerpts)
            .finish()
    }
}

impl Scrubber<'static> {
    /// A scrubber with nothing to remove (text that no credential has been near).
    pub fn none() -> Self {
        Scrubber {
            needles: Vec::new(),
            excerpts: true,
        }
    }

    /// A scrubber for a client secret and the values a request carries it in (`encoded`: the
    /// Basic header values built from it), and the base64 of the secret alone; excerpts only
    /// when the secret is at least [`MIN_SCRUBBABLE_LEN`] long.
    pub fn for_secret(secret: &str, encoded: impl IntoIterator<Item = String>) -> Self {
        let mut scrubber = Scrubber::none();
        scrubber.excerpts = long_enough(secret);
        scrubber.add_value(Cow::Owned(secret.to_owned()));
        for value in encoded {
            scrubber.push(Cow::Owned(value));
        }
        scrubber.add_base64(secret);
        scrubber.order();
        scrubber
    }

    /// A scrubber for secret values in every form (the forms of a private key: its PEM text,
    /// the base64 of its DER).
    pub fn for_values(values: impl IntoIterator<Item = String>) -> Self {
        let mut scrubber = Scrubber::none();
        for value in values {
            scrubber.add_value(Cow::Owned(value));
        }
        scrubber.order();
        scrubber
    }

    /// This scrubber extended with the subject token of a token exchange: as a value in every
    /// encoding and, when it is a JWT, its signature alone too. A short one turns excerpts off.
    pub fn with_subject_token(mut self, token: &str) -> Self {
        if token.is_empty() {
            return self;
        }
        self.excerpts &= long_enough(token);
        self.add_jwt(Cow::Owned(token.to_owned()));
        self.add_base64(token);
        self.order();
        self
    }

    /// A scrubber for a JWT (a ready client assertion, a ServiceAccount token) and its
    /// signature.
    pub fn for_jwt(jwt: &str) -> Self {
        let mut scrubber = Scrubber::none();
        scrubber.add_jwt(Cow::Owned(jwt.to_owned()));
        scrubber.order();
        scrubber
    }
}

impl<'a> Scrubber<'a> {
    /// This scrubber extended with an access token (borrowed: a token read from a body is not
    /// copied). A token shorter than [`MIN_SCRUBBABLE_LEN`] turns excerpts off, as a short
    /// client secret does.
    pub fn with_token<'b>(&self, token: &'b str) -> Scrubber<'b>
    where
        'a: 'b,
    {
        let mut scrubber: Scrubber<'b> = self.clone();
        if token.is_empty() {
            return scrubber;
        }
        scrubber.excerpts &= long_enough(token);
        scrubber.add_value(Cow::Borrowed(token));
        scrubber.order();
        scrubber
    }

    /// This scrubber extended with a client assertion (the JWT built for the request): the
    /// whole JWT and its signature.
    pub fn with_assertion<'b>(&self, jwt: &'b str) -> Scrubber<'b>
    where
        'a: 'b,
    {
        let mut scrubber: Scrubber<'b> = self.clone();
        scrubber.add_jwt(Cow::Borrowed(jwt));
        scrubber.order();
        scrubber
    }

    /// Whether `text` holds, in any form this scrubber knows, a value of at least
    /// [`MIN_SCRUBBABLE_LEN`] characters (a value an answer may not carry outside its token: a
    /// `token_type` or `scope` that echoes the client secret or the subject token).
    pub fn holds_secret(&self, text: &str) -> bool {
        self.needles
            .iter()
            .any(|needle| needle.chars().count() >= MIN_SCRUBBABLE_LEN && text.contains(&**needle))
    }

    /// Whether excerpts of an endpoint's body may enter messages at all: false when the client
    /// secret or the access token is shorter than [`MIN_SCRUBBABLE_LEN`].
    pub fn allows_excerpts(&self) -> bool {
        self.excerpts
    }

    /// How many needles (values and their normalised forms) are looked for.
    pub fn needle_count(&self) -> usize {
        self.needles.len()
    }

    /// `text` with every occurrence of every needle, in any form, replaced by `[redacted]`,
    /// longest needles first. `None` when matching would take more than [`BUDGET`] steps: the
    /// caller must then show none of the text.
    pub fn scrub(&self, text: &str) -> Option<String> {
        let mut budget = Budget(BUDGET);
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if let Some(replaced) = replace_all(&out, needle, &mut budget).ok()? {
                out = Cow::Owned(replaced);
            }
        }
        Some(out.into_owned())
    }

    /// Whether `text` ends with the start of a needle in any form: at least [`MIN_PARTIAL`]
    /// bytes of it (or the whole needle). A text that a cut leaves like this would show a
    /// prefix of a secret, so it is dropped. Also true when checking would take more than
    /// [`BUDGET`] steps.
    pub fn partial_at_end(&self, text: &str) -> bool {
        let mut budget = Budget(BUDGET);
        let bytes = text.as_bytes();
        for needle in &self.needles {
            for start in (0..bytes.len()).filter(|&i| text.is_char_boundary(i)) {
                if !may_start(bytes[start], first_char(needle)) {
                    continue;
                }
                match run(bytes, start, needle, &mut budget) {
                    Err(Exhausted) => return true,
                    Ok(outcome) => {
                        let long = bytes.len() - start >= MIN_PARTIAL;
                        if (outcome.reached_end && long) || outcome.end == Some(bytes.len()) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// Adds a JWT and its signature (the part that makes it usable; header and claims are not
    /// secret on their own).
    fn add_jwt(&mut self, jwt: Cow<'a, str>) {
        if jwt.is_empty() {
            return;
        }
        let signature = match &jwt {
            Cow::Borrowed(j) => j.rsplit('.').next().map(Cow::Borrowed),
            Cow::Owned(j) => j.rsplit('.').next().map(|s| Cow::Owned(s.to_owned())),
        };
        if let Some(signature) = signature.filter(|s| s.len() >= MIN_SCRUBBABLE_LEN) {
            self.push(signature);
        }
        self.add_value(jwt);
    }

    /// Adds the base64 of a value, in the standard and URL-safe alphabets, padded and not.
    fn add_base64(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            self.push(Cow::Owned(engine.encode(value)));
        }
    }

    /// Adds a value, its trimmed form and its normalised forms.
    fn add_value(&mut self, value: Cow<'a, str>) {
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            let trimmed = match &value {
                Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                Cow::Owned(_) => Cow::Owned(trimmed.to_owned()),
            };
            self.push(trimmed);
        }
        for strip_tags in [false, true] {
            if is_normal(&value, strip_tags) {
                continue;
            }
            let normal = normalise(&value, strip_tags);
            // A short remnant (a secret that is mostly a tag) would shred ordinary words.
            if normal.len() >= MIN_PARTIAL && normal != value.as_ref() {
                self.push(Cow::Owned(normal));
            }
        }
        self.push(value);
    }

    fn push(&mut self, needle: Cow<'a, str>) {
        if !needle.is_empty() {
            self.needles.push(needle);
        }
    }

    fn order(&mut self) {
        self.needles
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.needles.dedup();
    }
}

fn long_enough(value: &str) -> bool {
    value.trim().chars().count() >= MIN_SCRUBBABLE_LEN
}

/// Whether [`normalise`] would leave `text` as it is (checked without copying it: a token may
/// be large).
fn is_normal(text: &str, strip_tags: bool) -> bool {
    let mut previous_space = true;
    for c in text.chars() {
        if c.is_control() || (strip_tags && c == '<') || (c.is_whitespace() && c != ' ') {
            return false;
        }
        let space = c == ' ';
        if space && previous_space {
            return false;
        }
        previous_space = space;
    }
    !previous_space || text.is_empty()
}

/// The cleaning step of the message pipeline: control characters become spaces, tags
/// (`<...>`, when `strip_tags`) become a space, runs of whitespace become one space, and
/// surrounding whitespace goes.
pub fn normalise(text: &str, strip_tags: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if strip_tags {
            match c {
                '<' => {
                    in_tag = true;
                    continue;
                }
                '>' if in_tag => {
                    in_tag = false;
                    space = true;
                    continue;
                }
                _ if in_tag => continue,
                _ => {}
            }
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

// === matching ===

/// The step budget ran out.
#[derive(Debug)]
struct Exhausted;

struct Budget(usize);

impl Budget {
    fn spend(&mut self) -> Result<(), Exhausted> {
        self.0 = self.0.checked_sub(1).ok_or(Exhausted)?;
        Ok(())
    }
}

/// A small set of text positions (where the ways of spelling a needle so far end).
struct Ends {
    items: [usize; 32],
    len: usize,
}

impl Ends {
    fn new() -> Self {
        Ends {
            items: [0; 32],
            len: 0,
        }
    }

    fn one(at: usize) -> Self {
        let mut ends = Ends::new();
        ends.items[0] = at;
        ends.len = 1;
        ends
    }

    fn as_slice(&self) -> &[usize] {
        &self.items[..self.len]
    }

    fn insert(&mut self, at: usize) -> Result<(), Exhausted> {
        if self.as_slice().contains(&at) {
            return Ok(());
        }
        // More distinct spellings than this do not occur in real text: treat as exhausted.
        let slot = self.items.get_mut(self.len).ok_or(Exhausted)?;
        *slot = at;
        self.len += 1;
        Ok(())
    }
}

/// The result of spelling a needle from one start position.
struct Outcome {
    /// The furthest end of a complete spelling.
    end: Option<usize>,
    /// Whether some spelling ran into the end of the text before the needle was complete.
    reached_end: bool,
}

fn first_char(needle: &str) -> char {
    needle.chars().next().unwrap_or('\0')
}

/// Whether a spelling of `c` can start with byte `b` (a cheap filter before matching).
fn may_start(b: u8, c: char) -> bool {
    let mut buf = [0u8; 4];
    b == c.encode_utf8(&mut buf).as_bytes()[0]
        || (!c.is_ascii_alphanumeric() && matches!(b, b'%' | b'\\' | b'&' | b'+'))
}

/// Replaces every spelling of `needle` in `text`; `None` when there is none.
fn replace_all(text: &str, needle: &str, budget: &mut Budget) -> Result<Option<String>, Exhausted> {
    // Every spelling is at least as long as the needle itself.
    if needle.len() > text.len() {
        return Ok(None);
    }
    let bytes = text.as_bytes();
    let first = first_char(needle);
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if may_start(bytes[at], first) {
            if let Some(end) = run(bytes, at, needle, budget)?.end {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..at]);
                out.push_str(REDACTED);
                copied = end;
                at = end;
                continue;
            }
        }
        at += 1;
        while at < bytes.len() && !text.is_char_boundary(at) {
            at += 1;
        }
    }
    Ok(out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    }))
}

/// Spells `needle` from `start`: each character literally or encoded.
fn run(text: &[u8], start: usize, needle: &str, budget: &mut Budget) -> Result<Outcome, Exhausted> {
    let mut reached_end = false;
    let mut current = Ends::one(start);
    for c in needle.chars() {
        let mut next = Ends::new();
        for &at in current.as_slice() {
            unit(text, at, c, DEPTH, &mut next, &mut reached_end, budget)?;
        }
        if next.len == 0 {
            return Ok(Outcome {
                end: None,
                reached_end,
            });
        }
        current = next;
    }
    Ok(Outcome {
        end: current.as_slice().iter().copied().max(),
        reached_end,
    })
}

/// Adds to `next` the end of every spelling of `c` at `at`, with encodings nested up to
/// `depth` deep.
fn unit(
    text: &[u8],
    at: usize,
    c: char,
    depth: u8,
    next: &mut Ends,
    reached_end: &mut bool,
    budget: &mut Budget,
) -> Result<(), Exhausted> {
    budget.spend()?;
    let rest = &text[at..];
    if rest.is_empty() {
        *reached_end = true;
        return Ok(());
    }
    let mut buf = [0u8; 4];
    literal(
        rest,
        at,
        c.encode_utf8(&mut buf).as_bytes(),
        next,
        reached_end,
    )?;
    if depth == 0 || !matches!(rest[0], b'%' | b'\\' | b'&' | b'+') {
        return Ok(());
    }
    if rest.starts_with(b"&#") {
        match numeric_reference(rest) {
            Reference::Complete(code, len) if code == u32::from(c) => next.insert(at + len)?,
            Reference::Partial => *reached_end = true,
            _ => {}
        }
    }
    with_escapes(c, |escape| {
        if depth == 1 {
            literal(rest, at, escape.as_bytes(), next, reached_end)
        } else {
            sequence(text, at, escape, depth - 1, next, reached_end, budget)
        }
    })
}

fn literal(
    rest: &[u8],
    at: usize,
    spelling: &[u8],
    next: &mut Ends,
    reached_end: &mut bool,
) -> Result<(), Exhausted> {
    if rest.starts_with(spelling) {
        next.insert(at + spelling.len())?;
    } else if spelling.starts_with(rest) {
        *reached_end = true;
    }
    Ok(())
}

/// Adds the ends of spellings of the string `s` (an escape) at `at`, each of its characters
/// spelled at `depth`.
fn sequence(
    text: &[u8],
    at: usize,
    s: &str,
    depth: u8,
    next: &mut Ends,
    reached_end: &mut bool,
    budget: &mut Budget,
) -> Result<(), Exhausted> {
    let mut current = Ends::one(at);
    for c in s.chars() {
        let mut inner = Ends::new();
        for &p in current.as_slice() {
            unit(text, p, c, depth, &mut inner, reached_end, budget)?;
        }
        if inner.len == 0 {
            return Ok(());
        }
        current = inner;
    }
    for &end in current.as_slice() {
        next.insert(end)?;
    }
    Ok(())
}

/// An HTML numeric character reference at the start of a text.
enum Reference {
    /// `&#N;` or `&#xH;` (either case of `x` and of the digits, any number of leading zeros):
    /// the code point and the length.
    Complete(u32, usize),
    /// The text ends inside what could still become one.
    Partial,
    /// Not one.
    None,
}

/// Reads `&#[xX]?digits;` (up to 16 digits) at the start of `text`.
fn numeric_reference(text: &[u8]) -> Reference {
    let hex = matches!(text.get(2), Some(b'x' | b'X'));
    let start = if hex { 3 } else { 2 };
    let radix = if hex { 16 } else { 10 };
    let mut code: u32 = 0;
    let mut digits = 0;
    for (i, &b) in text.iter().enumerate().skip(start) {
        if b == b';' && digits > 0 {
            return Reference::Complete(code, i + 1);
        }
        let Some(d) = char::from(b).to_digit(radix) else {
            return Reference::None;
        };
        digits += 1;
        if digits > 16 {
            return Reference::None;
        }
        code = code.saturating_mul(radix).saturating_add(d);
    }
    Reference::Partial
}

/// Calls `f` with each escaped spelling of `c` (never the literal one).
fn with_escapes(
    c: char,
    mut f: impl FnMut(&str) -> Result<(), Exhausted>,
) -> Result<(), Exhausted> {
    static ASCII: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    if c.is_ascii() {
        let table = ASCII.get_or_init(|| (0u8..128).map(|b| escapes(char::from(b))).collect());
        for escape in &table[c as usize] {
            f(escape)?;
        }
        Ok(())
    } else {
        escapes(c).iter().try_for_each(|escape| f(escape))
    }
}

/// The escaped spellings of `c` that encoders produce: percent, JSON and HTML.
fn escapes(c: char) -> Vec<String> {
    if c.is_ascii_alphanumeric() {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    let mut buf = [0u8; 4];
    let bytes = c.encode_utf8(&mut buf).as_bytes();
    out.push(bytes.iter().map(|b| format!("%{b:02X}")).collect());
    out.push(bytes.iter().map(|b| format!("%{b:02x}")).collect());
    if c == ' ' {
        out.push("+".into());
    }
    let short = match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '/' => Some("\\/"),
        '\u{8}' => Some("\\b"),
        '\u{c}' => Some("\\f"),
        '\n' => Some("\\n"),
        '\r' => Some("\\r"),
        '\t' => Some("\\t"),
        _ => None,
    };
    out.extend(short.map(str::to_owned));
    let mut units = [0u16; 2];
    let units = c.encode_utf16(&mut units);
    out.push(units.iter().map(|u| format!("\\u{u:04x}")).collect());
    out.push(units.iter().map(|u| format!("\\u{u:04X}")).collect());
    out.extend(html_names(c).iter().map(|n| (*n).to_owned()));
    if c.is_ascii() {
        // JavaScript's and Python's \xHH.
        out.push(format!("\\x{:02x}", u32::from(c)));
        out.push(format!("\\x{:02X}", u32::from(c)));
    }
    let n = u32::from(c);
    out.push(format!("&#{n};"));
    out.push(format!("&#{n:03};"));
    out.push(format!("&#x{n:x};"));
    out.push(format!("&#x{n:X};"));
    out.push(format!("&#x{n:02x};"));
    out.push(format!("&#x{n:02X};"));
    out.sort();
    out.dedup();
    out
}

/// HTML's named references for `c` (HTML 4 and the HTML5 names of ASCII punctuation).
fn html_names(c: char) -> &'static [&'static str] {
    match c {
        '&' => &["&amp;", "&AMP;"],
        '<' => &["&lt;", "&LT;"],
        '>' => &["&gt;", "&GT;"],
        '"' => &["&quot;", "&QUOT;"],
        '\'' => &["&apos;"],
        '\u{a0}' => &["&nbsp;"],
        '+' => &["&plus;"],
        '/' => &["&sol;"],
        '=' => &["&equals;"],
        ':' => &["&colon;"],
        ';' => &["&semi;"],
        ',' => &["&comma;"],
        '.' => &["&period;"],
        '!' => &["&excl;"],
        '#' => &["&num;"],
        '$' => &["&dollar;"],
        '%' => &["&percnt;"],
        '*' => &["&ast;", "&midast;"],
        '?' => &["&quest;"],
        '@' => &["&commat;"],
        '(' => &["&lpar;"],
        ')' => &["&rpar;"],
        '[' => &["&lsqb;", "&lbrack;"],
        ']' => &["&rsqb;", "&rbrack;"],
        '{' => &["&lcub;", "&lbrace;"],
        '}' => &["&rcub;", "&rbrace;"],
        '\\' => &["&bsol;"],
        '^' => &["&Hat;"],
        '_' => &["&lowbar;", "&UnderBar;"],
        '`' => &["&grave;", "&DiacriticalGrave;"],
        '|' => &["&verbar;", "&vert;", "&VerticalLine;"],
        '~' => &["&tilde;"],
        '\n' => &["&NewLine;"],
        '\t' => &["&Tab;"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::Sensitive;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Sensitive::from("hunter2-super-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2-super-secret");
    }

    #[test]
    fn normalise_cleans_like_the_message_pipeline() {
        assert_eq!(normalise("  a\r\n\tb\u{7}  c ", false), "a b c");
        assert_eq!(normalise("<h1>Bad\ngateway</h1>", true), "Bad gateway");
        assert_eq!(normalise("abcd<efgh>ijkl", true), "abcd ijkl");
        assert_eq!(normalise("a<b", true), "a");
        assert_eq!(normalise("a > b", true), "a > b");
        for text in [
            "plain", "one two", "a<b>c", " lead", "trail ", "a  b", "a\tb", "",
        ] {
            for strip in [false, true] {
                assert_eq!(
                    is_normal(text, strip),
                    normalise(text, strip) == text,
                    "{text:?} {strip}"
                );
            }
        }
    }
}
