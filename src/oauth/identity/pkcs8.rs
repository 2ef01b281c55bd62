//! The two PKCS#8 conversions the JOSE crate needs (RFC 5208, RFC 5915): the RSA key inside a
//! PKCS#8 `PrivateKeyInfo` (it signs with PKCS#1 only), and a SEC1 EC key wrapped as PKCS#8
//! (it reads EC keys as PKCS#8 only). DER with definite lengths, nothing more.

/// DER of the OID of P-256 (1.2.840.10045.3.1.7).
pub const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID of P-384 (1.3.132.0.34).
pub const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-ecPublicKey (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;

/// The `privateKey` OCTET STRING's content of a PKCS#8 `PrivateKeyInfo` (for RSA: the PKCS#1
/// `RSAPrivateKey`).
pub fn inner_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, info, _) = element(pkcs8)? else {
        return None;
    };
    let (INTEGER, _version, rest) = element(info)? else {
        return None;
    };
    let (SEQUENCE, _algorithm, rest) = element(rest)? else {
        return None;
    };
    let (OCTET_STRING, key, _) = element(rest)? else {
        return None;
    };
    Some(key)
}

/// A SEC1 `ECPrivateKey` as a PKCS#8 v1 `PrivateKeyInfo` for the curve whose OID (DER) is
/// `curve`.
pub fn from_sec1(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let mut algorithm = EC_PUBLIC_KEY.to_vec();
    algorithm.extend_from_slice(curve);
    let mut info = vec![INTEGER, 1, 0];
    info.extend(wrap(SEQUENCE, &algorithm));
    info.extend(wrap(OCTET_STRING, sec1));
    wrap(SEQUENCE, &info)
}

/// One DER element: its tag, its content and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `tag`, the DER length of `content`, and `content`.
fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 70_000] {
            let content = vec![7u8; len];
            let der = wrap(OCTET_STRING, &content);
            let (tag, got, rest) = element(&der).unwrap();
            assert_eq!((tag, got.len(), rest.len()), (OCTET_STRING, len, 0));
        }
        assert!(
            element(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none(),
            "5 length bytes"
        );
        assert!(element(&[0x30, 0x05, 1, 2]).is_none(), "truncated");
    }

    #[test]
    fn a_sec1_key_wrapped_is_read_back() {
        let sec1 = [0x30, 0x03, 0x02, 0x01, 0x01];
        let pkcs8 = from_sec1(&sec1, P256);
        assert_eq!(inner_key(&pkcs8), Some(&sec1[..]));
    }
}
