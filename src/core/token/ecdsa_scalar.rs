//! ECDSA keys that ssh-key 0.6.7 cannot read as OpenSSH wrote them.
//!
//! OpenSSH stores an ECDSA private scalar as an SSH `mpint`, which is
//! minimal: a scalar whose first byte is zero is written one byte (or more)
//! short. ssh-key 0.6.7 (`private/ecdsa.rs`, `EcdsaPrivateKey::decode`) reads
//! exactly the field size, or one byte more with a leading zero, so the
//! shorter form fails with "length invalid": about one P-256 or P-384 key in
//! 256, and for P-521 (whose top byte is 0 or 1) measured 9 keys in 40 from
//! `ssh-keygen -t ecdsa -b 521`. Such a key is valid: the same number
//! left-padded with zeros to the field size is what ssh-key expects. Here the
//! private section is re-encoded that way (nothing else changes: checkints,
//! public point, comment) and handed back to ssh-key.
//!
//! Pure byte handling; the caller keeps the key material's lifetime short.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ssh_key::PrivateKey;
use ssh_key::private::KeypairData;

const MAGIC: &[u8] = b"openssh-key-v1\0";
const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
/// Block size of the `none` cipher: the private section is padded to it.
const PLAIN_BLOCK: usize = 8;

/// Reads SSH wire-format fields from a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(s)
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    // Every field here comes from a key file already held in memory, far
    // below 4 GiB; a longer one cannot have been read by `Reader`.
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The scalar's byte length for an OpenSSH ECDSA curve name.
fn field_size(curve: &[u8]) -> Option<usize> {
    match curve {
        b"nistp256" => Some(32),
        b"nistp384" => Some(48),
        b"nistp521" => Some(66),
        _ => None,
    }
}

/// The decrypted private section (two checkints, key type, curve, public
/// point, scalar, comment, padding) with the scalar left-padded to the
/// field size; `None` when this is not an ECDSA key with a short scalar,
/// or the checkints differ (a wrong passphrase decrypts to noise).
fn padded_private_section(section: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader(section);
    let (check1, check2) = (r.u32()?, r.u32()?);
    if check1 != check2 {
        return None;
    }
    let kind = r.string()?;
    if !kind.starts_with(b"ecdsa-sha2-") {
        return None;
    }
    let curve = r.string()?;
    let size = field_size(curve)?;
    let point = r.string()?;
    let scalar = r.string()?;
    let comment = r.string()?;
    if scalar.is_empty() || scalar.len() >= size {
        return None;
    }
    let mut out = Vec::with_capacity(section.len() + size);
    out.extend_from_slice(&check1.to_be_bytes());
    out.extend_from_slice(&check2.to_be_bytes());
    put_string(&mut out, kind);
    put_string(&mut out, curve);
    put_string(&mut out, point);
    let mut padded = vec![0u8; size - scalar.len()];
    padded.extend_from_slice(scalar);
    put_string(&mut out, &padded);
    padded.fill(0);
    put_string(&mut out, comment);
    let mut pad = 1u8;
    while out.len() % PLAIN_BLOCK != 0 {
        out.push(pad);
        pad += 1;
    }
    Some(out)
}

/// An unencrypted OpenSSH private key file holding `public` and `section`.
fn unencrypted_file(public: &[u8], section: &[u8]) -> String {
    let mut blob = MAGIC.to_vec();
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"");
    blob.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut blob, public);
    put_string(&mut blob, section);
    let body = STANDARD.encode(&blob);
    blob.fill(0);
    let mut text = String::from(BEGIN);
    text.push('\n');
    for line in body.as_bytes().chunks(70) {
        // base64 output is ASCII.
        text.extend(line.iter().map(|&b| b as char));
        text.push('\n');
    }
    text.push_str(END);
    text.push('\n');
    text
}

fn parse_repaired(public: &[u8], section: &[u8]) -> Option<PrivateKey> {
    let mut padded = padded_private_section(section)?;
    let text = unencrypted_file(public, &padded);
    padded.fill(0);
    let key = PrivateKey::from_openssh(&text).ok();
    text.into_bytes().fill(0);
    key
}

/// An unencrypted key file ssh-key refused, read with its scalar padded;
/// `None` when the file is not an unencrypted short-scalar ECDSA key.
pub(super) fn repaired(text: &str) -> Option<PrivateKey> {
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = text[start..].find(END)? + start;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut blob = STANDARD.decode(body).ok()?;
    let key = (|| {
        let mut r = Reader(blob.strip_prefix(MAGIC)?);
        let (cipher, kdf, _options) = (r.string()?, r.string()?, r.string()?);
        if cipher != b"none" || kdf != b"none" || r.u32()? != 1 {
            return None;
        }
        let public = r.string()?;
        parse_repaired(public, r.string()?)
    })();
    blob.fill(0);
    key
}

/// An encrypted key whose decryption ssh-key could not decode, decrypted
/// with ssh-key's own KDF and cipher and read with its scalar padded;
/// `None` for anything else (a wrong passphrase included). Ciphers with an
/// authentication tag (`aes256-gcm`) are not handled: ssh-key does not
/// expose the tag (ssh-keygen's default, `aes256-ctr`, has none).
pub(super) fn repaired_decrypted(key: &PrivateKey, passphrase: &[u8]) -> Option<PrivateKey> {
    let KeypairData::Encrypted(ciphertext) = key.key_data() else {
        return None;
    };
    if key.cipher().has_tag() {
        return None;
    }
    let (secret, iv) = key.kdf().derive_key_and_iv(key.cipher(), passphrase).ok()?;
    let mut buffer = ciphertext.clone();
    let decrypted = key
        .cipher()
        .decrypt(&secret, &iv, &mut buffer, None)
        .is_ok();
    let repaired = decrypted
        .then(|| parse_repaired(&key.public_key().to_bytes().ok()?, &buffer))
        .flatten();
    buffer.fill(0);
    repaired
}

#[cfg(test)]
mod tests {
    use super::*;

    // Throw-away keys made with `ssh-keygen -t ecdsa -b N -N ''` (the
    // encrypted one then `ssh-keygen -p -N fixture-pass`), kept because
    // their scalars start with a zero byte: one key in 256 for P-256/P-384.
    const P256: &str = include_str!("testdata/ecdsa-p256-short-scalar");
    const P384: &str = include_str!("testdata/ecdsa-p384-short-scalar");
    const P521: &str = include_str!("testdata/ecdsa-p521-short-scalar");
    const P256_ENCRYPTED: &str = include_str!("testdata/ecdsa-p256-short-scalar-encrypted");

    #[test]
    fn the_library_alone_refuses_these_keys() {
        // If a newer ssh-key reads them, this module can go.
        for text in [P256, P384, P521] {
            assert!(PrivateKey::from_openssh(text).is_err());
        }
    }

    #[test]
    fn short_scalars_are_read_and_sign_for_their_public_key() {
        for text in [P256, P384, P521] {
            let key = repaired(text).expect("repaired");
            let public = PublicKey::from_openssh(&key.public_key().to_openssh().unwrap()).unwrap();
            let sig = key
                .sign("test", ssh_key::HashAlg::Sha512, b"message")
                .expect("signs");
            public
                .verify("test", b"message", &sig)
                .expect("the padded scalar is the same key");
            assert_eq!(key.comment(), "short-scalar-fixture");
        }
    }

    #[test]
    fn an_encrypted_short_scalar_key_decrypts_and_a_wrong_passphrase_does_not() {
        let key = PrivateKey::from_openssh(P256_ENCRYPTED).unwrap();
        assert!(
            key.decrypt(b"fixture-pass").is_err(),
            "the library alone fails"
        );
        let plain = repaired_decrypted(&key, b"fixture-pass").expect("repaired");
        assert_eq!(plain.public_key().key_data(), key.public_key().key_data());
        assert!(repaired_decrypted(&key, b"wrong").is_none());
    }

    #[test]
    fn other_keys_and_other_text_are_left_alone() {
        let ed = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let text = ed.to_openssh(ssh_key::LineEnding::LF).unwrap();
        assert!(repaired(&text).is_none());
        assert!(repaired("not a key").is_none());
        assert!(repaired(&format!("{BEGIN}\n!!!\n{END}\n")).is_none());
        // A truncated blob never panics.
        let body: String = P256.lines().filter(|l| !l.starts_with("-----")).collect();
        for cut in (0..body.len()).step_by(7) {
            let text = format!("{BEGIN}\n{}\n{END}\n", &body[..cut - cut % 4]);
            let _ = repaired(&text);
        }
    }

    use ssh_key::PublicKey;
    use ssh_key::rand_core;
}
