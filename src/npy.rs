//! Minimal `.npy` (NumPy array file) reading and writing: little-endian f32 and i32,
//! C order, versions 1.0 to 3.0. Anything else is a clear error, never a guess.
//!
//! Our own reader rather than `npyz` or `ndarray-npy`: `.npy` files are untrusted input
//! (`moba attend`), and those crates size a header's shape with unchecked products (npyz
//! 0.8.4 multiplies it in `u64`: a panic in debug builds, a wrapped size in release) and
//! read a declared header length whole. Here every size is checked against the arithmetic,
//! the file and the host's memory before anything is allocated.

use std::io::Read;
use std::path::Path;

use bytemuck::Pod;

use crate::error::{MobaError, Result};
use crate::memory::check_host;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An element type that `.npy` files can hold here.
pub trait Element: Pod {
    /// NumPy's dtype string for it.
    const DESCR: &'static str;
}
impl Element for f32 {
    const DESCR: &'static str = "<f4";
}
impl Element for i32 {
    const DESCR: &'static str = "<i4";
}

/// A row-major array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// Headers longer than this are refused: NumPy writes a few hundred bytes.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Reads an array of `T` from a `.npy` file: the header first, then exactly the data bytes
/// its shape declares, checked against the file's size (for a regular file) and the host's
/// memory before anything is allocated (a header that declares more than the file holds,
/// or than memory can hold, is an error).
pub fn read<T: Element>(path: &Path) -> Result<Array<T>> {
    let npy_error = |message: String| MobaError::Npy {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| MobaError::io(path, e))?;
    let file_bytes = file
        .metadata()
        .ok()
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len());
    let mut reader = std::io::BufReader::new(file);
    let mut prefix = Vec::new();
    read_up_to(&mut reader, &mut prefix, 12, path)?;
    let header_end = header_end(&prefix).map_err(npy_error)?;
    read_up_to(&mut reader, &mut prefix, header_end, path)?;
    let header = parse_header::<T>(&prefix).map_err(npy_error)?;
    let data_bytes = header.data_bytes::<T>().map_err(npy_error)?;
    if let Some(file_bytes) = file_bytes {
        let has = file_bytes.saturating_sub(header_end as u64);
        if has != data_bytes as u64 {
            return Err(npy_error(format!(
                "shape {:?} needs {data_bytes} data bytes, file has {has}",
                header.shape
            )));
        }
    }
    // The payload and its typed copy are held at once.
    check_host(
        &format!(
            "{} ({data_bytes} data bytes, read and converted)",
            path.display()
        ),
        (data_bytes as u64).checked_mul(2),
    )?;
    // One byte more than declared tells a longer stream (a pipe, a device) apart.
    let mut payload = Vec::with_capacity(data_bytes.saturating_add(1));
    (&mut reader)
        .take((data_bytes as u64).saturating_add(1))
        .read_to_end(&mut payload)
        .map_err(|e| MobaError::io(path, e))?;
    if payload.len() != data_bytes {
        return Err(npy_error(format!(
            "shape {:?} needs {data_bytes} data bytes, file has {}{}",
            header.shape,
            payload.len(),
            if payload.len() > data_bytes {
                " or more"
            } else {
                ""
            }
        )));
    }
    Ok(Array {
        shape: header.shape,
        data: bytemuck::pod_collect_to_vec(&payload),
    })
}

/// Reads from `reader` until `bytes` holds `len` bytes or the input ends.
fn read_up_to(
    reader: &mut impl std::io::Read,
    bytes: &mut Vec<u8>,
    len: usize,
    path: &Path,
) -> Result<()> {
    let missing = len.saturating_sub(bytes.len()) as u64;
    reader
        .take(missing)
        .read_to_end(bytes)
        .map_err(|e| MobaError::io(path, e))?;
    Ok(())
}

/// Writes `data` with `shape` to a `.npy` file (version 1.0).
pub fn write<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    std::fs::write(path, encode(shape, data)).map_err(|e| MobaError::io(path, e))
}

/// The bytes of a `.npy` file holding `data` with `shape`.
pub fn encode<T: Element>(shape: &[usize], data: &[T]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {tuple}, }}",
        T::DESCR
    );
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes =
        Vec::with_capacity(MAGIC.len() + 4 + header.len() + std::mem::size_of_val(data));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(bytemuck::cast_slice(data));
    bytes
}

/// Parses the bytes of a `.npy` file.
pub fn decode<T: Element>(bytes: &[u8]) -> Result<Array<T>, String> {
    let header_end = header_end(bytes)?;
    let header = parse_header::<T>(bytes)?;
    let expected = header.data_bytes::<T>()?;
    let payload = &bytes[header_end..];
    if payload.len() != expected {
        return Err(format!(
            "shape {:?} needs {expected} data bytes, file has {}",
            header.shape,
            payload.len()
        ));
    }
    Ok(Array {
        shape: header.shape,
        data: bytemuck::pod_collect_to_vec(payload),
    })
}

/// What a `.npy` header declares.
struct Header {
    shape: Vec<usize>,
}

impl Header {
    /// Bytes of data the shape needs, or an error where that overflows.
    fn data_bytes<T: Element>(&self) -> Result<usize, String> {
        self.shape
            .iter()
            .try_fold(std::mem::size_of::<T>(), |bytes, &dim| {
                bytes.checked_mul(dim)
            })
            .ok_or_else(|| {
                format!(
                    "shape {:?} declares more data than this machine can address",
                    self.shape
                )
            })
    }
}

/// Where the header of `bytes` (at least its first 12 bytes) ends and the data begins.
fn header_end(bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "header of {header_len} bytes (NumPy writes a few hundred; at most {MAX_HEADER_BYTES} are read)"
        ));
    }
    Ok(header_start + header_len)
}

/// The dtype, order and shape of the header in `bytes` (which hold it whole).
fn parse_header<T: Element>(bytes: &[u8]) -> Result<Header, String> {
    let end = header_end(bytes)?;
    let start = if bytes[6] == 1 { 10 } else { 12 };
    let header = bytes
        .get(start..end)
        .ok_or("header runs past the end of the file")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = quoted_value(header, "descr").ok_or("header has no 'descr'")?;
    if descr != T::DESCR {
        return Err(format!(
            "dtype '{descr}' where '{}' is needed (convert with .astype)",
            T::DESCR
        ));
    }
    if header_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported (use np.ascontiguousarray)".into());
    }
    let shape = parse_shape(header).ok_or("header has no readable 'shape'")?;
    Ok(Header { shape })
}

/// The text after `'key':` in the header dict.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn quoted_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = header_value(header, key)?.strip_prefix('\'')?;
    Some(&rest[..rest.find('\'')?])
}

fn parse_shape(header: &str) -> Option<Vec<usize>> {
    let rest = header_value(header, "shape")?.strip_prefix('(')?;
    let inside = &rest[..rest.find(')')?];
    inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_f32_and_i32() {
        let data = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0];
        let bytes = encode(&[2, 3], &data);
        assert_eq!((bytes.len() - 24) % 64, 0, "header padded to 64 bytes");
        assert_eq!(
            decode::<f32>(&bytes).unwrap(),
            Array {
                shape: vec![2, 3],
                data: data.to_vec()
            }
        );
        let ids = [3i32, -1];
        assert_eq!(decode::<i32>(&encode(&[2], &ids)).unwrap().data, ids);
    }

    #[test]
    fn reads_numpy_written_headers() {
        // The header NumPy writes for np.zeros((1, 2), np.float32), version 1.0.
        let mut bytes = MAGIC.to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }";
        let header = format!("{header:<117}\n");
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(bytemuck::cast_slice(&[1.0f32, 2.0]));
        assert_eq!(decode::<f32>(&bytes).unwrap().shape, vec![1, 2]);
    }

    #[test]
    fn rejects_wrong_dtype_order_and_length() {
        let bytes = encode(&[2], &[1.0f32, 2.0]);
        assert!(decode::<i32>(&bytes).unwrap_err().contains("dtype"));
        let fortran = String::from_utf8_lossy(&bytes).replace("False", "True ");
        assert!(decode::<f32>(fortran.as_bytes()).is_err());
        assert!(
            decode::<f32>(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("data bytes")
        );
        assert!(decode::<f32>(b"not numpy").is_err());
    }

    /// A file's bytes with a hand-written shape in the header and `data` after it.
    fn with_shape(shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn refuses_a_declared_size_that_overflows() {
        // 4611686018427387905 * 2 * 256 * 64 * 4 wraps to 131072 in 64-bit arithmetic.
        let bytes = with_shape("(4611686018427387905, 2, 256, 64)", &[0; 131_072]);
        let error = decode::<f32>(&bytes).unwrap_err();
        assert!(
            error.contains("more data than this machine can address"),
            "{error}"
        );
        let dir = std::env::temp_dir().join(format!("moba-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("overflow.npy");
        std::fs::write(&path, &bytes).unwrap();
        let error = read::<f32>(&path).unwrap_err().to_string();
        assert!(
            error.contains("more data than this machine can address"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_file_shorter_or_longer_than_its_header_says_is_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("moba-npy-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.npy");
        // Declares 4 TB of data: refused from the file's size, nothing allocated.
        std::fs::write(&path, with_shape("(1000000000000,)", &[0; 16])).unwrap();
        let error = read::<f32>(&path).unwrap_err().to_string();
        assert!(
            error.contains("needs 4000000000000 data bytes, file has 16"),
            "{error}"
        );
        std::fs::write(&path, with_shape("(2,)", &[0; 12])).unwrap();
        let error = read::<f32>(&path).unwrap_err().to_string();
        assert!(error.contains("needs 8 data bytes, file has 12"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_stream_is_refused_without_reading_it_all() {
        let error = read::<f32>(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("bad magic"), "{error}");
        // Pipes have no size to check: a valid header that declares 4 TB is refused from the
        // host's memory, and a longer stream than declared from its first extra byte.
        let dir = std::env::temp_dir().join(format!("moba-npy-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (shape, expected) in [
            ("(1000000000000,)", "host memory"),
            ("(2,)", "needs 8 data bytes, file has 9 or more"),
        ] {
            let pipe = dir.join("pipe.npy");
            std::fs::remove_file(&pipe).ok();
            let made = std::process::Command::new("mkfifo")
                .arg(&pipe)
                .status()
                .unwrap();
            assert!(made.success());
            let writer = {
                let (pipe, bytes) = (pipe.clone(), with_shape(shape, &[7; 4096]));
                // Writes until the reader closes the pipe (an endless stream, as far as the
                // reader can tell), then fails on the broken pipe.
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut file = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
                    if file.write_all(&bytes).is_ok() {
                        while file.write_all(&[7; 4096]).is_ok() {}
                    }
                })
            };
            let error = read::<f32>(&pipe).unwrap_err().to_string();
            assert!(error.contains(expected), "{shape}: {error}");
            writer.join().unwrap();
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_oversized_header_length_is_refused() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = decode::<f32>(&bytes).unwrap_err();
        assert!(error.contains("header of 4294967295 bytes"), "{error}");
    }
}
