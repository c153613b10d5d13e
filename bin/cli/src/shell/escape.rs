//! ssh's escape, `~.`: a `~` at the start of a line (the first input, or right after Enter)
//! is held back; `.` next disconnects, `~` next sends one `~`, anything else sends the held
//! `~` and itself.

/// Where the input stands, across chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape {
    /// The next byte starts a line.
    at_line_start: bool,
    /// A `~` at the start of a line is held back.
    held: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Self {
            at_line_start: true,
            held: false,
        }
    }
}

/// What a chunk of input comes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filtered {
    /// The bytes to send.
    pub send: Vec<u8>,
    /// `~.` was typed: disconnect (the bytes before it are in `send`).
    pub disconnect: bool,
}

impl Escape {
    /// Filters a chunk of typed input.
    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        for &byte in input {
            if self.held {
                self.held = false;
                match byte {
                    b'.' => {
                        out.disconnect = true;
                        return out;
                    }
                    b'~' => {
                        out.send.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => out.send.push(b'~'),
                }
            } else if self.at_line_start && byte == b'~' {
                self.held = true;
                continue;
            }
            out.send.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut escape = Escape::default();
        let mut sent = Vec::new();
        for chunk in chunks {
            let out = escape.feed(chunk);
            sent.extend(out.send);
            if out.disconnect {
                return (sent, true);
            }
        }
        (sent, false)
    }

    #[test]
    fn tilde_dot_disconnects_at_the_start_of_a_line_only() {
        assert_eq!(feed_all(&[b"~."]), (vec![], true));
        assert_eq!(feed_all(&[b"ls\r~."]), (b"ls\r".to_vec(), true));
        assert_eq!(feed_all(&[b"ls\n", b"~", b"."]), (b"ls\n".to_vec(), true));
        // Mid-line, `~.` is plain text.
        assert_eq!(feed_all(&[b"a~.\r"]), (b"a~.\r".to_vec(), false));
        // Bytes after the escape are not sent.
        assert_eq!(feed_all(&[b"\r~.rm -rf"]), (b"\r".to_vec(), true));
    }

    #[test]
    fn a_double_tilde_sends_one_and_other_bytes_release_the_held_one() {
        assert_eq!(feed_all(&[b"~~"]), (b"~".to_vec(), false));
        // After `~~` the line has started: `.` is plain.
        assert_eq!(feed_all(&[b"~~."]), (b"~.".to_vec(), false));
        assert_eq!(feed_all(&[b"~x"]), (b"~x".to_vec(), false));
        assert_eq!(feed_all(&[b"~", b"/home\r"]), (b"~/home\r".to_vec(), false));
        // A held `~` followed by Enter: both sent, and the next line starts fresh.
        assert_eq!(feed_all(&[b"~\r~."]), (b"~\r".to_vec(), true));
        // A `~` alone stays held until the next byte.
        let mut escape = Escape::default();
        assert_eq!(escape.feed(b"~"), Filtered::default());
        assert_eq!(escape.feed(b"a").send, b"~a".to_vec());
    }
}
