//! Cuts one output stream of a command into chunks of at most [`CHUNK`] bytes that never split
//! a UTF-8 character: an incomplete sequence at the end of a read (at most 3 bytes) is carried
//! to the front of the next one. Bytes that are not UTF-8 are passed through untouched (the
//! protocol's `*_b64` fields carry them); only a *valid prefix* of a character is ever held
//! back, so nothing is reordered or lost.
//!
//! Pure: the caller reads into [`Chunker::spare`] and reports how much it read. It must not
//! know about pipes, processes or frames.

/// The largest chunk, in bytes of output. A frame carries one chunk of one stream; at this size
/// even a chunk of raw binary (lossy text + base64 + JSON escapes) stays far below the
/// server's frame cap, and a flood of output is many small frames, not one huge one.
pub const CHUNK: usize = 32 * 1024;

/// The chunking state of one stream.
pub struct Chunker {
    buf: Box<[u8]>,
    /// Bytes at the front of `buf` carried from the previous read (an incomplete character).
    carried: usize,
}

impl Default for Chunker {
    fn default() -> Self {
        Self {
            buf: vec![0; CHUNK].into_boxed_slice(),
            carried: 0,
        }
    }
}

impl std::fmt::Debug for Chunker {
    // Not the 32 KiB buffer: only what matters between reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("carried", &&self.buf[..self.carried])
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Chunks of at most `size` bytes (at least 4, so a character always fits).
    #[must_use]
    pub fn with_size(size: usize) -> Self {
        Self {
            buf: vec![0; size.max(4)].into_boxed_slice(),
            carried: 0,
        }
    }

    /// Where the next read goes: never empty (at most 3 of the [`CHUNK`] bytes are carried),
    /// and sized so that carried + read bytes fit one chunk.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.carried..]
    }

    /// `read` bytes were written into [`Self::spare`]: the chunk to send now, if any. An
    /// incomplete character at its end stays behind for the next read.
    pub fn filled(&mut self, read: usize) -> Option<Vec<u8>> {
        let end = (self.carried + read).min(self.buf.len());
        let keep = incomplete_tail(&self.buf[..end]);
        let chunk = (end > keep).then(|| self.buf[..end - keep].to_vec());
        self.buf.copy_within(end - keep..end, 0);
        self.carried = keep;
        chunk
    }

    /// The stream ended: whatever is still carried goes out as it is (a truncated character
    /// is not UTF-8, so it travels as exact bytes).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = (self.carried > 0).then(|| self.buf[..self.carried].to_vec());
        self.carried = 0;
        rest
    }
}

/// How many bytes at the end of `bytes` are the valid start of a character whose remaining
/// bytes have not arrived yet (0 to 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes, so an incomplete one starts within the last 3.
    for back in 1..=bytes.len().min(3) {
        let start = bytes.len() - back;
        let byte = bytes[start];
        if byte & 0b1100_0000 == 0b1000_0000 {
            // A continuation byte: its lead byte is further back.
            continue;
        }
        // `error_len() == None` is "unexpected end of input": the bytes from `start` on are a
        // valid but unfinished character (this also rejects overlong forms and surrogates,
        // which must not be held back as if more could complete them).
        return match std::str::from_utf8(&bytes[start..]) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
            Ok(_) | Err(_) => 0,
        };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` one by one as if each were one `read()` and returns the chunks.
    fn feed(reads: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::default();
        let mut out = Vec::new();
        for read in reads {
            let spare = chunker.spare();
            assert!(
                spare.len() >= read.len(),
                "test read larger than the spare room"
            );
            spare[..read.len()].copy_from_slice(read);
            out.extend(chunker.filled(read.len()));
        }
        out.extend(chunker.finish());
        out
    }

    #[test]
    fn a_character_split_across_reads_is_carried_whole_into_the_next_chunk() {
        let euro = "€".as_bytes(); // e2 82 ac
        let chunks = feed(&[&[b'a', euro[0]], &[euro[1]], &[euro[2], b'b']]);
        assert_eq!(chunks, vec![b"a".to_vec(), "€b".as_bytes().to_vec()]);
        for chunk in &chunks {
            assert!(std::str::from_utf8(chunk).is_ok());
        }
        let emoji = "😀".as_bytes(); // four bytes
        let chunks = feed(&[&emoji[..3], &emoji[3..]]);
        assert_eq!(chunks, vec![emoji.to_vec()]);
    }

    #[test]
    fn invalid_bytes_are_sent_as_they_are_and_not_held_back() {
        // 0xff can never start a character; 0x80 alone is a stray continuation byte.
        assert_eq!(feed(&[b"ab\xff"]), vec![b"ab\xff".to_vec()]);
        assert_eq!(feed(&[b"\x80"]), vec![b"\x80".to_vec()]);
        // A lead byte followed by something that is not a continuation: invalid, sent now.
        assert_eq!(feed(&[b"\xe2A"]), vec![b"\xe2A".to_vec()]);
        // A surrogate prefix (ed a0) can never be completed: not carried.
        assert_eq!(incomplete_tail(b"x\xed\xa0"), 0);
        assert_eq!(incomplete_tail(b"x\xe2\x82"), 2);
        assert_eq!(incomplete_tail(b"\xf0\x9f\x98"), 3);
        assert_eq!(incomplete_tail("é".as_bytes()), 0);
        // A stream that ends inside a character flushes the fragment as exact bytes.
        assert_eq!(
            feed(&[b"ok\xe2\x82"]),
            vec![b"ok".to_vec(), b"\xe2\x82".to_vec()]
        );
        let out = rmm_protocol::TerminalOutput::chunk(b"\xe2\x82", b"");
        assert_eq!(out.bytes().unwrap().0, b"\xe2\x82");
        assert!(out.stdout_b64.is_some());
    }

    #[test]
    fn chunks_never_exceed_the_bound_even_with_carried_bytes() {
        let mut chunker = Chunker::default();
        // Fill a whole chunk ending in half a character, then keep filling the spare room.
        let first = chunker.spare();
        first.fill(b'x');
        let len = first.len();
        first[len - 1] = 0xc3; // first byte of "é"
        let chunk = chunker.filled(len).unwrap();
        assert_eq!(chunk.len(), CHUNK - 1);
        let spare = chunker.spare();
        assert_eq!(spare.len(), CHUNK - 1);
        spare[0] = 0xa9;
        spare[1..].fill(b'y');
        let len = spare.len();
        let chunk = chunker.filled(len).unwrap();
        assert_eq!(chunk.len(), CHUNK);
        assert_eq!(&chunk[..3], "éy".as_bytes());
        assert_eq!(chunker.finish(), None);
    }

    #[test]
    fn a_read_that_is_only_part_of_a_character_sends_nothing_yet() {
        let mut chunker = Chunker::default();
        chunker.spare()[0] = 0xf0;
        assert_eq!(chunker.filled(1), None);
        chunker.spare()[..2].copy_from_slice(&[0x9f, 0x98]);
        assert_eq!(chunker.filled(2), None);
        chunker.spare()[0] = 0x80;
        assert_eq!(chunker.filled(1), Some("😀".as_bytes().to_vec()));
    }

    #[test]
    fn concatenated_chunks_are_the_input_byte_for_byte() {
        // Every split point of a mixed text with invalid bytes gives back the same bytes.
        let input = "a€😀é\u{7ff}"
            .as_bytes()
            .iter()
            .copied()
            .chain([0xff, 0xe2, b'z'])
            .collect::<Vec<u8>>();
        for cut in 0..=input.len() {
            let chunks = feed(&[&input[..cut], &input[cut..]]);
            assert_eq!(chunks.concat(), input, "cut at {cut}");
        }
    }
}
