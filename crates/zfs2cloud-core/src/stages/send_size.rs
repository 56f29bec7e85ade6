//! How big a send stream will be, for progress: `zfs send -nP` where zfs
//! has it (OpenZFS), otherwise a snapshot's `written@<base>` (an
//! incremental) or `referenced` (a full), which zfs-fuse has only in part.

/// The estimated stream size in the output of `zfs send -nP`: its
/// `size\t<bytes>` line. `None` if there is none.
#[must_use]
pub fn parse_send_estimate(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("size\t"))
        .find_map(|n| n.trim().parse().ok())
}

/// A size as `zfs get -H -o value` prints it: exact bytes with `-p`
/// (`67415928`), else abbreviated with a binary suffix (`64.3M`, `920K`,
/// `1.50G`); `None` for `-` or anything else.
#[must_use]
pub fn parse_zfs_size(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(bytes) = text.parse::<u64>() {
        return Some(bytes);
    }
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, suffix) = text.split_at(split);
    let shift = match suffix {
        "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    let value: f64 = number.parse().ok().filter(|v: &f64| *v >= 0.0)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    Some((value * (1u64 << shift) as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/send-size")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn the_size_line_of_zfs_send_n_p() {
        assert_eq!(
            parse_send_estimate(&fixture("openzfs-full.stdout")),
            Some(67_415_928)
        );
        assert_eq!(
            parse_send_estimate(&fixture("openzfs-incremental.stdout")),
            Some(8_406_416)
        );
        assert_eq!(
            parse_send_estimate(&fixture("openzfs-full-raw-compressed.stdout")),
            Some(1_151_256)
        );
    }

    #[test]
    fn no_size_line_is_no_estimate() {
        assert_eq!(parse_send_estimate(""), None);
        assert_eq!(parse_send_estimate("invalid option 'n'\nusage:\n"), None);
        assert_eq!(parse_send_estimate("size\tmany\n"), None);
        // The verbose form's per-snapshot line alone says nothing total.
        assert_eq!(parse_send_estimate("full\tp/d@s\t5\n"), None);
    }

    #[test]
    fn sizes_exact_and_abbreviated() {
        assert_eq!(parse_zfs_size("122880\n"), Some(122_880));
        assert_eq!(parse_zfs_size("920K"), Some(920 * 1024));
        assert_eq!(parse_zfs_size("1.50M"), Some(1_572_864));
        assert_eq!(parse_zfs_size("64.3M"), Some(67_423_437));
        assert_eq!(parse_zfs_size("2G"), Some(2 << 30));
        assert_eq!(parse_zfs_size("0"), Some(0));
        assert_eq!(parse_zfs_size("-"), None);
        assert_eq!(parse_zfs_size("1.5X"), None);
        assert_eq!(parse_zfs_size(""), None);
        assert_eq!(parse_zfs_size("-1M"), None);
    }
}
