//! Upcasting: turning payloads stored under an old schema version into the current one on
//! read, one version step at a time.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tidemill::BoxError;

type Step = Arc<dyn Fn(Value) -> Result<Value, BoxError> + Send + Sync>;

/// A chain of upcasters per event type: `(type, v)` turns a v payload into a v+1 payload.
///
/// ```
/// use serde_json::json;
/// use tidemill_eventsourcing::Upcasters;
///
/// // v1 had one "name"; v2 splits it.
/// let up = Upcasters::new().register("UserCreated", 1, |mut v| {
///     let name = v["name"].as_str().unwrap_or_default().to_owned();
///     let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
///     v = json!({ "first": first, "last": last });
///     Ok(v)
/// });
/// let v2 = up.upcast("UserCreated", 1, 2, json!({ "name": "Ada Lovelace" })).unwrap();
/// assert_eq!(v2, json!({ "first": "Ada", "last": "Lovelace" }));
/// assert!(up.upcast("UserCreated", 1, 3, json!({})).is_err()); // no v2 → v3 step
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters")
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Upcasters {
    /// No upcasters.
    ///
    /// ```
    /// let up = tidemill_eventsourcing::Upcasters::new();
    /// assert_eq!(up.upcast("Any", 1, 1, serde_json::json!(1)).unwrap(), serde_json::json!(1));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the step turning `event_type`'s schema `from` payloads into `from + 1` payloads.
    ///
    /// ```
    /// use serde_json::json;
    /// let up = tidemill_eventsourcing::Upcasters::new().register("Paid", 1, |v| Ok(json!({ "cents": v["amount"] })));
    /// assert_eq!(up.upcast("Paid", 1, 2, json!({ "amount": 5 })).unwrap(), json!({ "cents": 5 }));
    /// ```
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from: u32,
        step: impl Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.steps.insert((event_type.into(), from), Arc::new(step));
        self
    }

    /// Runs the steps from schema `from` to `to` (nothing when they are equal). A missing
    /// step or a schema newer than `to` is an error.
    ///
    /// ```
    /// use serde_json::json;
    /// let up = tidemill_eventsourcing::Upcasters::new();
    /// assert!(up.upcast("Paid", 2, 1, json!({})).is_err()); // newer than the reader
    /// ```
    pub fn upcast(
        &self,
        event_type: &str,
        from: u32,
        to: u32,
        mut value: Value,
    ) -> Result<Value, BoxError> {
        if from > to {
            return Err(format!("schema v{from} is newer than this reader's v{to}").into());
        }
        for v in from..to {
            let step = self
                .steps
                .get(&(event_type.to_owned(), v))
                .ok_or_else(|| format!("no upcaster from v{v} to v{}", v + 1))?;
            value = step(value)?;
        }
        Ok(value)
    }
}
