//! Just enough DER to give a client certificate several `O=` attributes.
//!
//! kube-apiserver maps every `O` of a client certificate to a group, so test users need
//! certificates with several organizations. rcgen 0.13 keeps one value per attribute type
//! in a distinguished name (rustls/rcgen#81), so [`crate::pki`] lets rcgen build and sign
//! the certificate with a CN-only subject, then this module swaps in a hand-encoded subject
//! `Name` and re-signs the `TBSCertificate` with the CA's ECDSA P-256 key (ring). Only the
//! subject changes; serial, validity, extensions and the signature algorithm are kept.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use crate::Error;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_BIT_STRING: u8 = 0x03;
/// `[0] EXPLICIT Version` at the start of a v3 `TBSCertificate`.
const TAG_VERSION: u8 = 0xa0;
/// DER of OID 2.5.4.3 (commonName).
const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
/// DER of OID 2.5.4.10 (organizationName).
const OID_ORGANIZATION: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];

/// One parsed TLV: its tag, and where its whole encoding and its content lie in the input.
#[derive(Debug, Clone, Copy)]
struct Tlv {
    tag: u8,
    start: usize,
    content_start: usize,
    end: usize,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Encoding(msg.into())
}

/// Reads the TLV starting at `pos` (single-byte tags only, which is all X.509 uses here).
fn read_tlv(buf: &[u8], pos: usize) -> Result<Tlv, Error> {
    let tag = *buf.get(pos).ok_or_else(|| bad("truncated tag"))?;
    let first = *buf.get(pos + 1).ok_or_else(|| bad("truncated length"))?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad("unsupported length form"));
        }
        let bytes = buf
            .get(pos + 2..pos + 2 + n)
            .ok_or_else(|| bad("truncated long length"))?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let content_start = pos + header;
    let end = content_start
        .checked_add(len)
        .filter(|end| *end <= buf.len())
        .ok_or_else(|| bad("length beyond input"))?;
    Ok(Tlv {
        tag,
        start: pos,
        content_start,
        end,
    })
}

/// The direct children of a constructed TLV.
fn children(buf: &[u8], parent: Tlv) -> Result<Vec<Tlv>, Error> {
    let mut out = Vec::new();
    let mut pos = parent.content_start;
    while pos < parent.end {
        let child = read_tlv(buf, pos)?;
        pos = child.end;
        out.push(child);
    }
    Ok(out)
}

/// Appends a DER length.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits in seven bits, checked just above.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Encodes `tag || length || content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// One single-attribute RDN: `SET { SEQUENCE { oid, UTF8String value } }`.
fn rdn(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = oid.to_vec();
    atv.extend(tlv(TAG_UTF8_STRING, value.as_bytes()));
    tlv(TAG_SET, &tlv(TAG_SEQUENCE, &atv))
}

/// A subject `Name` with one `O` RDN per organization followed by the `CN`, the layout
/// `openssl req -subj /O=a/O=b/CN=c` produces and kube reads.
pub(crate) fn subject_name(common_name: &str, orgs: &[&str]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for org in orgs {
        rdns.extend(rdn(OID_ORGANIZATION, org));
    }
    rdns.extend(rdn(OID_COMMON_NAME, common_name));
    tlv(TAG_SEQUENCE, &rdns)
}

/// Replaces the subject of `cert_der` by `subject_der` and re-signs it with the ECDSA
/// P-256 key in `issuer_pkcs8` (the key that signed the original).
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject_der: &[u8],
    issuer_pkcs8: &[u8],
) -> Result<Vec<u8>, Error> {
    let cert = read_tlv(cert_der, 0)?;
    if cert.tag != TAG_SEQUENCE || cert.end != cert_der.len() {
        return Err(bad("certificate is not one SEQUENCE"));
    }
    let parts = children(cert_der, cert)?;
    let [tbs, sig_alg, _sig] = parts.as_slice() else {
        return Err(bad("certificate does not have three parts"));
    };
    let fields = children(cert_der, *tbs)?;
    let subject_index = match fields.first() {
        Some(first) if first.tag == TAG_VERSION => 5,
        Some(_) => 4,
        None => return Err(bad("empty TBSCertificate")),
    };
    let subject = fields
        .get(subject_index)
        .filter(|s| s.tag == TAG_SEQUENCE)
        .ok_or_else(|| bad("TBSCertificate has no subject Name"))?;

    let mut tbs_content = Vec::with_capacity(tbs.end - tbs.content_start + subject_der.len());
    tbs_content.extend_from_slice(&cert_der[tbs.content_start..subject.start]);
    tbs_content.extend_from_slice(subject_der);
    tbs_content.extend_from_slice(&cert_der[subject.end..tbs.end]);
    let new_tbs = tlv(TAG_SEQUENCE, &tbs_content);

    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, issuer_pkcs8, &rng)
        .map_err(|e| bad(format!("issuer key is not an ECDSA P-256 PKCS#8 key: {e}")))?;
    let signature = key
        .sign(&rng, &new_tbs)
        .map_err(|_| bad("signing the certificate failed"))?;
    let mut bit_string = vec![0u8]; // no unused bits
    bit_string.extend_from_slice(signature.as_ref());

    let mut content = new_tbs;
    content.extend_from_slice(&cert_der[sig_alg.start..sig_alg.end]);
    content.extend(tlv(TAG_BIT_STRING, &bit_string));
    Ok(tlv(TAG_SEQUENCE, &content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(TAG_SEQUENCE, &content);
            let parsed = read_tlv(&enc, 0).unwrap();
            assert_eq!(parsed.end, enc.len());
            assert_eq!(parsed.end - parsed.content_start, len);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(read_tlv(&[0x30], 0).is_err());
        assert!(read_tlv(&[0x30, 0x05, 0x00], 0).is_err());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1], 0).is_err());
    }
}
