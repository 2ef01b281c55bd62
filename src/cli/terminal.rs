//! Everything the CLI prints goes through here: text from the cluster (API server messages and
//! reasons, object fields, kubeconfig errors) or from an endpoint can hold escape sequences that
//! a terminal acts on (`ESC ]52;` writes the clipboard, `ESC ]0;` the window title, C1 `CSI`
//! moves the cursor) or bidirectional controls that reorder what is shown. Each becomes `?`;
//! newlines and tabs stay.
//!
//! The macros [`outln!`](crate::cli::terminal), `out!` and `errln!` are `println!`, `print!` and
//! `eprintln!` through [`safe`].

/// Unicode's bidirectional embedding, override and isolate controls (not `is_control`).
const BIDI_CONTROLS: [char; 11] = [
    '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}',
];

/// `text` safe to print on a terminal: every control character but newline and tab (C0, DEL and
/// C1: `ESC`, `CSI`, `OSC` and the rest) and every bidirectional control becomes `?`.
pub fn safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() || BIDI_CONTROLS.contains(&c) => '?',
            c => c,
        })
        .collect()
}

/// `println!` through [`safe`].
macro_rules! outln {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::terminal::safe(&format!($($arg)*)))
    };
}

/// `print!` through [`safe`].
macro_rules! out {
    ($($arg:tt)*) => {
        print!("{}", $crate::cli::terminal::safe(&format!($($arg)*)))
    };
}

/// `eprintln!` through [`safe`].
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::cli::terminal::safe(&format!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Standard error through [`safe`], for log lines (which can quote what the cluster or an
/// endpoint said). Each write is one whole formatted event.
pub struct SafeStderr;

impl std::io::Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = safe(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_controls_never_reach_the_terminal() {
        let hostile = "a\u{1b}]52;c;cHduZWQ=\u{7}b\u{1b}]0;title\u{7}c\u{9b}31md\u{1b}[2Je\u{202e}f\u{2066}g\rh\u{0}i\u{7f}j";
        let shown = safe(hostile);
        assert!(
            shown
                .chars()
                .all(|c| c == '\n' || c == '\t' || !(c.is_control() || BIDI_CONTROLS.contains(&c))),
            "{shown:?}"
        );
        assert_eq!(safe("line one\n\tline two"), "line one\n\tline two");
        assert_eq!(safe("x\u{1b}y"), "x?y");
    }
}
