//! calgate.v1's codec: prost's, with the wire pre-scan ([`super::wire_scan`])
//! run on every request before prost allocates anything for it.

use std::marker::PhantomData;

use prost::{Message, Name};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::{status, wire_scan::SHAPES};
use crate::domain::{Error, Violations};

/// prost's codec with a pre-scan of what it decodes (generated code names it
/// through `codec_path` in build.rs).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec { _types: PhantomData }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            inner: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// Scans, then decodes with prost.
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Name + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let name = U::full_name();
        // tonic hands the decoder one whole message, in one contiguous buffer.
        if let Err(refusal) = SHAPES.check(&name, bytes::Buf::chunk(buf)) {
            return Err(status::from_domain(Error::InvalidArgument(
                refusal.into_violations().into_inner(),
            )));
        }
        self.inner.decode(buf).map_err(|error| {
            // A request prost cannot decode is the caller's fault, not INTERNAL
            // (tonic's choice); prost's text names types and fields, never data.
            if !SHAPES.is_request(&name) {
                return error;
            }
            let mut violations = Violations::default();
            violations.add("request", format!("not valid protobuf: {}", error.message()));
            status::from_domain(Error::InvalidArgument(violations.into_inner()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
