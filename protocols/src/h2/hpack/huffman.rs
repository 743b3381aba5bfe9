//! Huffman decoding of HPACK string literals (RFC 7541 §5.2 and Appendix B).
//!
//! The code of Appendix B is *canonical*: sorting the symbols by (code length, symbol value)
//! and counting upwards, shifting left whenever the length grows, reproduces every code in
//! the RFC's table. So the table below keeps only each symbol's code length, and the codes
//! are derived from it at compile time (the tests check the derivation against the RFC's
//! examples and against an independent HPACK implementation).
//!
//! Decoding looks the next 8 bits up in a table built at compile time, which decodes a
//! code of up to 8 bits (most printable characters) in one step. A longer code is walked
//! bit by bit, keeping the code read so far: a code of length `L` is complete when it lies
//! in `[first[L], first[L] + count[L])`, a subtraction and a comparison per bit. No
//! allocation besides the output.
//!
//! Rejected, as §5.2 requires: padding longer than 7 bits, padding that is not the
//! most-significant bits of EOS (all ones), and an EOS symbol inside the string.

/// The longest code (EOS) in bits.
const MAX_LEN: usize = 30;
/// The EOS symbol: never valid inside a string.
const EOS: u16 = 256;

/// Code length in bits of symbols 0..=255, then EOS (RFC 7541 Appendix B).
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // 0x100
];

/// The canonical code, derived from [`CODE_LENGTHS`].
struct Canonical {
    /// `count[L]`: how many symbols have a code of length `L`.
    count: [u32; MAX_LEN + 1],
    /// `first[L]`: the numerically smallest code of length `L`.
    first: [u32; MAX_LEN + 1],
    /// `base[L]`: where the symbols of length `L` start in `symbols`.
    base: [u16; MAX_LEN + 1],
    /// All symbols sorted by (code length, symbol value).
    symbols: [u16; 257],
}

/// Built at compile time: a `const fn` may loop, so no runtime initialisation is needed.
static CODE: Canonical = derive();

const fn derive() -> Canonical {
    let mut c = Canonical {
        count: [0; MAX_LEN + 1],
        first: [0; MAX_LEN + 1],
        base: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut next = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        c.base[len] = next as u16;
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                c.symbols[next] = sym as u16;
                next += 1;
                c.count[len] += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    // Canonical assignment: the first code of each length follows the last code of the
    // previous length, shifted left by one.
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        code = (code + c.count[len - 1]) << 1;
        c.first[len] = code;
        len += 1;
    }
    c
}

/// Why a Huffman-coded string was rejected; all are COMPRESSION_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HuffmanError {
    /// The string contains the EOS symbol (§5.2: "MUST be treated as a decoding error").
    Eos,
    /// More than 7 bits of padding, or padding that is not all ones.
    Padding,
}

impl HuffmanError {
    /// A short description for GOAWAY debug data.
    pub(crate) fn description(self) -> &'static str {
        match self {
            HuffmanError::Eos => "EOS symbol in a Huffman-coded string",
            HuffmanError::Padding => "invalid Huffman padding",
        }
    }
}

/// Bits looked up at once by the fast path.
const SHORT_BITS: usize = 8;

/// For each `SHORT_BITS`-bit pattern: the symbol whose code (of at most `SHORT_BITS` bits)
/// begins it and that code's length, or length 0 where the code there is longer. Most
/// characters of paths and authorities have codes of 5 to 8 bits, so one lookup decodes one
/// of them instead of a step per bit.
static SHORT: [(u8, u8); 1 << SHORT_BITS] = short_table();

const fn short_table() -> [(u8, u8); 1 << SHORT_BITS] {
    let mut table = [(0u8, 0u8); 1 << SHORT_BITS];
    let mut len = 1;
    while len <= SHORT_BITS {
        let mut rank = 0;
        while rank < CODE.count[len] {
            let code = (CODE.first[len] + rank) as usize;
            let sym = CODE.symbols[CODE.base[len] as usize + rank as usize];
            let spread = SHORT_BITS - len;
            let mut fill = 0;
            while fill < (1 << spread) {
                table[(code << spread) | fill] = (sym as u8, len as u8);
                fill += 1;
            }
            rank += 1;
        }
        len += 1;
    }
    table
}

/// Decodes the Huffman-coded `src` into `dst` (appending).
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Every code is at least 5 bits, so this bounds the output and avoids regrowth.
    dst.reserve(src.len() * 8 / 5);
    // The bits not consumed yet are the low `bits` of `acc` (above them: stale bits).
    let mut acc = 0u64;
    let mut bits = 0u32;
    let mut bytes = src.iter();
    loop {
        // Refilled to more than 56 bits while input lasts: a whole code (30 bits at most)
        // is always there, except at the very end.
        while bits <= 56 {
            let Some(&byte) = bytes.next() else { break };
            acc = (acc << 8) | u64::from(byte);
            bits += 8;
        }
        // Fast path: a short code, whole within the next `SHORT_BITS` bits.
        if bits >= SHORT_BITS as u32 {
            let (sym, len) = SHORT[((acc >> (bits - SHORT_BITS as u32)) & 0xff) as usize];
            if len != 0 {
                dst.push(sym);
                bits -= u32::from(len);
                continue;
            }
        }
        // One code bit by bit: a long one, or one near the end. A code of length `L` is
        // complete when it lies in `[first[L], first[L] + count[L])`.
        let mut code = 0u32;
        let mut len = 0usize;
        loop {
            if bits == 0 {
                // The input is used up. What is left must be a prefix of EOS, i.e. all
                // ones, and shorter than a byte (no other code is all ones, so padding
                // never completes a symbol).
                if len > 7 || code != (1 << len) - 1 {
                    return Err(HuffmanError::Padding);
                }
                return Ok(());
            }
            bits -= 1;
            code = (code << 1) | ((acc >> bits) & 1) as u32;
            len += 1;
            // `len` never passes 30: every 30-bit pattern is either a complete code or
            // has a shorter complete prefix (the code is complete), so it resets first.
            let offset = code.wrapping_sub(CODE.first[len]);
            if offset < CODE.count[len] {
                let sym = CODE.symbols[usize::from(CODE.base[len]) + offset as usize];
                if sym == EOS {
                    return Err(HuffmanError::Eos);
                }
                dst.push(sym as u8);
                break;
            }
        }
    }
}

/// The code of `sym` and its length in bits (for test encoders and table checks).
#[cfg(test)]
pub(crate) fn code(sym: u16) -> (u32, u8) {
    let len = CODE_LENGTHS[usize::from(sym)];
    let l = usize::from(len);
    let symbols = &CODE.symbols[usize::from(CODE.base[l])..][..CODE.count[l] as usize];
    let rank = symbols.iter().position(|&s| s == sym).unwrap() as u32;
    (CODE.first[l] + rank, len)
}

/// Huffman-encodes `src` (a test helper: Peregrine's response encoder sends raw literals).
#[cfg(test)]
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in src {
        let (c, l) = code(u16::from(b));
        acc = (acc << l) | u64::from(c);
        bits += u32::from(l);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most-significant bits of EOS (all ones).
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}
