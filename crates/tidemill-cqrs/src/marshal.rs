//! Marshalers: how commands, events and replies become payloads and back.
//!
//! [`JsonMarshaler`] is the default; [`ProtobufMarshaler`] (feature `protobuf`) encodes `prost`
//! messages. A marshaler is generic over the types it handles, so your own can cover whichever
//! types it likes:
//!
//! ```
//! use tidemill::BoxError;
//! use tidemill_cqrs::marshal::Marshaler;
//!
//! /// Plain UTF-8 text.
//! struct Text;
//!
//! impl Marshaler<String> for Text {
//!     fn marshal(&self, value: &String) -> Result<bytes::Bytes, BoxError> {
//!         Ok(bytes::Bytes::from(value.clone()))
//!     }
//!     fn unmarshal(&self, payload: &[u8]) -> Result<String, BoxError> {
//!         Ok(String::from_utf8(payload.to_vec())?)
//!     }
//!     fn content_type(&self) -> &'static str {
//!         "text/plain"
//!     }
//! }
//!
//! let payload = Text.marshal(&"hi".to_owned()).unwrap();
//! assert_eq!(Text.unmarshal(&payload).unwrap(), "hi");
//! ```

use bytes::Bytes;
use tidemill::BoxError;

/// Encodes values of type `T` into payloads and decodes them back.
///
/// Decoding must not panic on bad input: it returns an error, which the processors turn into
/// [`Error::Unmarshal`](crate::Error::Unmarshal) and a rejected message.
///
/// ```
/// use tidemill_cqrs::marshal::{JsonMarshaler, Marshaler};
///
/// let payload = JsonMarshaler.marshal(&vec![1, 2]).unwrap();
/// let back: Vec<i32> = JsonMarshaler.unmarshal(&payload).unwrap();
/// assert_eq!(back, [1, 2]);
/// ```
pub trait Marshaler<T>: Send + Sync + 'static {
    /// Encodes `value`.
    fn marshal(&self, value: &T) -> Result<Bytes, BoxError>;

    /// Decodes a payload.
    fn unmarshal(&self, payload: &[u8]) -> Result<T, BoxError>;

    /// The media type of the payloads, put in the metadata under
    /// [`CONTENT_TYPE_KEY`](crate::CONTENT_TYPE_KEY).
    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }
}

/// JSON through `serde_json`, for every `Serialize + DeserializeOwned` type.
///
/// ```
/// use tidemill_cqrs::marshal::{JsonMarshaler, Marshaler};
///
/// let payload = JsonMarshaler.marshal(&("a".to_owned(), 1)).unwrap();
/// assert_eq!(payload.as_ref(), br#"["a",1]"#);
/// assert!(Marshaler::<(String, i32)>::unmarshal(&JsonMarshaler, b"not json").is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonMarshaler;

impl<T> Marshaler<T> for JsonMarshaler
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn marshal(&self, value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }

    fn unmarshal(&self, payload: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(payload)?)
    }

    fn content_type(&self) -> &'static str {
        "application/json"
    }
}

/// Protocol Buffers through `prost`, for every `prost::Message + Default` type.
///
/// ```
/// use tidemill_cqrs::marshal::{Marshaler, ProtobufMarshaler};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct BookRoom {
///     #[prost(string, tag = "1")]
///     room: String,
/// }
///
/// let payload = ProtobufMarshaler.marshal(&BookRoom { room: "101".into() }).unwrap();
/// let back: BookRoom = ProtobufMarshaler.unmarshal(&payload).unwrap();
/// assert_eq!(back.room, "101");
/// ```
#[cfg(feature = "protobuf")]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtobufMarshaler;

#[cfg(feature = "protobuf")]
impl<T> Marshaler<T> for ProtobufMarshaler
where
    T: prost::Message + Default,
{
    fn marshal(&self, value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(value.encode_to_vec()))
    }

    fn unmarshal(&self, payload: &[u8]) -> Result<T, BoxError> {
        Ok(T::decode(payload)?)
    }

    fn content_type(&self) -> &'static str {
        "application/protobuf"
    }
}
