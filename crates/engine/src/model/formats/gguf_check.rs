//! A bounds check of a GGUF file's header before candle reads it. candle trusts the lengths
//! and counts it finds there, so a damaged file can ask it for terabytes and abort the process;
//! here every string, array, tensor shape and tensor extent is checked against the file's size
//! first, and a bad one is an error that says where it is.

use crate::error::{Error, Result};
use candle_core::quantized::GgmlDType;
use std::io::Read;
use std::path::Path;

/// Check the header of the GGUF file at `path`.
pub fn check(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let size = f.metadata().map_err(|e| Error::file(path, e))?.len();
    // Headers of real files are a few MB (the vocabulary): read 4 MB, and more only when the
    // header runs on, up to 256 MB, so that a model is not read whole just to check its header.
    let mut head = Vec::new();
    let mut want = 4u64 << 20;
    loop {
        let have = head.len() as u64;
        (&mut f)
            .take(want.min(size).saturating_sub(have))
            .read_to_end(&mut head)
            .map_err(|e| Error::file(path, e))?;
        if !head.starts_with(b"GGUF") {
            return Err(Error::file(
                path,
                "not a readable GGUF file: it does not begin with `GGUF`",
            ));
        }
        let mut r = Reader {
            buf: &head,
            pos: 0,
            file_size: size,
            ran_past: false,
        };
        match r.header() {
            Ok(()) => return Ok(()),
            Err(_) if r.ran_past && (head.len() as u64) < size.min(256 << 20) => want *= 4,
            Err(e) => return Err(Error::file(path, format!("damaged GGUF header: {e}"))),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_size: u64,
    /// Whether a read ran past the bytes read so far (the file may go on).
    ran_past: bool,
}

type R<T> = std::result::Result<T, String>;

impl Reader<'_> {
    fn bytes(&mut self, n: u64) -> R<&[u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|e| *e <= self.buf.len() as u64);
        self.ran_past = end.is_none();
        let end =
            end.ok_or_else(|| format!("{n} bytes at offset {} run past the end", self.pos))?;
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A count or length: u32 in GGUF v1, u64 after.
    fn len(&mut self, v1: bool) -> R<u64> {
        if v1 {
            Ok(self.u32()? as u64)
        } else {
            self.u64()
        }
    }
    fn string(&mut self, v1: bool) -> R<()> {
        let n = self.len(v1)?;
        self.bytes(n).map(|_| ())
    }

    fn header(&mut self) -> R<()> {
        if self.bytes(4)? != b"GGUF" {
            return Err("no GGUF magic".into());
        }
        let version = self.u32()?;
        if !(1..=3).contains(&version) {
            return Err(format!("version {version}; known: 1, 2, 3"));
        }
        let v1 = version == 1;
        let (n_tensors, n_kv) = (self.len(v1)?, self.len(v1)?);
        // Each entry takes at least 8 bytes, so larger counts cannot fit in the file.
        for (what, n) in [("tensor", n_tensors), ("metadata", n_kv)] {
            if n > self.file_size / 8 {
                return Err(format!(
                    "{n} {what} entries cannot fit in {} bytes",
                    self.file_size
                ));
            }
        }
        for _ in 0..n_kv {
            self.string(v1)?;
            let t = self.u32()?;
            self.value(t, v1, 0)?;
        }
        for _ in 0..n_tensors {
            self.tensor_info(v1)?;
        }
        Ok(())
    }

    fn value(&mut self, t: u32, v1: bool, depth: usize) -> R<()> {
        let fixed = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string(v1),
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = self.len(v1)?;
                if n > self.buf.len() as u64 {
                    return Err(format!("an array of {n} values at offset {}", self.pos));
                }
                for _ in 0..n {
                    self.value(inner, v1, depth + 1)?;
                }
                return Ok(());
            }
            _ => return Err(format!("value type {t} at offset {}", self.pos)),
        };
        self.bytes(fixed).map(|_| ())
    }

    fn tensor_info(&mut self, v1: bool) -> R<()> {
        self.string(v1)?;
        let n_dims = self.u32()?;
        if n_dims > 4 {
            return Err(format!("a tensor with {n_dims} dimensions (at most 4)"));
        }
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let d = self.len(v1)?;
            elems = elems
                .checked_mul(d)
                .ok_or("a tensor shape whose size overflows")?;
        }
        let kind = self.u32()?;
        let offset = self.u64()?;
        let Some(dtype) = dtype(kind) else {
            return Ok(()); // candle names an unknown type itself
        };
        let bytes = elems / dtype.block_size() as u64 * dtype.type_size() as u64;
        if offset
            .checked_add(bytes)
            .is_none_or(|end| end > self.file_size)
        {
            return Err(format!(
                "a tensor of {bytes} bytes at data offset {offset} does not fit in the file ({} bytes)",
                self.file_size
            ));
        }
        Ok(())
    }
}

/// ggml's type numbers for the types candle reads.
fn dtype(t: u32) -> Option<GgmlDType> {
    Some(match t {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}
