//! Bounds-checked little-endian reads and writes, with no `unsafe`.
//!
//! [`Reader`] walks a borrowed byte slice with `split_first_chunk`, so every
//! read either yields a whole field or `None`; there is no indexing that could
//! panic. [`Put`] appends fields to a `Vec<u8>` for the encoders.

/// A cursor over borrowed bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    #[inline(always)]
    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.rest = self.rest.get(n..)?;
        Some(())
    }

    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    #[inline(always)]
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    #[inline(always)]
    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_le_bytes)
    }

    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    #[inline(always)]
    pub(crate) fn f32(&mut self) -> Option<f32> {
        self.take().map(f32::from_le_bytes)
    }

    #[inline(always)]
    pub(crate) fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
}

/// Little-endian appends for the encoders.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_i16(&mut self, v: i16);
    fn put_u32(&mut self, v: u32);
    fn put_f32(&mut self, v: f32);
    fn put_f64(&mut self, v: f64);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i16(&mut self, v: i16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f32(&mut self, v: f32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let bytes = [1u8, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 9];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x1234));
        assert_eq!(r.u32(), Some(0x1234_5678));
        assert_eq!(r.u16(), None, "one byte left is not a u16");
        assert_eq!(r.u8(), Some(9), "a failed read consumes nothing");
        assert_eq!(r.u8(), None);
        assert_eq!(r.skip(1), None);
    }

    #[test]
    fn put_and_read_agree() {
        let mut v = Vec::new();
        v.put_u8(7);
        v.put_u16(0xBEEF);
        v.put_i16(-2);
        v.put_u32(0xDEAD_BEEF);
        v.put_f32(1465.4);
        v.put_f64(-0.05);
        let mut r = Reader::new(&v);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u16(), Some(0xBEEF));
        assert_eq!(r.i16(), Some(-2));
        assert_eq!(r.u32(), Some(0xDEAD_BEEF));
        assert_eq!(r.f32(), Some(1465.4));
        assert_eq!(r.f64(), Some(-0.05));
        assert_eq!(r.u8(), None);
    }
}
