//! Optional compression of the send stream before encryption.
//!
//! A homelab backup is bound by its upload link, so every byte saved is
//! time saved. zstd runs in this process, multi-threaded, between `zfs send`
//! and gpg; restore runs the decoder between gpg and `zfs recv`. The frames
//! are standard zstd with a content checksum, so
//! `cat chunks | gpg -d | zstd -d | zfs recv` restores with stock tools.
//!
//! Both directions stream through fixed-size buffers; memory does not grow
//! with the stream, only with zstd's window and worker count.

use std::io::{self, Read, Write};

use crate::model::{Compression, CompressionSettings};
use crate::stages::{ByteStream, Compressor, Started, ThreadStage};

/// Read size of the compressing and decompressing pumps.
const PUMP_BUFFER: usize = 1 << 20;

/// zstd workers: one per CPU. gpg and `zfs send` run in their own
/// processes, so the workers compete with them only where zstd is the
/// bottleneck anyway.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .try_into()
        .unwrap_or(1)
}

/// zstd in this process, as a [`Compressor`]: libzstd's multi-threaded
/// encoder, on a thread between the stages around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdCompressor {
    level: i32,
}

impl ZstdCompressor {
    /// Compresses at `level` (see [`crate::model::ZSTD_LEVELS`]).
    #[must_use]
    pub fn new(level: i32) -> Self {
        Self { level }
    }
}

/// The compressor `settings` ask for; `None` for no compression. On
/// restore, the level is of no account.
#[must_use]
pub fn compressor_for(settings: CompressionSettings) -> Option<Box<dyn Compressor>> {
    match settings.compression {
        Compression::None => None,
        Compression::Zstd => Some(Box::new(ZstdCompressor::new(settings.level))),
    }
}

impl Compressor for ZstdCompressor {
    fn describe(&self) -> String {
        format!("zstd -{} (in process)", self.level)
    }

    fn compress(&self, input: ByteStream) -> io::Result<Started<io::Error>> {
        let level = self.level;
        ThreadStage::start(self.describe(), input, move |mut input, output, stopped| {
            zstd_compress(&mut input, output, level, stopped).map(drop)
        })
    }

    fn decompress(&self, input: ByteStream) -> io::Result<Started<io::Error>> {
        // No stop check: the decoder ends when gpg before it or `zfs recv`
        // after it is stopped, and a restore stops them all together.
        ThreadStage::start("zstd -d (in process)", input, |input, mut output, _| {
            zstd_decompress(input, &mut output).map(drop)
        })
    }
}

/// Reads `input` to its end and writes it zstd-compressed to `output`,
/// finishing the frame. Returns the bytes read. `stop` is checked between
/// reads, so a stalled output can only be ended by closing it (the
/// caller's job: it kills the reading process).
///
/// # Errors
///
/// I/O errors of either side; a broken pipe means the consumer died, and
/// its own error is the one to report.
pub fn zstd_compress(
    input: &mut impl Read,
    output: impl Write,
    level: i32,
    stop: &dyn Fn() -> bool,
) -> io::Result<u64> {
    let mut encoder = zstd::stream::write::Encoder::new(output, level)?;
    encoder.include_checksum(true)?;
    encoder.multithread(zstd_workers())?;
    let mut buf = vec![0u8; PUMP_BUFFER];
    let mut total = 0u64;
    loop {
        if stop() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        encoder.write_all(&buf[..n])?;
        total += n as u64;
    }
    let mut output = encoder.finish()?;
    output.flush()?;
    Ok(total)
}

/// Reads zstd frames from `input` to its end and writes the decompressed
/// bytes to `output`. Returns the bytes written.
///
/// # Errors
///
/// I/O errors of either side, and corrupt or truncated frames.
pub fn zstd_decompress(input: impl Read, output: &mut impl Write) -> io::Result<u64> {
    let mut decoder = zstd::stream::read::Decoder::new(input)?;
    let mut buf = vec![0u8; PUMP_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
    output.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::Compression;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"log line: request served in 3 ms\n"[i % 33])
            .collect()
    }

    #[test]
    fn round_trip_is_identical_and_smaller_for_text() {
        let data = sample(3 << 20);
        let mut compressed = Vec::new();
        let read = zstd_compress(&mut data.as_slice(), &mut compressed, 3, &|| false).unwrap();
        assert_eq!(read, data.len() as u64);
        assert!(compressed.len() * 10 < data.len(), "{}", compressed.len());
        let mut out = Vec::new();
        zstd_decompress(compressed.as_slice(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_short_success() {
        let data: Vec<u8> = (0..2_000_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect();
        let mut compressed = Vec::new();
        zstd_compress(&mut data.as_slice(), &mut compressed, 3, &|| false).unwrap();
        compressed.truncate(compressed.len() - 10);
        let mut out = Vec::new();
        assert!(zstd_decompress(compressed.as_slice(), &mut out).is_err());
    }

    #[test]
    fn the_compressor_stages_round_trip_through_pipes() {
        let data = sample(3 << 20);
        let zstd = ZstdCompressor::new(3);
        let source = Started::<io::Error>::reading("data", io::Cursor::new(data.clone()));
        let compress = zstd.compress(source.output).unwrap();
        let decompress = zstd.decompress(compress.output).unwrap();
        assert!(matches!(decompress.output, ByteStream::Pipe(_)));
        let mut out = Vec::new();
        let mut output = decompress.output;
        output.read_to_end(&mut out).unwrap();
        drop(output);
        decompress.stage.wait().unwrap();
        compress.stage.wait().unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn stop_ends_the_pump() {
        let data = sample(1 << 16);
        let err = zstd_compress(&mut data.as_slice(), Vec::new(), 3, &|| true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn manifest_names() {
        assert_eq!(Compression::from_manifest("").unwrap(), Compression::None);
        assert_eq!(
            Compression::from_manifest("zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(Compression::from_manifest("lz4").unwrap_err(), "lz4");
    }
}
