//! Unit tests of the asciicast encoder: exact lines, UTF-8 carried across chunks, U+FFFD for
//! invalid bytes, JSON escaping, and every line read back by a small JSON parser.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use super::*;

fn secs(s: u64, micros: u32) -> Duration {
    Duration::new(s, micros * 1000)
}

// ---- a tiny JSON reader, enough for the lines we write -----------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Reader<'_> {
    fn next(&mut self) -> char {
        self.chars.next().expect("more input")
    }

    fn expect(&mut self, c: char) {
        assert_eq!(self.next(), c);
    }

    fn skip_spaces(&mut self) {
        while self.chars.peek() == Some(&' ') {
            self.chars.next();
        }
    }

    fn value(&mut self) -> Json {
        self.skip_spaces();
        let v = match *self.chars.peek().expect("a value") {
            '"' => Json::Str(self.string()),
            '[' => {
                self.next();
                let mut items = Vec::new();
                loop {
                    items.push(self.value());
                    self.skip_spaces();
                    match self.next() {
                        ',' => {}
                        ']' => break,
                        c => panic!("unexpected {c:?} in an array"),
                    }
                }
                Json::Arr(items)
            }
            '{' => {
                self.next();
                let mut fields = Vec::new();
                loop {
                    self.skip_spaces();
                    let key = self.string();
                    self.skip_spaces();
                    self.expect(':');
                    fields.push((key, self.value()));
                    self.skip_spaces();
                    match self.next() {
                        ',' => {}
                        '}' => break,
                        c => panic!("unexpected {c:?} in an object"),
                    }
                }
                Json::Obj(fields)
            }
            _ => {
                let mut n = String::new();
                while let Some(&c) = self.chars.peek() {
                    if !(c.is_ascii_digit() || c == '.' || c == '-') {
                        break;
                    }
                    n.push(self.next());
                }
                assert!(!n.is_empty() && n.parse::<f64>().is_ok(), "number {n:?}");
                Json::Num(n)
            }
        };
        self.skip_spaces();
        v
    }

    fn string(&mut self) -> String {
        self.expect('"');
        let mut s = String::new();
        loop {
            match self.next() {
                '"' => return s,
                '\\' => match self.next() {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    '/' => s.push('/'),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = (0..4).map(|_| self.next()).collect();
                        let code = u32::from_str_radix(&hex, 16).unwrap();
                        s.push(char::from_u32(code).unwrap());
                    }
                    c => panic!("unknown escape \\{c}"),
                },
                c => {
                    assert!(c >= ' ', "raw control character {c:?} in a string");
                    s.push(c);
                }
            }
        }
    }
}

/// `line` as JSON: exactly one value, then the line's `\n`.
fn parse(line: &str) -> Json {
    let body = line.strip_suffix('\n').expect("a line ends in \\n");
    assert!(!body.contains('\n'), "one line: {line:?}");
    let mut r = Reader {
        chars: body.chars().peekable(),
    };
    let v = r.value();
    assert_eq!(r.chars.next(), None, "trailing input in {line:?}");
    v
}

/// The `[time, code, data]` of an event line.
fn parse_event(line: &str) -> (String, String, String) {
    match parse(line) {
        Json::Arr(items) => match items.as_slice() {
            [Json::Num(t), Json::Str(code), Json::Str(data)] => {
                (t.clone(), code.clone(), data.clone())
            }
            other => panic!("not an event: {other:?}"),
        },
        other => panic!("not an array: {other:?}"),
    }
}

/// The text of the output events for `chunks` fed one by one, then `finish`.
fn decoded(chunks: &[&[u8]]) -> String {
    let mut w = CastWriter::new();
    let mut text = String::new();
    for chunk in chunks {
        if let Some(line) = w.output(secs(1, 0), chunk) {
            text.push_str(&parse_event(&line).2);
        }
    }
    if let Some(line) = w.finish(secs(2, 0)) {
        text.push_str(&parse_event(&line).2);
    }
    text
}

// ---- the tests --------------------------------------------------------------------------

#[test]
fn the_header_is_the_exact_line_and_parses() {
    let line = CastWriter::header(80, 24, 1_700_000_000, "xterm-256color");
    assert_eq!(
        line,
        "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1700000000,\
         \"env\":{\"TERM\":\"xterm-256color\"}}\n"
    );
    let env = Json::Obj(vec![("TERM".into(), Json::Str("xterm-256color".into()))]);
    assert_eq!(
        parse(&line),
        Json::Obj(vec![
            ("version".into(), Json::Num("2".into())),
            ("width".into(), Json::Num("80".into())),
            ("height".into(), Json::Num("24".into())),
            ("timestamp".into(), Json::Num("1700000000".into())),
            ("env".into(), env),
        ])
    );
    let odd = CastWriter::header(1, 1000, 0, "a\"b\\c\u{1b}");
    let Json::Obj(fields) = parse(&odd) else {
        panic!("{odd}")
    };
    assert_eq!(
        fields[4].1,
        Json::Obj(vec![("TERM".into(), Json::Str("a\"b\\c\u{1b}".into()))])
    );
}

#[test]
fn times_have_six_decimals_and_events_are_exact() {
    let mut w = CastWriter::new();
    assert_eq!(
        w.output(secs(1, 234_567), b"hi").as_deref(),
        Some("[1.234567, \"o\", \"hi\"]\n")
    );
    assert_eq!(
        w.output(Duration::ZERO, b"x").as_deref(),
        Some("[0.000000, \"o\", \"x\"]\n")
    );
    // Below a microsecond is cut, not rounded.
    let line = w.output(Duration::new(61, 999_999_999), b"y").unwrap();
    assert_eq!(line, "[61.999999, \"o\", \"y\"]\n");
    assert_eq!(
        CastWriter::resize(secs(3, 5), 100, 30),
        "[3.000005, \"r\", \"100x30\"]\n"
    );
    assert_eq!(
        CastWriter::marker(secs(4, 0), TRUNCATED_MARKER),
        "[4.000000, \"m\", \"recording truncated: size cap reached\"]\n"
    );
    assert_eq!(
        parse_event(&CastWriter::resize(secs(0, 1), 1, 1)),
        ("0.000001".into(), "r".into(), "1x1".into())
    );
    assert_eq!(w.output(secs(5, 0), b""), None, "no event for no bytes");
}

#[test]
fn quotes_backslashes_and_control_characters_are_escaped() {
    let mut w = CastWriter::new();
    let line = w
        .output(
            secs(0, 0),
            b"\"q\" \\ \x1b[1m\n\r\t\0\x07\x7f \xc3\xa9 \xe2\x82\xac",
        )
        .unwrap();
    assert_eq!(
        line,
        "[0.000000, \"o\", \"\\\"q\\\" \\\\ \\u001b[1m\\n\\r\\t\\u0000\\u0007\\u007f é €\"]\n"
    );
    assert_eq!(
        parse_event(&line).2,
        "\"q\" \\ \u{1b}[1m\n\r\t\0\u{7}\u{7f} é €"
    );
}

#[test]
fn a_character_split_across_chunks_comes_out_whole() {
    let mut w = CastWriter::new();
    // é = c3 a9, split after its first byte.
    assert_eq!(parse_event(&w.output(secs(0, 1), b"a\xc3").unwrap()).2, "a");
    assert!(w.has_carry());
    assert_eq!(
        parse_event(&w.output(secs(0, 2), b"\xa9b").unwrap()).2,
        "éb"
    );
    assert!(!w.has_carry());
    // 😀 = f0 9f 98 80, fed one byte at a time: nothing until the last.
    assert_eq!(w.output(secs(0, 3), b"\xf0"), None);
    assert_eq!(w.output(secs(0, 4), b"\x9f"), None);
    assert_eq!(w.output(secs(0, 5), b"\x98"), None);
    let line = w.output(secs(0, 6), b"\x80").unwrap();
    assert_eq!(line, "[0.000006, \"o\", \"😀\"]\n");
    assert_eq!(w.finish(secs(1, 0)), None, "nothing dangling");
    assert_eq!(decoded(&[b"\xe2", b"\x82\xac", b"!"]), "€!");
}

#[test]
fn invalid_bytes_become_replacement_characters() {
    assert_eq!(decoded(&[b"a\xffb\x80c"]), "a\u{fffd}b\u{fffd}c");
    // A started sequence broken by the next chunk: one U+FFFD for it, the rest kept.
    assert_eq!(decoded(&[b"x\xe2\x82", b"z"]), "x\u{fffd}z");
    // Overlong and surrogate encodings are invalid too.
    assert_eq!(
        decoded(&[b"\xc0\xaf", b"\xed\xa0\x80"]),
        "\u{fffd}".repeat(5)
    );
    // The stream ends inside a character: finish flushes it as one U+FFFD.
    let mut w = CastWriter::new();
    assert_eq!(
        parse_event(&w.output(secs(0, 0), b"ok\xf0\x9f").unwrap()).2,
        "ok"
    );
    assert_eq!(
        w.finish(secs(9, 0)).as_deref(),
        Some("[9.000000, \"o\", \"\u{fffd}\"]\n")
    );
    assert!(!w.has_carry());
    assert_eq!(w.finish(secs(9, 0)), None);
}

/// Bytes of every value with many UTF-8 pieces, from a fixed xorshift sequence.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    const PIECES: [&[u8]; 8] = [
        b"a",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xf0\x9f\x98\x80",
        b"\x1b[0m",
        b"\"\\\n",
        b"\xff",
        b"\xe2\x82",
    ];
    let mut out = Vec::with_capacity(len + 4);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [pick, byte, ..] = state.to_le_bytes();
        match PIECES.get(usize::from(pick % 12)) {
            Some(piece) => out.extend_from_slice(piece),
            None => out.push(byte),
        }
    }
    out
}

#[test]
fn any_split_decodes_like_the_whole_stream_at_once() {
    for seed in 1..40_u64 {
        let bytes = noise(2_000, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let expected = String::from_utf8_lossy(&bytes);
        // Cut at varying, seed-dependent widths, including 1-byte chunks.
        let width = usize::try_from(seed % 7 + 1).unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(width).collect();
        assert_eq!(decoded(&chunks), expected, "seed {seed}");
        let chunks: Vec<&[u8]> = bytes.chunks(width * 97).collect();
        assert_eq!(decoded(&chunks), expected, "seed {seed}, wide");
    }
}
