//! Minimal `.npy` (NumPy array file) reading and writing: little-endian f32 and i32,
//! C order, versions 1.0 to 3.0. Anything else is a clear error, never a guess.

use std::path::Path;

use bytemuck::Pod;

use crate::error::{MobaError, Result};

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

/// Reads an array of `T` from a `.npy` file.
pub fn read<T: Element>(path: &Path) -> Result<Array<T>> {
    let bytes = std::fs::read(path).map_err(|e| MobaError::io(path, e))?;
    decode(&bytes).map_err(|message| MobaError::Npy {
        path: path.display().to_string(),
        message,
    })
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
    let header = bytes
        .get(header_start..header_start + header_len)
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
    let payload = &bytes[header_start + header_len..];
    let count: usize = shape.iter().product();
    let expected = count * std::mem::size_of::<T>();
    if payload.len() != expected {
        return Err(format!(
            "shape {shape:?} needs {expected} data bytes, file has {}",
            payload.len()
        ));
    }
    Ok(Array {
        shape,
        data: bytemuck::pod_collect_to_vec(payload),
    })
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
}
