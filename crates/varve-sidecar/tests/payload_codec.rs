//! `Payload` encoding: encode/decode round trips for any payload, and decoding arbitrary
//! bytes returns a value or an error but never panics.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use varve_sidecar::{BlobHash, Payload};

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Payload::Inline),
        any::<[u8; 32]>().prop_map(|h| Payload::BlobRef(BlobHash(h))),
    ]
}

proptest! {
    #[test]
    fn encode_decode_round_trip(p in payload(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let e = p.encode().unwrap();
        prop_assert_eq!(e.len(), p.encoded_len());
        prop_assert_eq!(Payload::decode(&e).unwrap(), p.clone());
        let mut longer = e.clone();
        longer.extend_from_slice(&tail);
        let (q, used) = Payload::decode_prefix(&longer).unwrap();
        prop_assert_eq!((q, used), (p, e.len()));
        if !tail.is_empty() {
            prop_assert!(Payload::decode(&longer).is_err());
        }
        // Every strict prefix is an error, never a different payload.
        for cut in 0..e.len() {
            prop_assert!(Payload::decode(&e[..cut]).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = Payload::decode(&bytes) {
            // Whatever decodes re-encodes to exactly the input (the encoding is canonical).
            prop_assert_eq!(&p.encode().unwrap(), &bytes);
        }
        let _ = Payload::decode_prefix(&bytes);
    }

    #[test]
    fn tagged_random_bytes_never_panic(tag in prop_oneof![Just(0x11u8), Just(0x12u8)],
                                       rest in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&rest);
        if let Ok(p) = Payload::decode(&bytes) {
            prop_assert_eq!(&p.encode().unwrap(), &bytes);
        }
    }
}
