//! Decompression of PostgreSQL's own LZ format (`pglz`), used for WAL images under
//! `wal_compression = pglz`.
//!
//! The format is a stream of control bytes, each governing the next eight items: a
//! clear bit is one literal byte, a set bit a back-reference of two or three bytes
//! (length 3..=273, offset 1..=4095 into what was already produced).

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PglzError {
    #[error("pglz: back-reference at output byte {0} points before the start")]
    BadReference(usize),
    #[error("pglz: input ends inside a back-reference")]
    Truncated,
    #[error("pglz: produced {produced} bytes and consumed {consumed} of {input}, expected exactly {expected} bytes from all input")]
    Incomplete {
        produced: usize,
        expected: usize,
        consumed: usize,
        input: usize,
    },
}

/// Decompress `src` into `dest`, which must come out exactly full with all of `src`
/// consumed, as PostgreSQL requires when it restores a block image.
pub fn decompress_exact(src: &[u8], dest: &mut [u8]) -> Result<(), PglzError> {
    let mut sp = 0;
    let mut dp = 0;
    while sp < src.len() && dp < dest.len() {
        let mut control = src[sp];
        sp += 1;
        for _ in 0..8 {
            if sp >= src.len() || dp >= dest.len() {
                break;
            }
            if control & 1 != 0 {
                let [b0, b1] = [src[sp], *src.get(sp + 1).ok_or(PglzError::Truncated)?];
                sp += 2;
                let mut len = usize::from(b0 & 0x0f) + 3;
                let offset = (usize::from(b0 & 0xf0) << 4) | usize::from(b1);
                if len == 18 {
                    len += usize::from(*src.get(sp).ok_or(PglzError::Truncated)?);
                    sp += 1;
                }
                if offset == 0 || offset > dp {
                    return Err(PglzError::BadReference(dp));
                }
                let len = len.min(dest.len() - dp);
                // A reference may overlap what it produces (offset < len): copy byte by
                // byte so each copied byte can be the source of a later one.
                for i in dp..dp + len {
                    dest[i] = dest[i - offset];
                }
                dp += len;
            } else {
                dest[dp] = src[sp];
                sp += 1;
                dp += 1;
            }
            control >>= 1;
        }
    }
    if dp != dest.len() || sp != src.len() {
        return Err(PglzError::Incomplete {
            produced: dp,
            expected: dest.len(),
            consumed: sp,
            input: src.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn literals_and_overlapping_references() {
        // control 0b0000_0010: literal 'a', then reference len 3+15+2=20 offset 1.
        let src = [0b0000_0010, b'a', 0x0f, 0x01, 2];
        let mut out = [0u8; 21];
        decompress_exact(&src, &mut out).unwrap();
        assert_eq!(out, [b'a'; 21]);
    }

    #[test]
    fn refuses_bad_input() {
        let mut out = [0u8; 4];
        assert_eq!(
            decompress_exact(&[0b1, 0x00, 0x01], &mut out),
            Err(PglzError::BadReference(0))
        );
        assert_eq!(
            decompress_exact(&[0b10, b'a', 0x00], &mut out),
            Err(PglzError::Truncated)
        );
        assert!(matches!(
            decompress_exact(&[0, b'a'], &mut out),
            Err(PglzError::Incomplete { .. })
        ));
        assert!(matches!(
            decompress_exact(&[0, 1, 2, 3, 4, 5], &mut out),
            Err(PglzError::Incomplete { .. })
        ));
    }
}
