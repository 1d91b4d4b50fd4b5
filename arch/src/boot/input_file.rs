//! Reading the files a user names (config, kernel, initrd) without trusting what they are:
//! only regular files are read, never FIFOs, devices or directories, and never more than a
//! limit, so a wrong path can neither hang the VMM nor make it allocate without bound.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file named as input was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    /// It could not be opened or examined.
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    /// It is not a regular file; the text says what it is.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// It is larger than allowed.
    #[error("is {len} bytes, more than the {max} allowed")]
    TooBig {
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Reading it failed, or it grew past the limit while being read.
    #[error("cannot read: {0}")]
    Read(String),
}

/// Reads all of the regular file at `path` if it holds at most `max_len` bytes. The error
/// says what is wrong without the path: callers name the file and its role.
pub fn read_regular_file(path: &Path, max_len: u64) -> Result<Vec<u8>, InputFileError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(InputFileError::Open)?;
    let meta = file.metadata().map_err(InputFileError::Open)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(InputFileError::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something else"
        }));
    }
    if meta.len() > max_len {
        return Err(InputFileError::TooBig {
            len: meta.len(),
            max: max_len,
        });
    }
    read_at_most(file, max_len)
}

/// Reads `file` to its end, refusing it if it has grown past `max_len` since it was checked.
fn read_at_most(file: File, max_len: u64) -> Result<Vec<u8>, InputFileError> {
    let mut data = Vec::new();
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| InputFileError::Read(e.to_string()))?;
    if data.len() as u64 > max_len {
        return Err(InputFileError::Read(format!(
            "it grew past the {max_len} bytes allowed while being read"
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("ember-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("small");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read_regular_file(&path, 5).unwrap(), b"hello");
        let e = read_regular_file(&path, 4).unwrap_err().to_string();
        assert!(e.contains("5 bytes") && e.contains("4 allowed"), "{e}");
        let e = read_regular_file(&dir, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let e = read_regular_file(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let dir = std::env::temp_dir().join(format!("ember-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let e = read_regular_file(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = read_regular_file(Path::new("/nonexistent/file"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot open"), "{e}");
    }
}
