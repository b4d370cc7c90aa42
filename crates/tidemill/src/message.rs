//! The unit that travels through every pub/sub: [`Message`], its [`Metadata`] and its in-process
//! [`Extensions`].

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A message: an id, a payload and string metadata.
///
/// Cloning is cheap: the id, the payload and the metadata are reference counted, and metadata is
/// copied only when a clone changes it.
///
/// # Example
///
/// ```
/// use tidemill::Message;
///
/// let mut msg = Message::new("hello");
/// msg.metadata_mut().set("kind", "greeting");
/// assert_eq!(msg.payload().as_ref(), b"hello");
/// assert_eq!(msg.metadata().get("kind"), Some("greeting"));
/// assert_eq!(msg.id().len(), 36); // a UUID by default
/// ```
#[derive(Clone)]
pub struct Message {
    id: Id,
    payload: Bytes,
    metadata: Metadata,
    extensions: Extensions,
}

impl Message {
    /// Creates a message with a fresh UUID (v4) as its id.
    ///
    /// ```
    /// let msg = tidemill::Message::new(vec![1, 2, 3]);
    /// assert_eq!(msg.payload().len(), 3);
    /// ```
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            id: Id::fresh(),
            payload: payload.into(),
            metadata: Metadata::new(),
            extensions: Extensions::new(),
        }
    }

    /// Creates a message with the given id.
    ///
    /// ```
    /// let msg = tidemill::Message::with_id("order-1", "{}");
    /// assert_eq!(msg.id(), "order-1");
    /// ```
    pub fn with_id(id: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: Id::given(id.into()),
            payload: payload.into(),
            metadata: Metadata::new(),
            extensions: Extensions::new(),
        }
    }

    /// The message id.
    pub fn id(&self) -> &str {
        self.id.text()
    }

    /// The id as a shared string, cheap to clone.
    ///
    /// ```
    /// let msg = tidemill::Message::with_id("a", "");
    /// let id: std::sync::Arc<str> = msg.shared_id();
    /// assert_eq!(&*id, "a");
    /// ```
    pub fn shared_id(&self) -> Arc<str> {
        self.id.text_shared().clone()
    }

    /// Replaces the id.
    ///
    /// ```
    /// let mut msg = tidemill::Message::new("");
    /// msg.set_id("fixed");
    /// assert_eq!(msg.id(), "fixed");
    /// ```
    pub fn set_id(&mut self, id: impl Into<Arc<str>>) {
        self.id = Id::given(id.into());
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Replaces the payload.
    ///
    /// ```
    /// let mut msg = tidemill::Message::new("a");
    /// msg.set_payload("b");
    /// assert_eq!(msg.payload().as_ref(), b"b");
    /// ```
    pub fn set_payload(&mut self, payload: impl Into<Bytes>) {
        self.payload = payload.into();
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, to change it.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Sets one metadata entry and returns the message, for building messages in one expression.
    ///
    /// ```
    /// let msg = tidemill::Message::new("x").with_metadata("a", "1").with_metadata("b", "2");
    /// assert_eq!(msg.metadata().len(), 2);
    /// ```
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.set(key, value);
        self
    }

    /// Values that travel with the message inside this process only, never on the wire.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The in-process values, to change them.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Splits the message into id, payload and metadata (dropping extensions), e.g. to encode it.
    ///
    /// ```
    /// let (id, payload, metadata) = tidemill::Message::with_id("1", "p").into_parts();
    /// assert_eq!(&*id, "1");
    /// assert_eq!(payload.as_ref(), b"p");
    /// assert!(metadata.is_empty());
    /// ```
    pub fn into_parts(self) -> (Arc<str>, Bytes, Metadata) {
        let id = self.id.text_shared().clone();
        (id, self.payload, self.metadata)
    }

    /// Builds a message from decoded parts.
    ///
    /// ```
    /// use tidemill::{Message, Metadata};
    /// let msg = Message::from_parts("1", "p", Metadata::from_iter([("k", "v")]));
    /// assert_eq!(msg.metadata().get("k"), Some("v"));
    /// ```
    pub fn from_parts(
        id: impl Into<Arc<str>>,
        payload: impl Into<Bytes>,
        metadata: Metadata,
    ) -> Self {
        Self {
            id: Id::given(id.into()),
            payload: payload.into(),
            metadata,
            extensions: Extensions::new(),
        }
    }

    /// Whether two messages carry the same id, payload and metadata (extensions are not compared).
    ///
    /// ```
    /// let a = tidemill::Message::with_id("1", "p").with_metadata("k", "v");
    /// assert!(a.same_content(&a.clone()));
    /// ```
    pub fn same_content(&self, other: &Message) -> bool {
        self.id() == other.id() && self.payload == other.payload && self.metadata == other.metadata
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is left out on purpose: it may hold personal data and is often large.
        f.debug_struct("Message")
            .field("id", &self.id())
            .field("payload_len", &self.payload.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// A message id. A fresh one is a random UUID kept as a number and written out only when
/// first read: a message that crosses the process without anyone asking its id costs no
/// formatting and no allocation for it.
#[derive(Clone)]
struct Id {
    uuid: u128,
    text: OnceLock<Arc<str>>,
}

impl Id {
    fn fresh() -> Self {
        Self {
            uuid: uuid::Uuid::new_v4().as_u128(),
            text: OnceLock::new(),
        }
    }

    fn given(text: Arc<str>) -> Self {
        Self {
            uuid: 0,
            text: OnceLock::from(text),
        }
    }

    fn text_shared(&self) -> &Arc<str> {
        self.text
            .get_or_init(|| format_uuid(uuid::Uuid::from_u128(self.uuid)))
    }

    fn text(&self) -> &str {
        self.text_shared()
    }
}

fn format_uuid(uuid: uuid::Uuid) -> Arc<str> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(&*uuid.hyphenated().encode_lower(&mut buf))
}

/// A new random UUID (v4) in its hyphenated form, the default message id.
///
/// ```
/// assert_eq!(tidemill::new_uuid().len(), 36);
/// ```
pub fn new_uuid() -> Arc<str> {
    format_uuid(uuid::Uuid::new_v4())
}

/// String key/value pairs that travel with a message through every broker.
///
/// Empty metadata allocates nothing; a clone shares the map until one side changes it.
///
/// ```
/// use tidemill::Metadata;
///
/// let mut md = Metadata::new();
/// md.set("correlation_id", "c-1");
/// assert_eq!(md.get("correlation_id"), Some("c-1"));
/// assert_eq!(md.remove("correlation_id").as_deref(), Some("c-1"));
/// assert!(md.is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    map: Option<Arc<BTreeMap<String, String>>>,
}

impl Metadata {
    /// Empty metadata.
    pub const fn new() -> Self {
        Self { map: None }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether `key` is set.
    ///
    /// ```
    /// let md = tidemill::Metadata::from_iter([("a", "1")]);
    /// assert!(md.contains_key("a"));
    /// ```
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        Arc::make_mut(self.map.get_or_insert_with(Default::default))
            .insert(key.into(), value.into());
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let map = self.map.as_mut()?;
        if !map.contains_key(key) {
            return None;
        }
        Arc::make_mut(map).remove(key)
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, sorted by key.
    ///
    /// ```
    /// let md = tidemill::Metadata::from_iter([("b", "2"), ("a", "1")]);
    /// let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Copies every entry of `other` into this metadata, replacing values of keys set in both.
    ///
    /// ```
    /// let mut a = tidemill::Metadata::from_iter([("a", "1")]);
    /// a.extend_from(&tidemill::Metadata::from_iter([("b", "2")]));
    /// assert_eq!(a.len(), 2);
    /// ```
    pub fn extend_from(&mut self, other: &Metadata) {
        for (k, v) in other.iter() {
            self.set(k, v);
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            map: (!map.is_empty()).then(|| Arc::new(map)),
        }
    }
}

/// One extension value, by its type.
type Entry = (TypeId, Arc<dyn Any + Send + Sync>);

/// Typed values that travel with a message inside this process and never go on the wire: a
/// database transaction handle, a decoded value, a span.
///
/// ```
/// let mut msg = tidemill::Message::new("");
/// msg.extensions_mut().insert(42u32);
/// assert_eq!(msg.extensions().get::<u32>(), Some(&42));
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    values: Values,
}

/// A message usually carries one extension (the router's handler context), held inline so
/// that adding it allocates nothing; more go into a short shared list, searched in order.
#[derive(Clone, Default)]
enum Values {
    #[default]
    None,
    One(Arc<dyn Any + Send + Sync>),
    Many(Arc<Vec<Entry>>),
}

impl Extensions {
    /// No values.
    pub const fn new() -> Self {
        Self {
            values: Values::None,
        }
    }

    /// Stores a value of type `T`, replacing the previous one of that type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.insert_shared(Arc::new(value));
    }

    /// Stores a value already shared, without copying it.
    pub(crate) fn insert_shared<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        let id = TypeId::of::<T>();
        match &mut self.values {
            Values::None => self.values = Values::One(value),
            Values::One(v) if (**v).type_id() == id => *v = value,
            Values::One(first) => {
                let first = ((**first).type_id(), first.clone());
                let list = vec![first, (id, value as Arc<dyn Any + Send + Sync>)];
                self.values = Values::Many(Arc::new(list));
            }
            Values::Many(list) => {
                let list = Arc::make_mut(list);
                match list.iter_mut().find(|(t, _)| *t == id) {
                    Some(slot) => slot.1 = value,
                    None => list.push((id, value)),
                }
            }
        }
    }

    /// The value of type `T`, if any.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        match &self.values {
            Values::None => None,
            Values::One(v) => v.downcast_ref(),
            Values::Many(list) => {
                let id = TypeId::of::<T>();
                list.iter()
                    .find(|(t, _)| *t == id)
                    .and_then(|(_, v)| v.downcast_ref())
            }
        }
    }

    fn len(&self) -> usize {
        match &self.values {
            Values::None => 0,
            Values::One(_) => 1,
            Values::Many(list) => list.len(),
        }
    }

    /// Removes the value of type `T`; reports whether there was one.
    ///
    /// ```
    /// let mut ext = tidemill::Extensions::new();
    /// ext.insert("x");
    /// assert!(ext.remove::<&str>());
    /// assert!(!ext.remove::<&str>());
    /// ```
    pub fn remove<T: Any + Send + Sync>(&mut self) -> bool {
        let id = TypeId::of::<T>();
        match &mut self.values {
            Values::One(v) if (**v).type_id() == id => {
                self.values = Values::None;
                true
            }
            Values::Many(list) if list.iter().any(|(t, _)| *t == id) => {
                Arc::make_mut(list).retain(|(t, _)| *t != id);
                true
            }
            _ => false,
        }
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_shares_until_changed() {
        let mut a = Message::new("p").with_metadata("k", "v");
        let b = a.clone();
        a.metadata_mut().set("k", "w");
        assert_eq!(b.metadata().get("k"), Some("v"));
        assert_eq!(a.metadata().get("k"), Some("w"));
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn ids_are_unique_uuids() {
        let a = Message::new("");
        let b = Message::new("");
        assert_ne!(a.id(), b.id());
        assert!(uuid::Uuid::parse_str(a.id()).is_ok());
    }

    #[test]
    fn extensions_stay_out_of_content() {
        let mut a = Message::with_id("1", "p");
        let b = a.clone();
        a.extensions_mut().insert(5u8);
        assert!(a.same_content(&b));
        assert!(b.extensions().is_empty());
    }

    #[test]
    fn debug_hides_payload() {
        let msg = Message::with_id("1", "secret");
        assert!(!format!("{msg:?}").contains("secret"));
    }

    #[test]
    fn several_extensions_replace_and_remove_by_type() {
        let mut ext = Extensions::new();
        ext.insert(1u8);
        ext.insert(2u8);
        ext.insert("s");
        ext.insert(3u32);
        let copy = ext.clone();
        ext.insert(4u32);
        assert_eq!(ext.get::<u8>(), Some(&2));
        assert_eq!(ext.get::<&str>(), Some(&"s"));
        assert_eq!(ext.get::<u32>(), Some(&4));
        assert_eq!(copy.get::<u32>(), Some(&3));
        assert!(ext.remove::<u8>());
        assert_eq!(ext.get::<u8>(), None);
        assert_eq!(ext.get::<u32>(), Some(&4));
        let mut one = Extensions::new();
        one.insert(5u8);
        assert!(!one.remove::<u32>());
        assert!(one.remove::<u8>());
        assert!(one.is_empty());
    }
}
