//! Cutting an input into the pieces a connection might receive it in: sizes from a small
//! xorshift generator seeded by one byte of the input, so libFuzzer explores splits too.

/// `data` cut into pieces of 1 to 64 bytes, in order; `seed` picks the sizes.
pub fn pieces(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Mostly tiny pieces (the hard case for resumable parsers), sometimes larger.
        let max = if state & 3 == 0 { 64 } else { 4 };
        let n = (1 + (state >> 8) as usize % max).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}
