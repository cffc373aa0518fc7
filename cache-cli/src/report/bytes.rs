//! Byte counts for people.

/// `bytes` in B, kB, MB or GB (decimal): `12 B`, `640.0 kB`, `21.2 MB`.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_in_its_unit() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(200_060), "200.1 kB");
        assert_eq!(human_bytes(21_200_000), "21.2 MB");
        assert_eq!(human_bytes(3_000_000_000), "3.00 GB");
    }
}
