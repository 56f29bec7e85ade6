//! `encryption = "none"`: the [`Encryptor`] that leaves the stream as it
//! is, so the chunks are the send stream itself (compressed, if
//! configured). Meant for raw sends, whose blocks ZFS native encryption
//! already encrypts; `cat chunks | zfs recv` restores them.

use super::error::GpgError;
use crate::stages::{ByteStream, Encryptor, Started};

/// The pass-through [`Encryptor`]: nothing runs, the next stage reads the
/// stream directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEncryption;

/// How [`NoEncryption`] describes itself in the pipeline's log line.
const DESCRIPTION: &str = "(no encryption: encryption = \"none\")";

impl Encryptor for NoEncryption {
    fn describe(&self) -> String {
        DESCRIPTION.to_owned()
    }

    fn encrypt(&self, input: ByteStream) -> Result<Started<GpgError>, GpgError> {
        Ok(Started::passing(DESCRIPTION, input))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;

    #[test]
    fn the_output_is_the_input_and_the_stage_succeeds() {
        let input = ByteStream::reader(&b"a zfs send stream"[..]);
        let Started { stage, mut output } = NoEncryption.encrypt(input).unwrap();
        let mut out = Vec::new();
        output.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"a zfs send stream");
        assert!(stage.describe().contains("no encryption"));
        stage.wait().unwrap();
    }
}
