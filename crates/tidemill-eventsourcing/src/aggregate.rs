//! [`Aggregate`]: state rebuilt from its events, deciding commands into new events, and the
//! JSON codec between typed events and stored ones.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{EventMetadata, NewEvent, RecordedEvent};
use crate::upcast::Upcasters;

/// A consistency boundary whose state is the fold of its events.
///
/// `Event` must be an enum serialized with `#[serde(tag = "type", content = "data")]`: the
/// variant name is stored as the event type, `data` as the payload.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill_eventsourcing::Aggregate;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter { value: i64 }
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// enum CounterEvent { Added { by: i64 } }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the counter must stay under 10")]
/// struct TooBig;
///
/// impl Aggregate for Counter {
///     const CATEGORY: &'static str = "counter";
///     type Event = CounterEvent;
///     type Command = i64;
///     type Error = TooBig;
///     fn apply(&mut self, e: &CounterEvent) {
///         match e { CounterEvent::Added { by } => self.value += by }
///     }
///     fn handle(&self, by: i64) -> Result<Vec<CounterEvent>, TooBig> {
///         if self.value + by >= 10 { return Err(TooBig) }
///         Ok(vec![CounterEvent::Added { by }])
///     }
/// }
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream category: aggregate `42` lives in stream `<CATEGORY>-42`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// assert_eq!(tidemill_eventsourcing::Repository::<Counter>::stream_of("7"), "counter-7");
    /// ```
    const CATEGORY: &'static str;
    /// The snapshot schema version: snapshots stored under another version are ignored
    /// (bump it when the state's shape changes).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// assert_eq!(Counter::SNAPSHOT_VERSION, 1);
    /// ```
    const SNAPSHOT_VERSION: u32 = 1;
    /// The events.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// The commands.
    type Command: Send;
    /// Why a command is rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// let mut c = Counter::default();
    /// c.apply(&Ev::Added { by: 2 });
    /// assert_eq!(c.value, 2);
    /// ```
    fn apply(&mut self, event: &Self::Event);

    /// Decides a command into events (none: nothing to do), or rejects it.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// let c = Counter { value: 8 };
    /// assert!(c.handle(1).is_ok());
    /// assert!(c.handle(5).is_err());
    /// ```
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// The current schema version of an event type (stored with each event; older ones are
    /// upcast on read).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// assert_eq!(Counter::schema_version("Added"), 1);
    /// ```
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }
}

/// Encodes a typed event (an adjacently tagged enum) as a [`NewEvent`].
///
/// ```
/// # use serde::Serialize;
/// #[derive(Serialize)]
/// #[serde(tag = "type", content = "data")]
/// enum E { Renamed { name: String } }
/// let e = tidemill_eventsourcing::encode_event(&E::Renamed { name: "B".into() }, 1).unwrap();
/// assert_eq!(e.event_type, "Renamed");
/// assert_eq!(&e.payload[..], br#"{"name":"B"}"#);
/// ```
pub fn encode_event<E: Serialize>(event: &E, schema_version: u32) -> Result<NewEvent> {
    let bad = |m: String| {
        Error::Config(format!("events must serialize as {{\"type\", \"data\"}} (serde(tag = \"type\", content = \"data\")): {m}"))
    };
    let value = serde_json::to_value(event).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("not an object".into()));
    };
    let Some(Value::String(event_type)) = obj.remove("type") else {
        return Err(bad("no \"type\" string".into()));
    };
    let data = obj.remove("data").unwrap_or(Value::Null);
    let payload = serde_json::to_vec(&data).map_err(|e| bad(e.to_string()))?;
    Ok(NewEvent::new(event_type, payload)
        .schema_version(schema_version)
        .metadata(EventMetadata::default()))
}

/// Decodes a stored event into the typed event, upcasting its payload from its schema version
/// to `current_version`. Unknown types and undecodable payloads are typed errors naming the
/// stream, version and type.
///
/// ```
/// use serde::Deserialize;
/// use tidemill_eventsourcing::{decode_event, EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream, Upcasters};
///
/// #[derive(Debug, PartialEq, Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// enum E { Renamed { name: String } }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append("user-1", ExpectedVersion::Any, vec![NewEvent::new("Renamed", r#"{"name":"B"}"#)]).await?;
/// let record = &store.read_stream("user-1", ReadStream::forward()).await?[0];
/// let e: E = decode_event(record, &Upcasters::new(), 1)?;
/// assert_eq!(e, E::Renamed { name: "B".into() });
/// # Ok(()) }
/// ```
pub fn decode_event<E: DeserializeOwned>(
    record: &RecordedEvent,
    upcasters: &Upcasters,
    current_version: u32,
) -> Result<E> {
    let bad = |source: tidemill::BoxError| Error::Decode {
        stream: record.stream.clone(),
        version: record.version,
        event_type: record.event_type.clone(),
        schema_version: record.schema_version,
        source,
    };
    let data: Value = serde_json::from_slice(&record.payload).map_err(|e| bad(e.into()))?;
    let data = upcasters
        .upcast(
            &record.event_type,
            record.schema_version,
            current_version,
            data,
        )
        .map_err(bad)?;
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), Value::String(record.event_type.clone()));
    if !data.is_null() {
        obj.insert("data".into(), data);
    }
    serde_json::from_value(Value::Object(obj)).map_err(|e| {
        if e.to_string().starts_with("unknown variant") {
            Error::UnknownEventType {
                stream: record.stream.clone(),
                version: record.version,
                event_type: record.event_type.clone(),
            }
        } else {
            bad(e.into())
        }
    })
}
