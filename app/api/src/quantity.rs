//! Kubernetes resource quantities as bytes: the one parser of the workspace (the control plane
//! sizes volumes and jobs with it, the admission rules check quantities with it, the test
//! kubelet sizes volume files with it).
//!
//! Accepted: a non-negative decimal number and an optional binary (`Ki` … `Ei`) or decimal
//! (`k` … `E`) suffix — the forms PVC sizes and `thresholdCapacity` take. Exponent forms
//! (`1e3`), signs and milli-units are refused (`None`): they never size bytes.

/// Bytes of a quantity (`10Gi`, `1500M`, `1.5Ki`, `4096`); `None` when it is not one of the
/// accepted forms or does not fit in a `u64`. Whole numbers are exact; a fraction is rounded
/// up to the next byte (`0.5Ki` is 512, `1.0001k` is 1001).
pub fn bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole.checked_mul(factor)?;
    if !fraction.trim_end_matches('0').is_empty() {
        // fraction × factor, exactly, rounded up: digits one by one (at most 19 matter).
        let digits = fraction.trim_end_matches('0');
        if digits.len() > 19 {
            return None;
        }
        let numerator: u128 = digits.parse().ok()?;
        let denominator: u128 = 10u128.pow(u32::try_from(digits.len()).ok()?);
        let part = (numerator * u128::from(factor)).div_ceil(denominator);
        total = total.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::bytes;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(bytes("10Gi"), Some(10 << 30));
        assert_eq!(bytes("16Mi"), Some(16 << 20));
        assert_eq!(bytes("1Ei"), Some(1 << 60));
        assert_eq!(bytes("1500M"), Some(1_500_000_000));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("4096"), Some(4096));
        assert_eq!(bytes(" 2k "), Some(2000));
    }

    #[test]
    fn fractions_round_up_to_whole_bytes() {
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("0.5Ki"), Some(512));
        assert_eq!(bytes(".5Ki"), Some(512));
        assert_eq!(bytes("1.0001k"), Some(1001));
        assert_eq!(bytes("1.25"), Some(2));
        assert_eq!(bytes("3.000"), Some(3));
        // Exact where a float would not be.
        assert_eq!(bytes("9007199254740993"), Some(9_007_199_254_740_993));
    }

    #[test]
    fn what_is_refused() {
        for bad in [
            "", "Mi", "x", "5Qi", "1Zi", "-1", "1e3", "100m", "1.2.3", ".", "1 Gi", "20E",
        ] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
        assert_eq!(bytes("18446744073709551615"), Some(u64::MAX));
        assert_eq!(bytes("18446744073709551616"), None);
    }
}
