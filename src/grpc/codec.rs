//! The protobuf codec of every generated service and client: tonic's prost codec with a small
//! encode buffer. Each open stream owns one encode buffer, so with thousands of WatchPayments
//! subscribers the default 8 KiB buffers dominate memory; our messages are well under 1 KiB (a
//! larger one grows its buffer as needed).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode buffer per call or stream.
const ENCODE_BUFFER: usize = 1024;
/// Flush once this much is buffered (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost codec with small per-stream encode buffers.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}
