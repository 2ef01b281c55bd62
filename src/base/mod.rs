//! The foundations every layer uses, importing nothing of the crate: the wrapper that keeps a
//! secret out of output ([`sensitive`]), the scrubber of echoed secrets ([`scrub`]), time
//! formats and arithmetic ([`time`]), the clock ([`clock`]) and URLs as they may be shown
//! ([`url`]).

pub mod clock;
pub mod scrub;
pub mod sensitive;
pub mod time;
pub mod url;

pub use scrub::Scrubber;
pub use sensitive::{REDACTED, Sensitive};
